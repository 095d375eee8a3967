"""A local directory as a file node (the demo, tests, and a mounted share)."""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from connectors.files.base import (
    CHUNK,
    AccessDenied,
    FileInfo,
    FileMissing,
    FileTransport,
    NodeURL,
    TransferError,
    clean_path,
)


def open_local(
    url: NodeURL, *, known_hosts: str | None = None, **tuning: int | str
) -> LocalTransport:
    """A local node: ``file:///srv/exchange/market`` (no host, no options)."""
    return LocalTransport(url.node, Path(url.base))


class LocalTransport(FileTransport):
    """Files under ``base`` on this machine; rename is ``os.replace`` (atomic)."""

    def __init__(self, node: str, base: str | Path):
        super().__init__(node)
        self.base = Path(base)

    def _abs(self, path: str) -> Path:
        rel = clean_path(path)
        return self.base / rel if rel else self.base

    def _error(self, exc: OSError, path: str) -> Exception:
        where = f"node {self.node!r} path {clean_path(path) or '.'!r}"
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return AccessDenied(f"{where}: permission denied")
        if exc.errno == errno.ENOENT:
            return FileMissing(f"{where}: no such file or directory")
        return TransferError(f"{where}: {exc.strerror or exc}")

    def stat(self, path: str) -> FileInfo | None:
        try:
            st = self._abs(path).stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._error(exc, path) from None
        return (
            FileInfo(clean_path(path), st.st_size, st.st_mtime)
            if os.path.isfile(self._abs(path))
            else None
        )

    def list_dir(self, path: str) -> Iterator[tuple[FileInfo, bool]]:
        rel = clean_path(path)
        try:
            entries = list(os.scandir(self._abs(rel)))
        except OSError as exc:
            raise self._error(exc, path) from None
        for e in entries:
            st = e.stat()
            child = f"{rel}/{e.name}" if rel else e.name
            yield FileInfo(child, st.st_size, st.st_mtime), e.is_dir()

    def open_read(self, path: str, offset: int = 0) -> BinaryIO:
        try:
            fh = open(self._abs(path), "rb")  # noqa: SIM115  # the caller closes it
        except OSError as exc:
            raise self._error(exc, path) from None
        fh.seek(offset)
        return fh

    def open_write(self, path: str, offset: int = 0) -> BinaryIO:
        target = self._abs(path)
        try:
            if offset:
                fh = open(target, "r+b")  # noqa: SIM115
                fh.truncate(offset)
                fh.seek(offset)
                return fh
            return open(target, "wb")  # noqa: SIM115
        except OSError as exc:
            raise self._error(exc, path) from None

    def rename(self, src: str, dst: str) -> None:
        try:
            os.replace(self._abs(src), self._abs(dst))
        except OSError as exc:
            raise self._error(exc, dst) from None

    def remove(self, path: str) -> None:
        try:
            self._abs(path).unlink(missing_ok=True)
        except OSError as exc:
            raise self._error(exc, path) from None

    def makedirs(self, path: str) -> None:
        try:
            self._abs(path).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._error(exc, path) from None

    def sha256(self, path: str) -> str | None:
        # Local files hash where they lie: no transfer to re-read through.
        h = hashlib.sha256()
        with self.open_read(path) as fh:
            while chunk := fh.read(CHUNK):
                h.update(chunk)
        return h.hexdigest()

    def close(self) -> None:
        pass
