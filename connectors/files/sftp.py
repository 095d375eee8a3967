"""SFTP: paramiko's SFTP client, carried by OpenSSH's ``ssh`` or by paramiko's own SSH layer.

The server's host key is checked against the platform's known_hosts: a key that is not there
(or differs) is refused before any credential is sent; keys are never added automatically.
The account authenticates with a key file (by path: the path is not a secret) or a password;
either comes from the node's connection reference, never from the catalog.

Which SSH layer (``?client=`` in the node's URL, default ``auto``): ``openssh`` runs OpenSSH's
``ssh -s … sftp`` and speaks SFTP over its pipes (C does the ciphers and packets in its own
process: about twice as fast, see connectors/files/openssh.py); ``paramiko`` does it all in
this process. ``auto`` takes OpenSSH's client where one is installed.

Downloads keep two windows of reads in flight on two handles of the file (one is read while
the other fills), so memory stays bounded whatever the file size; uploads pipeline writes.
"""

from __future__ import annotations

import errno
import os
import socket
import stat as stat_mode
from collections.abc import Callable, Iterator
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
    NodeURL,
    TransferError,
    clean_path,
)
from connectors.files.openssh import SSHProcess, classify, ssh_binary, ssh_command
from exchange.kernel.errors import BadInput

CLIENTS = ("auto", "openssh", "paramiko")
#: Which SSH layer carries SFTP where a node's URL has no ``?client=``: auto|openssh|paramiko.
SFTP_CLIENT_ENV = "EXCHANGE_SFTP_CLIENT"


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
    client: str = "auto"  # auto | openssh | paramiko: which SSH layer carries SFTP
    cipher: str | None = "aes128-gcm@openssh.com"  # put first; fastest here (bench --knobs)
    request_size: int = 252 * 1024  # OpenSSH's sftp-server caps a read at 256 KiB - 1 KiB
    read_window: int = 8 << 20  # bytes requested ahead per window; two windows in flight
    max_requests: int = 32  # reads in flight per window
    window_size: int = 4 << 20  # paramiko's SSH layer only
    max_packet_size: int = 32 << 10  # paramiko's SSH layer only


def open_sftp(
    url: NodeURL, *, known_hosts: str | None = None, **tuning: int | str
) -> SFTPTransport:
    """An SFTP node: ``sftp://user[:pw]@host[:22]/base?known_hosts=&key_file=&client=``.

    ``known_hosts`` is the platform's default file (the URL's ``?known_hosts=`` wins);
    ``tuning`` overrides ``SFTPOptions``' figures (``read_window=``, ``request_size=``, ...).
    """
    host = url.host
    query = url.query
    opts = SFTPOptions(
        host=host,
        port=url.port or 22,
        username=url.username or "",
        password=url.password,
        base=url.base,
        known_hosts=query.get("known_hosts") or known_hosts or "~/.ssh/known_hosts",
        key_file=query.get("key_file"),
        client=query.get("client") or os.environ.get(SFTP_CLIENT_ENV) or "auto",
        **tuning,  # type: ignore[arg-type]
    )
    return SFTPTransport(url.node, opts)


