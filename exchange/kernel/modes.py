"""Private files and directories: what the engine writes in a run directory holds cleartext,
so it is created readable by the engine's user alone (directories 0700, files 0600) whatever
the umask. Here, in the kernel, because the connectors (downloads) create such files too."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from exchange.kernel.errors import BadInput

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dirs(path: Path) -> None:
    """``mkdir -p path``: each directory it creates is 0700 (chmod: the umask narrows ``mkdir``
    modes, and a permissive one would leave them readable)."""
    missing: list[Path] = []
    at = path
    while not at.exists():
        missing.append(at)
        at = at.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue  # made at the same moment by another process: its modes are its own
        os.chmod(d, DIR_MODE)


def private_file(path: Path, flags: int = os.O_WRONLY | os.O_CREAT | os.O_TRUNC) -> int:
    """Open ``path`` (by default for writing, created or truncated), 0600 whatever the umask;
    the file descriptor. An existing file is made 0600 too."""
    fd = os.open(path, flags, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    return fd


def private_copy(source: Path, target: Path) -> None:
    """Copy ``source``'s bytes to ``target``, which is 0600 from its creation."""
    with open(source, "rb") as src, os.fdopen(private_file(target), "wb") as dst:
        shutil.copyfileobj(src, dst)


def write_new(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    """Create ``path`` (refused if it exists: ``FileExistsError``) with ``mode`` whatever the
    umask, holding ``data``, on disk before it returns."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    os.fchmod(fd, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())  # never a linked name over bytes not yet on disk


def publish_once(path: Path, data: bytes, mode: int = FILE_MODE) -> bool:
    """Make ``path`` hold ``data`` unless another process made it first: written whole and
    durably under a temporary name, then linked into place (a file system without hard links:
    the name created exclusively). Whether this call's bytes won; the first one made wins and
    every process then reads it (a key made at once by two processes on first use)."""
    private_dirs(path.parent)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{os.urandom(4).hex()}")
    write_new(tmp, data, mode)
    try:
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:
            try:
                write_new(path, data, mode)
            except FileExistsError:
                return False
        return True
    finally:
        tmp.unlink()


def read_private(path: Path, what: str, owner: str) -> bytes:
    """``path``'s bytes, refused (``BadInput``) when group or others may read or change it:
    ``what`` names it in the message ("the gateway key"), ``owner`` whose alone it must be."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise BadInput(
            f"{what} {path} has mode {mode:04o}: group or others may read or change it; make "
            f"it the {owner}'s alone (chmod 600 {path})"
        )
    return path.read_bytes()
