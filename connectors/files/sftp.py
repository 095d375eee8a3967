"""SFTP through asyncssh, with the server's host key checked against the platform's known_hosts.

A host key that is not in the known_hosts file (or differs from it) is refused before any
credential is sent; keys are never added automatically. The account authenticates with a key
file (by path: the path is not a secret) or a password; either comes from the node's
connection reference, never from the catalog. Nothing of the user's own SSH set-up (agent,
~/.ssh/config, default keys) is used: a node's URL says everything.

Why asyncssh and not paramiko (the stack's first choice): on the benchmark
(``bench/sftp_fanout.py``) paramiko's download reached 0.34-0.55x OpenSSH's ``sftp`` and
asyncssh's 0.8-1.0x, with the same cipher and the same request sizes; uploads were alike.

The connection lives on an event loop in a thread of its own; the transport's methods are
ordinary blocking calls. Downloads keep up to ``max_requests`` reads in flight and hand the
bytes over in file order through a bounded buffer; uploads keep a bounded number of write
requests in flight. Memory stays bounded whatever the file size.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import queue
import stat as stat_mode
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, cast

import asyncssh

from connectors.files.base import (
    CHUNK,
    AccessDenied,
    ConnectionLost,
    FileInfo,
    FileMissing,
    FileTransport,
    HostKeyRejected,
    TransferError,
    clean_path,
)

T = TypeVar("T")
PREFERRED_CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
)
#: What SFTP servers must accept (draft-ietf-secsh-filexfer: 32768 bytes of data), used
#: when a server does not announce its limits (OpenSSH announces 255 KiB).
SAFE_REQUEST = 32 << 10

_LOST = (
    asyncssh.sftp.SFTPConnectionLost,
    asyncssh.ConnectionLost,
    asyncssh.DisconnectError,
    ConnectionError,
    EOFError,
    TimeoutError,
)


@dataclass(frozen=True)
class SFTPOptions:
    """How to reach and tune one SFTP node (defaults are the benchmark's best figures)."""

    host: str
    port: int = 22
    username: str = ""
    password: str | None = None
    base: str = "/"
    known_hosts: str = "~/.ssh/known_hosts"
    key_file: str | None = None
    timeout: float = 30.0
    cipher: str | None = PREFERRED_CIPHERS[0]
    request_size: int = 255 * 1024  # OpenSSH's sftp-server caps a read or write at 255 KiB
    max_requests: int = 16  # requests in flight per transfer (x request_size of memory)
    window_size: int = 8 << 20  # SSH channel window we grant the server (downloads)
    max_packet_size: int = 256 << 10  # largest SSH packet we accept (fewer, larger packets)
    keepalive: float = 15.0  # seconds between keep-alives; 4 unanswered = connection lost


def _host_entry(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


class SFTPTransport(FileTransport):
    """One SSH connection with one SFTP session to a node, on its own event-loop thread."""

    def __init__(self, node: str, opts: SFTPOptions):
        super().__init__(node)
        self.opts = opts
        self.base = "/" + clean_path(opts.base) if clean_path(opts.base) else "/"
        self.where = f"node {node!r} ({_host_entry(opts.host, opts.port)})"
        self._conn: asyncssh.SSHClientConnection | None = None
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name=f"sftp-{node}", daemon=True
        )
        self._thread.start()
        try:
            self.sftp: asyncssh.SFTPClient = self.run(self._connect(), where=".")
        except BaseException:
            self.close()
            raise
        limits = self.sftp.limits
        self.read_len = min(opts.request_size, limits.max_read_len or SAFE_REQUEST)
        self.write_len = min(opts.request_size, limits.max_write_len or SAFE_REQUEST)
        if not limits.max_read_len or limits.max_read_len <= 16 << 10:  # no limits@openssh.com
            self.read_len = self.write_len = min(opts.request_size, SAFE_REQUEST)

    # -- the loop ------------------------------------------------------------------------
    def run(self, coro: Coroutine[Any, Any, T], where: str, timeout: float = -1.0) -> T:
        """Run ``coro`` on the connection's loop and wait for it; errors become ours.

        ``timeout``: seconds to wait (default: the node's timeout; ``math.inf``: as long as
        the coroutine runs, for transfers that enforce their own per-request timeout).
        """
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        wait = self.opts.timeout if timeout < 0 else None if math.isinf(timeout) else timeout
        try:
            return fut.result(wait)
        except TimeoutError:
            fut.cancel()
            raise ConnectionLost(
                f"{self.where} path {where!r}: no answer in {self.opts.timeout:g} s"
            ) from None
        except (asyncssh.Error, OSError, EOFError) as exc:
            raise self._error(exc, where) from None

    # -- connection -----------------------------------------------------------------------
    def _known_hosts(self) -> asyncssh.SSHKnownHosts:
        o = self.opts
        path = Path(o.known_hosts).expanduser()
        try:
            known = asyncssh.read_known_hosts(str(path))
        except FileNotFoundError:
            raise HostKeyRejected(
                f"node {self.node!r}: known_hosts file {str(path)!r} does not exist; the "
                "platform must provide the server's host key there (it is never added "
                "automatically)"
            ) from None
        except (OSError, ValueError, asyncssh.KeyImportError) as exc:
            raise HostKeyRejected(
                f"{self.where}: cannot read known_hosts {o.known_hosts!r}: {exc}"
            ) from None
        trusted = known.match(o.host, "", o.port)[0]
        if not trusted:
            raise HostKeyRejected(
                f"{self.where}: host key is unknown: no entry for {_host_entry(o.host, o.port)} "
                f"in known_hosts {o.known_hosts!r}; refusing to connect (keys are never added "
                "automatically: check the fingerprint with the server's administrator, then "
                "add it with ssh-keyscan)"
            )
        return known

    async def _connect(self) -> asyncssh.SFTPClient:
        o = self.opts
        known = self._known_hosts()
        ciphers = [c for c in PREFERRED_CIPHERS if c != o.cipher]
        auth: dict[str, Any] = {"client_keys": None, "password": None}
        if o.key_file:
            try:
                key = asyncssh.read_private_key(Path(o.key_file).expanduser(), o.password)
            except (OSError, ValueError, asyncssh.KeyImportError) as exc:
                raise AccessDenied(
                    f"{self.where}: cannot read key file {o.key_file!r}: {exc}"
                ) from None
            auth = {"client_keys": [key], "password": None}
        else:
            auth = {"client_keys": None, "password": o.password or ""}
        try:
            self._conn = await asyncssh.connect(
                o.host,
                o.port,
                username=o.username,
                known_hosts=known,
                config=None,
                agent_path=None,
                x509_trusted_certs=None,
                gss_host=None,
                kbdint_auth=False,
                host_based_auth=False,
                encryption_algs=[o.cipher, *ciphers] if o.cipher else ciphers,
                window=o.window_size,
                max_pktsize=o.max_packet_size,
                connect_timeout=o.timeout,
                login_timeout=o.timeout,
                keepalive_interval=o.keepalive,
                keepalive_count_max=4,
                **auth,
            )
        except asyncssh.HostKeyNotVerifiable:
            raise HostKeyRejected(
                f"{self.where}: host key {await self._fingerprint()} does not match known_hosts "
                f"{o.known_hosts!r}; refusing to connect"
            ) from None
        except asyncssh.PermissionDenied:
            raise AccessDenied(
                f"{self.where}: authentication failed for user {o.username!r}"
            ) from None
        except (TimeoutError, OSError, asyncssh.Error) as exc:
            reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
            raise ConnectionLost(f"{self.where}: cannot connect: {reason}") from None
        return await self._conn.start_sftp_client()

    async def _fingerprint(self) -> str:
        """The key the server shows (a second handshake, sends no credential), for the message."""
        try:
            key = await asyncio.wait_for(
                asyncssh.get_server_host_key(self.opts.host, self.opts.port, config=None),
                self.opts.timeout,
            )
        except (TimeoutError, OSError, asyncssh.Error):
            return "(unreadable)"
        if key is None:
            return "(none)"
        return f"{key.get_algorithm()} {key.get_fingerprint('sha256')}"

    def _abs(self, path: str) -> str:
        rel = clean_path(path)
        return (self.base.rstrip("/") + "/" + rel) if rel else self.base

    def _error(self, exc: BaseException, path: str) -> Exception:
        if isinstance(exc, TransferError | ConnectionLost):
            return exc
        where = f"node {self.node!r} path {clean_path(path) or '.'!r}"
        if isinstance(exc, asyncssh.SFTPPermissionDenied | PermissionError):
            return AccessDenied(f"{where}: permission denied")
        if isinstance(exc, asyncssh.SFTPNoSuchFile | FileNotFoundError):
            return FileMissing(f"{where}: no such file or directory")
        if isinstance(exc, _LOST) or self._conn is None or self._conn.is_closed():
            reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
            return ConnectionLost(f"{where}: connection lost: {reason}")
        return TransferError(f"{where}: {getattr(exc, 'reason', None) or exc}")

    # -- operations ------------------------------------------------------------------------
    def stat(self, path: str) -> FileInfo | None:
        try:
            st = self.run(self.sftp.stat(self._abs(path)), path)
        except FileMissing:
            return None
        if not stat_mode.S_ISREG(st.permissions or 0):
            return None
        return FileInfo(clean_path(path), st.size or 0, float(st.mtime or 0))

    def list_dir(self, path: str) -> Iterator[tuple[FileInfo, bool]]:
        rel = clean_path(path)
        entries = self.run(self.sftp.readdir(self._abs(rel)), path)
        for e in entries:
            name = cast(str, e.filename)
            if name in (".", ".."):
                continue
            a = e.attrs
            child = f"{rel}/{name}" if rel else name
            info = FileInfo(child, a.size or 0, float(a.mtime or 0))
            if stat_mode.S_ISDIR(a.permissions or 0):
                yield info, True
            elif stat_mode.S_ISREG(a.permissions or 0):
                yield info, False

    def open_read(self, path: str, offset: int = 0) -> BinaryIO:
        async def start() -> tuple[asyncssh.SFTPClientFile, int]:
            fh = await self.sftp.open(
                self._abs(path), "rb", block_size=self.read_len, max_requests=self.opts.max_requests
            )
            try:
                size = (await fh.stat()).size or 0
            except BaseException:
                await fh.close()
                raise
            return fh, size

        fh, size = self.run(start(), path)
        return cast(BinaryIO, _Reader(self, fh, path, offset, size))

    def open_write(self, path: str, offset: int = 0) -> BinaryIO:
        async def start() -> asyncssh.SFTPClientFile:
            fh = await self.sftp.open(self._abs(path), "r+b" if offset else "wb")
            if offset:
                try:
                    await fh.truncate(offset)
                except BaseException:
                    await fh.close()
                    raise
            return fh

        return cast(BinaryIO, _Writer(self, self.run(start(), path), path, offset))

    def upload_file(
        self, src: Path, path: str, offset: int = 0, progress: Callable[[int], None] | None = None
    ) -> None:
        self.run(self._upload(src, path, offset, progress), path, timeout=math.inf)

    async def _upload(
        self, src: Path, path: str, offset: int, progress: Callable[[int], None] | None
    ) -> None:
        """Up to ``max_requests`` writes in flight, sent in file order from the loop itself.

        The server applies requests in the order they arrive, so after a dropped connection
        the remote file holds a prefix of what was sent and the upload goes on from its size.
        Reading the local file here (not in the caller's thread) keeps each block from being
        handed between threads.
        """
        fh = await self.sftp.open(self._abs(path), "r+b" if offset else "wb")
        slots = asyncio.Semaphore(self.opts.max_requests)
        sent: set[asyncio.Task[int]] = set()
        failed: list[BaseException] = []

        def done(task: asyncio.Task[int]) -> None:
            sent.discard(task)
            slots.release()
            if not task.cancelled() and task.exception() is not None:
                failed.append(cast(BaseException, task.exception()))

        try:
            if offset:
                await fh.truncate(offset)
            with open(src, "rb") as local:
                local.seek(offset)
                pos = offset
                while not failed and (block := local.read(self.write_len)):
                    await asyncio.wait_for(slots.acquire(), self.opts.timeout)
                    task = asyncio.ensure_future(fh.write(block, pos))
                    sent.add(task)
                    task.add_done_callback(done)
                    pos += len(block)
                    if progress:
                        progress(len(block))
            if sent:
                await asyncio.wait(set(sent))
            if failed:
                raise failed[0]
        except BaseException:
            for task in sent:
                task.cancel()
            with contextlib.suppress(asyncssh.Error, OSError):
                await fh.close()
            raise
        await fh.close()

    def rename(self, src: str, dst: str) -> None:
        # posix-rename@openssh.com replaces the target atomically; plain SFTP (v3) rename
        # refuses an existing target, so without the extension the old file goes first
        # (readers may miss the file for a moment, but never see half of one).
        if self.atomic_replace:
            try:
                self.run(self.sftp.posix_rename(self._abs(src), self._abs(dst)), dst)
                return
            except TransferError as exc:
                if "not supported" not in str(exc):
                    raise
                self.atomic_replace = False
        self.remove(dst)
        self.run(self.sftp.rename(self._abs(src), self._abs(dst)), dst)

    def remove(self, path: str) -> None:
        try:
            self.run(self.sftp.remove(self._abs(path)), path)
        except FileMissing:
            pass

    def makedirs(self, path: str) -> None:
        done = ""
        for part in clean_path(path).split("/"):
            if not part:
                continue
            done = f"{done}/{part}" if done else part
            try:
                attrs = self.run(self.sftp.stat(self._abs(done)), done)
                if stat_mode.S_ISDIR(attrs.permissions or 0):
                    continue
            except FileMissing:
                pass
            self.run(self.sftp.mkdir(self._abs(done)), done)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if self.loop.is_closed():
            return
        if conn is not None and self._thread.is_alive():

            async def shut() -> None:
                conn.close()
                await conn.wait_closed()

            try:
                asyncio.run_coroutine_threadsafe(shut(), self.loop).result(5)
            except Exception:  # noqa: S110  # the connection is gone either way
                pass
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
        if not self._thread.is_alive():
            self.loop.close()


class _Reader:
    """The bytes of a remote file in order, while up to ``max_requests`` reads are in flight.

    A task on the connection's loop reads blocks in parallel, puts them back in file order
    and hands them to the caller through a queue; a semaphore keeps at most ``max_requests``
    blocks waiting there, so memory is bounded when the caller is slower than the network.
    """

    _EOF = object()

    def __init__(
        self, t: SFTPTransport, fh: asyncssh.SFTPClientFile, path: str, offset: int, size: int
    ):
        self.t, self.fh, self.path = t, fh, path
        self.ready: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.buf = memoryview(b"")
        self.closed = False
        slots = asyncio.Semaphore(t.opts.max_requests)
        self.slots = slots
        self.task = asyncio.run_coroutine_threadsafe(self._fetch(offset, size), t.loop)

    async def _fetch(self, offset: int, size: int) -> None:
        try:
            pending: dict[int, bytes] = {}
            pos = offset
            if size > offset:
                async for at, data in await self.fh.read_parallel(size - offset, offset):
                    pending[at] = data
                    while pos in pending:
                        block = pending.pop(pos)
                        pos += len(block)
                        await self.slots.acquire()
                        self.ready.put(block)
            self.ready.put(self._EOF)
        except BaseException as exc:  # handed to the reader, raised there
            self.ready.put(exc)
            if not isinstance(exc, Exception):
                raise

    def _next(self) -> bytes | None:
        try:
            item = self.ready.get(timeout=self.t.opts.timeout)
        except queue.Empty:
            raise ConnectionLost(
                f"{self.t.where} path {self.path!r}: no data in {self.t.opts.timeout:g} s"
            ) from None
        if item is self._EOF:
            self.ready.put(item)  # every later read is at the end too
            return None
        if isinstance(item, BaseException):
            self.ready.put(item)
            raise self.t._error(item, self.path)
        self.t.loop.call_soon_threadsafe(self.slots.release)
        return cast(bytes, item)

    def read(self, n: int = -1) -> bytes:
        if not self.buf:
            block = self._next()
            if block is None:
                return b""
            if n < 0 or n >= len(block):
                return block
            self.buf = memoryview(block)
        take = len(self.buf) if n < 0 else min(n, len(self.buf))
        out, self.buf = bytes(self.buf[:take]), self.buf[take:]
        return out

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.task.cancel()
        try:
            self.t.run(self.fh.close(), self.path, timeout=5)
        except (TransferError, ConnectionLost):
            pass  # the read itself succeeded or has already raised

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Writer:
    """A plain write stream (each write waits for the server); bulk uploads use upload_file."""

    def __init__(self, t: SFTPTransport, fh: asyncssh.SFTPClientFile, path: str, offset: int):
        self.t, self.fh, self.path, self.pos = t, fh, path, offset
        self.closed = False

    def write(self, data: bytes) -> int:
        self.t.run(self.fh.write(data, self.pos), self.path)
        self.pos += len(data)
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.t.run(self.fh.close(), self.path)

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # already failing: keep the first error, not the one closing adds
            self.close()
        except (TransferError, ConnectionLost):
            pass


__all__ = ["CHUNK", "SFTPOptions", "SFTPTransport"]