def _host_entry(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


class SFTPTransport(FileTransport):
    """One SFTP session to a node, over ``ssh`` or paramiko's SSH (see the module docstring)."""

    def __init__(self, node: str, opts: SFTPOptions):
        super().__init__(node)
        if opts.client not in CLIENTS:
            raise BadInput(
                f"node {node!r}: client {opts.client!r} is not one of {', '.join(CLIENTS)}"
            )
        self.opts = opts
        self.base = "/" + clean_path(opts.base) if clean_path(opts.base) else "/"
        self.where = f"node {node!r} ({_host_entry(opts.host, opts.port)})"
        self._transport: paramiko.Transport | None = None
        self._ssh: SSHProcess | None = None
        ssh = ssh_binary() if opts.client != "paramiko" else None
        if opts.client == "openssh" and ssh is None:
            raise BadInput(f"{self.where}: client=openssh but no ssh client is installed")
        try:
            known = self._known_keys()
            if ssh is not None:
                self._connect_openssh(ssh)
            else:
                self._connect_paramiko(known)
        except BaseException:
            self.close()
            raise

    @property
    def client(self) -> str:
        """The SSH layer in use: openssh or paramiko."""
        return "openssh" if self._ssh is not None else "paramiko"

    # -- connection -----------------------------------------------------------------
    def _known_keys(self) -> dict[str, paramiko.PKey]:
        """The node's keys in known_hosts; none there is refused before connecting."""
        o = self.opts
        path = Path(o.known_hosts).expanduser()
        keys = paramiko.HostKeys()
        try:
            keys.load(str(path))
        except FileNotFoundError:
            raise HostKeyRejected(
                f"node {self.node!r}: known_hosts file {str(path)!r} does not exist; the "
                "platform must provide the server's host key there (it is never added "
                "automatically)"
            ) from None
        found = keys.lookup(_host_entry(o.host, o.port))
        if not found:
            raise HostKeyRejected(
                f"{self.where}: host key is unknown: no entry for {_host_entry(o.host, o.port)} "
                f"in known_hosts {o.known_hosts!r}; refusing to connect (keys are never added "
                "automatically: check the fingerprint with the server's administrator, then "
                "add it with ssh-keyscan)"
            )
        return dict(found)

    def _ciphers(self, available: tuple[str, ...]) -> tuple[str, ...]:
        """paramiko's ciphers with the preferred one first."""
        c = self.opts.cipher
        rest = tuple(x for x in available if x != c)
        return (c, *rest) if c and c in available else rest

    def _connect_openssh(self, ssh: str) -> None:
        o = self.opts
        # A key without a passphrase needs no secret; otherwise the password (or the key's
        # passphrase) goes to ssh by SSH_ASKPASS, an empty one if none was given.
        secret = None if o.key_file and not o.password else (o.password or "")
        argv = ssh_command(
            ssh,
            host=o.host,
            port=o.port,
            username=o.username,
            known_hosts=str(Path(o.known_hosts).expanduser()),
            key_file=str(Path(o.key_file).expanduser()) if o.key_file else None,
            askpass=secret is not None,
            cipher=o.cipher,
            timeout=o.timeout,
        )
        self._ssh = SSHProcess(argv, secret)
        self._ssh.settimeout(o.timeout)
        try:
            self.sftp = paramiko.SFTPClient(self._ssh)
        except (paramiko.SSHException, EOFError, OSError):
            raise self._ssh_failed() from None

    def _ssh_failed(self) -> Exception:
        """The error for an ssh that stopped before SFTP started, from what it printed."""
        assert self._ssh is not None
        self._ssh.close()
        text = self._ssh.errors
        kind, detail = classify(text)
        o = self.opts
        if kind == "hostkey":
            shown = f" {detail}" if detail else ""
            return HostKeyRejected(
                f"{self.where}: host key{shown} does not match known_hosts {o.known_hosts!r}; "
                "refusing to connect"
            )
        if kind == "auth":
            return AccessDenied(f"{self.where}: authentication failed for user {o.username!r}")
        last = [ln.strip() for ln in text.splitlines() if ln.strip()]
        reason = last[-1] if last else f"ssh exited with status {self._ssh.proc.returncode}"
        return ConnectionLost(f"{self.where}: cannot connect: {reason}")

    def _connect_paramiko(self, known: dict[str, paramiko.PKey]) -> None:
        o = self.opts
        where = self.where
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
        sec.ciphers = self._ciphers(tuple(sec.ciphers))
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
                t.auth_publickey(o.username, self._private_key())
            else:
                t.auth_password(o.username, o.password or "")
        except paramiko.AuthenticationException:
            raise AccessDenied(f"{where}: authentication failed for user {o.username!r}") from None
        except (paramiko.SSHException, OSError) as exc:
            raise ConnectionLost(f"{where}: authentication did not complete: {exc}") from None
        sftp = paramiko.SFTPClient.from_transport(
            t, window_size=o.window_size, max_packet_size=o.max_packet_size
        )
        assert sftp is not None
        self.sftp = sftp
        self.sftp.get_channel().settimeout(o.timeout)

    def _private_key(self) -> paramiko.PKey:
        """The node's key file, opened with the URL's password as its passphrase if any."""
        o = self.opts
        secret = o.password.encode() if o.password else None
        try:
            return paramiko.PKey.from_path(Path(o.key_file or "").expanduser(), secret)
        except (paramiko.SSHException, ValueError, TypeError, OSError) as exc:
            # paramiko's messages name the problem (wrong passphrase, unknown format), never
            # the passphrase itself.
            raise AccessDenied(f"{self.where}: cannot use key file {o.key_file!r}: {exc}") from None

    def _alive(self) -> bool:
        if self._ssh is not None:
            return self._ssh.proc.poll() is None
        return self._transport is not None and self._transport.is_active()

    def _abs(self, path: str) -> str:
        rel = clean_path(path)
        return (self.base.rstrip("/") + "/" + rel) if rel else self.base

    def _error(self, exc: BaseException, path: str) -> Exception:
        where = f"node {self.node!r} path {clean_path(path) or '.'!r}"
        if isinstance(exc, PermissionError) or getattr(exc, "errno", None) == errno.EACCES:
            return AccessDenied(f"{where}: permission denied")
        if isinstance(exc, FileNotFoundError) or getattr(exc, "errno", None) == errno.ENOENT:
            return FileMissing(f"{where}: no such file or directory")
        if isinstance(exc, paramiko.SSHException | EOFError | socket.timeout | ConnectionError):
            return ConnectionLost(f"{where}: connection lost: {exc or type(exc).__name__}")
        if isinstance(exc, OSError) and "closed" in str(exc).lower():
            return ConnectionLost(f"{where}: connection lost: {exc}")
        if not self._alive():
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
        def handle() -> paramiko.SFTPFile:
            return self.sftp.open(self._abs(path), "rb")

        try:
            first = handle()
            size = first.stat().st_size or 0
            reader = _Reader(first, handle, offset, size, self.opts)
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise self._error(exc, path) from None
        return cast(BinaryIO, _Guard(reader, self, path))

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
        if self._ssh is not None:
            self._ssh.close()
            self._ssh = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None


class _Reader:
    """The file in order while the next window is already on its way.

    Two handles take turns: while one window of ``read_window`` bytes is read from one, the
    next window is prefetched on the other (paramiko's prefetch keeps ``max_requests`` reads
    in flight). At most two windows are ever requested ahead, whatever the file size; the
    second handle is opened only for a file longer than one window.
    """

    def __init__(
        self, first: paramiko.SFTPFile, open_handle: Callable[[], paramiko.SFTPFile],
        offset: int, size: int, opts: SFTPOptions,
    ):  # fmt: skip
        self.handles: list[paramiko.SFTPFile | None] = [first, None]
        self.open_handle, self.size, self.opts = open_handle, size, opts
        self.pos = offset
        self.turn = 0
        self.ends = [self._request(0, offset), 0]
        self.ends[1] = self._request(1, self.ends[0])

    def _request(self, which: int, start: int) -> int:
        """Prefetch ``[start, start + read_window)`` on handle ``which``; return its end."""
        end = min(self.size, start + self.opts.read_window)
        if end > start:
            fh = self.handles[which]
            if fh is None:
                fh = self.handles[which] = self.open_handle()
            fh.MAX_REQUEST_SIZE = self.opts.request_size
            fh.seek(start)
            fh.prefetch(end, self.opts.max_requests)
        return end

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes, at most one request's worth (no joining of pieces here)."""
        if self.pos >= self.size or n == 0:
            return b""
        end = self.ends[self.turn]
        if self.pos >= end:  # this window is read: the other is in flight, refill this one
            self.ends[self.turn] = self._request(self.turn, max(self.ends))
            self.turn ^= 1
            end = self.ends[self.turn]
        fh = self.handles[self.turn]
        assert fh is not None
        want = self.opts.request_size if n < 0 else min(n, self.opts.request_size)
        data = cast(bytes, fh.read(min(want, end - self.pos)))
        if not data:
            raise EOFError(f"the file ended at {self.pos} of {self.size} bytes")
        self.pos += len(data)
        return data

    def close(self) -> None:
        for fh in self.handles:
            if fh is not None:
                fh.close()


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
