"""SFTP through paramiko, with the server's host key checked against the platform's known_hosts.

A host key that is not in the known_hosts file (or differs from it) is refused before any
credential is sent; keys are never added automatically. The account authenticates with a key
file (by path: the path is not a secret) or a password; either comes from the node's
connection reference, never from the catalog.

Throughput knobs (measured in ``bench/sftp_fanout.py``): the AES-GCM cipher is preferred,
requests are ``request_size`` bytes, and downloads prefetch a bounded window at a time so that
memory stays bounded whatever the file size.
"""

from __future__ import annotations

import errno
import socket
import stat as stat_mode
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

import paramiko

from connectors.files.base import (
    AccessDenied,
    ConnectionLost,
    FileInfo,
    FileMissing,
    FileTransport,
    HostKeyRejected,
    TransferError,
    clean_path,
)

PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr")


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
    request_size: int = 252 * 1024  # OpenSSH's sftp-server caps a read at 256 KiB - 1 KiB
    window_size: int = 4 << 20
    max_packet_size: int = 32 << 10
    prefetch_window: int = 32 << 20  # download memory bound: bytes requested ahead of the reader
    max_requests: int = 64


def _host_entry(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


class _Reader:
    """A download stream that prefetches one bounded window at a time."""

    def __init__(self, fh: paramiko.SFTPFile, offset: int, size: int, opts: SFTPOptions):
        self.fh, self.pos, self.size, self.opts = fh, offset, size, opts
        self.window_end = offset
        fh.seek(offset)

    def read(self, n: int = -1) -> bytes:
        if self.pos >= self.size:
            return b""
        if self.pos >= self.window_end:
            self.window_end = min(self.size, self.pos + self.opts.prefetch_window)
            self.fh.prefetch(self.window_end, self.opts.max_requests)
        want = self.window_end - self.pos if n < 0 else min(n, self.window_end - self.pos)
        data = cast(bytes, self.fh.read(want))
        self.pos += len(data)
        return data

    def close(self) -> None:
        self.fh.close()


class SFTPTransport(FileTransport):
    """One SSH connection with one SFTP session to a node."""

    def __init__(self, node: str, opts: SFTPOptions):
        super().__init__(node)
        self.opts = opts
        self.base = "/" + clean_path(opts.base) if clean_path(opts.base) else "/"
        self._transport: paramiko.Transport | None = None
        try:
            self._connect()
        except BaseException:
            self.close()
            raise

    # -- connection -----------------------------------------------------------------
    def _known_keys(self) -> dict[str, paramiko.PKey]:
        path = Path(self.opts.known_hosts).expanduser()
        keys = paramiko.HostKeys()
        try:
            keys.load(str(path))
        except FileNotFoundError:
            raise HostKeyRejected(
                f"node {self.node!r}: known_hosts file {str(path)!r} does not exist; the "
                "platform must provide the server's host key there (it is never added "
                "automatically)"
            ) from None
        found = keys.lookup(_host_entry(self.opts.host, self.opts.port))
        return dict(found) if found is not None else {}

    def _connect(self) -> None:
        o = self.opts
        where = f"node {self.node!r} ({_host_entry(o.host, o.port)})"
        known = self._known_keys()
        if not known:
            raise HostKeyRejected(
                f"{where}: host key is unknown: no entry for {_host_entry(o.host, o.port)} in "
                f"known_hosts {o.known_hosts!r}; refusing to connect (keys are never added "
                "automatically: check the fingerprint with the server's administrator, then "
                "add it with ssh-keyscan)"
            )
        try:
            sock = socket.create_connection((o.host, o.port), timeout=o.timeout)
        except OSError as exc:
            raise ConnectionLost(f"{where}: cannot connect: {exc.strerror or exc}") from None
        t = paramiko.Transport(
            sock, default_window_size=o.window_size, default_max_packet_size=o.max_packet_size
        )
        self._transport = t
        sec = t.get_security_options()
        # Only ask for host key types we hold, so the server shows the key we can check.
        sec.key_types = [k for k in sec.key_types if k in known] or list(sec.key_types)
        if o.cipher and o.cipher in sec.ciphers:
            sec.ciphers = (o.cipher, *[c for c in sec.ciphers if c != o.cipher])
        try:
            t.start_client(timeout=o.timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise ConnectionLost(f"{where}: SSH handshake failed: {exc}") from None
        key = t.get_remote_server_key()
        expected = known.get(key.get_name())
        if expected is None or expected != key:
            raise HostKeyRejected(
                f"{where}: host key {key.get_name()} SHA256:{key.fingerprint.split(':', 1)[-1]} "
                f"does not match known_hosts {o.known_hosts!r}; refusing to connect"
            )
        try:
            if o.key_file:
                pkey = paramiko.PKey.from_path(Path(o.key_file).expanduser(), o.password)
                t.auth_publickey(o.username, pkey)
            else:
                t.auth_password(o.username, o.password or "")
        except paramiko.AuthenticationException:
            raise AccessDenied(f"{where}: authentication failed for user {o.username!r}") from None
        except (paramiko.SSHException, OSError) as exc:
            raise ConnectionLost(f"{where}: authentication did not complete: {exc}") from None
        self.sftp = paramiko.SFTPClient.from_transport(
            t, window_size=o.window_size, max_packet_size=o.max_packet_size
        )
        assert self.sftp is not None
        self.sftp.get_channel().settimeout(o.timeout)

    def _abs(self, path: str) -> str:
        rel = clean_path(path)
        return (self.base.rstrip("/") + "/" + rel) if rel else self.base

    def _error(self, exc: BaseException, path: str) -> Exception:
        where = f"node {self.node!r} path {clean_path(path) or '.'!r}"
        if isinstance(exc, PermissionError) or getattr(exc, "errno", None) == errno.EACCES:
            return AccessDenied(f"{where}: permission denied")
        if isinstance(exc, FileNotFoundError) or getattr(exc, "errno", None) == errno.ENOENT:
            return FileMissing(f"{where}: no such file or directory")
        if isinstance(exc, paramiko.SSHException | EOFError | socket.timeout) or (
            isinstance(exc, OSError) and "closed" in str(exc).lower()
        ):
            return ConnectionLost(f"{where}: connection lost: {exc or type(exc).__name__}")
        if self._transport is None or not self._transport.is_active():
            return ConnectionLost(f"{where}: connection lost: {exc or type(exc).__name__}")
        return TransferError(f"{where}: {exc}")

    # -- operations --------------------------------------------------------------------
    def stat(self, path: str) -> FileInfo | None:
        try:
            st = self.sftp.stat(self._abs(path))
        except FileNotFoundError:
            return None
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise self._error(exc, path) from None
        if not stat_mode.S_ISREG(st.st_mode or 0):
            return None
        return FileInfo(clean_path(path), st.st_size or 0, float(st.st_mtime or 0))

    def list_dir(self, path: str) -> Iterator[tuple[FileInfo, bool]]:
        rel = clean_path(path)
        try:
            entries = self.sftp.listdir_attr(self._abs(rel))
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise self._error(exc, path) from None
        for a in entries:
            child = f"{rel}/{a.filename}" if rel else a.filename
            info = FileInfo(child, a.st_size or 0, float(a.st_mtime or 0))
            if stat_mode.S_ISDIR(a.st_mode or 0):
                yield info, True
            elif stat_mode.S_ISREG(a.st_mode or 0):
                yield info, False

    def open_read(self, path: str, offset: int = 0) -> BinaryIO:
        try:
            fh = self.sftp.open(self._abs(path), "rb")
            fh.MAX_REQUEST_SIZE = self.opts.request_size
            size = fh.stat().st_size or 0
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise self._error(exc, path) from None
        return cast(BinaryIO, _Guard(_Reader(fh, offset, size, self.opts), self, path))

    def open_write(self, path: str, offset: int = 0) -> BinaryIO:
        try:
            fh = self.sftp.open(self._abs(path), "r+b" if offset else "wb")
            fh.MAX_REQUEST_SIZE = self.opts.request_size
            fh.set_pipelined(True)
            if offset:
                fh.truncate(offset)
                fh.seek(offset)
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise self._error(exc, path) from None
        return cast(BinaryIO, _Guard(fh, self, path))

    def rename(self, src: str, dst: str) -> None:
        try:
            # posix-rename@openssh.com replaces the target atomically; plain SFTP rename
            # refuses an existing target.
            self.sftp.posix_rename(self._abs(src), self._abs(dst))
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise self._error(exc, dst) from None

    def remove(self, path: str) -> None:
        try:
            self.sftp.remove(self._abs(path))
        except FileNotFoundError:
            pass
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise self._error(exc, path) from None

    def makedirs(self, path: str) -> None:
        done = ""
        for part in clean_path(path).split("/"):
            if not part:
                continue
            done = f"{done}/{part}" if done else part
            try:
                st = self.sftp.stat(self._abs(done))
                if stat_mode.S_ISDIR(st.st_mode or 0):
                    continue
            except FileNotFoundError:
                pass
            except (OSError, paramiko.SSHException, EOFError) as exc:
                raise self._error(exc, done) from None
            try:
                self.sftp.mkdir(self._abs(done))
            except (OSError, paramiko.SSHException, EOFError) as exc:
                raise self._error(exc, done) from None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None


class _Guard:
    """A stream whose errors are the transport's errors (permission, lost connection, ...)."""

    def __init__(self, inner: Any, transport: SFTPTransport, path: str):
        self.inner, self.transport, self.path = inner, transport, path

    def read(self, n: int = -1) -> bytes:
        try:
            return cast(bytes, self.inner.read(n))
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise self.transport._error(exc, self.path) from None

    def write(self, data: bytes) -> int:
        try:
            self.inner.write(data)
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise self.transport._error(exc, self.path) from None
        return len(data)

    def close(self) -> None:
        try:
            self.inner.close()  # a pipelined write reports its errors here
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise self.transport._error(exc, self.path) from None

    def __enter__(self) -> _Guard:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # already failing: keep the first error, not the one closing adds
            self.inner.close()
        except Exception:  # noqa: S110
            pass
