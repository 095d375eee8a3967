"""Streaming copies between a transport and local files: hashed while streaming, resumable.

A ``Session`` holds one transport and reconnects when the connection drops; each copy keeps
its offset, so after a reconnect it goes on from the bytes already there instead of starting
over. Memory is a few ``CHUNK``s whatever the file size.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from connectors.files.base import CHUNK, ConnectionLost, FileMissing, FileTransport, TransferError

T = TypeVar("T")
Progress = Callable[[int], None]


class Session:
    """A transport that is reconnected (a few times, with back-off) after a dropped connection."""

    def __init__(
        self, connect: Callable[[], FileTransport], attempts: int = 4, backoff: float = 0.2
    ):
        self._connect = connect
        self.attempts = attempts
        self.backoff = backoff
        self.reconnects = 0
        self._transport: FileTransport | None = None

    def get(self) -> FileTransport:
        if self._transport is None:
            self._transport = self._connect()
        return self._transport

    def drop(self) -> None:
        if self._transport is not None:
            try:
                self._transport.close()
            except Exception:  # noqa: S110  # the connection is already gone
                pass
            self._transport = None

    def retry(self, step: Callable[[FileTransport], T]) -> T:
        """Run ``step`` on the transport; on a lost connection reconnect and run it again."""
        for attempt in range(self.attempts):
            try:
                return step(self.get())
            except ConnectionLost:
                self.drop()
                if attempt == self.attempts - 1:
                    raise
                self.reconnects += 1
                time.sleep(self.backoff * 2**attempt)
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.drop()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Copied:
    """What a copy moved: final size, sha256 (and md5 when asked), how often it resumed."""

    size: int
    sha256: str
    md5: str | None = None
    resumed_from: tuple[int, ...] = ()


def download(
    session: Session,
    src: str,
    dst: Path,
    *,
    md5: bool = False,
    progress: Progress | None = None,
) -> Copied:
    """Stream ``src`` into the local file ``dst``; a partial ``dst`` is continued, not redone."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    sha = hashlib.sha256()
    m5 = hashlib.md5(usedforsecurity=False) if md5 else None
    offset = 0
    if dst.exists():  # left by a crashed run: hash what is there and go on from its end
        with open(dst, "rb") as fh:
            while chunk := fh.read(CHUNK):
                sha.update(chunk)
                if m5 is not None:
                    m5.update(chunk)
                offset += len(chunk)
    resumed: list[int] = []

    def step(t: FileTransport) -> None:
        nonlocal offset
        if offset:
            resumed.append(offset)
        with t.open_read(src, offset) as fh, open(dst, "r+b" if offset else "wb") as out:
            out.seek(offset)
            out.truncate()
            while chunk := fh.read(CHUNK):
                out.write(chunk)
                sha.update(chunk)
                if m5 is not None:
                    m5.update(chunk)
                offset += len(chunk)
                if progress:
                    progress(len(chunk))

    session.retry(step)
    return Copied(offset, sha.hexdigest(), m5.hexdigest() if m5 else None, tuple(resumed))


def remote_sha256(t: FileTransport, path: str) -> str:
    """The server's own hash where it has one, else the file read back and hashed here."""
    server = t.sha256(path)
    if server is not None:
        return server
    sha = hashlib.sha256()
    with t.open_read(path) as fh:
        while chunk := fh.read(CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


def upload(
    session: Session,
    src: Path,
    tmp: str,
    dst: str,
    *,
    sha256: str,
    verify_hash: bool = True,
    progress: Progress | None = None,
) -> Copied:
    """Upload ``src`` to ``tmp`` (continuing a partial ``tmp``), verify, rename to ``dst``.

    The target never shows a half file: readers see the old ``dst`` or the whole new one.
    """
    size = src.stat().st_size
    resumed: list[int] = []

    def send(t: FileTransport) -> None:
        st = t.stat(tmp)
        offset = st.size if st is not None and 0 < st.size <= size else 0
        if offset:
            resumed.append(offset)
        t.upload_file(src, tmp, offset, progress)

    for attempt in (1, 2):
        session.retry(send)
        st = session.retry(lambda t: t.stat(tmp))
        if st is None or st.size != size:
            got = "nothing" if st is None else f"{st.size} bytes"
            raise TransferError(f"{tmp!r}: uploaded {size} bytes but the server holds {got}")
        if not verify_hash:
            break
        got_hash = session.retry(lambda t: remote_sha256(t, tmp))
        if got_hash == sha256:
            break
        # A resumed upload whose kept prefix was not ours: start over once from byte 0.
        session.retry(lambda t: t.remove(tmp))
        if attempt == 2 or not resumed:
            raise TransferError(
                f"{tmp!r}: sha256 after upload is {got_hash[:12]}…, expected {sha256[:12]}…"
            )

    def rename(t: FileTransport) -> None:
        try:
            t.rename(tmp, dst)
        except FileMissing:
            # The rename happened but its reply was lost with the connection.
            st = t.stat(dst)
            if st is None or st.size != size:
                raise

    session.retry(rename)
    return Copied(size, sha256, None, tuple(resumed))
