"""A real SFTP server on loopback, in this process (paramiko's server side), with faults.

    with SFTPTestServer(tmp_path / "root") as srv:
        srv.write_known_hosts(tmp_path / "known_hosts")
        url = srv.url("out")               # sftp://exchange:secret@127.0.0.1:PORT/out?known_hosts=

Faults a test can arm (each fires once unless said otherwise):

* ``drop_after(op, nbytes)``: close the whole SSH connection once ``nbytes`` have been read
  (``op="read"``) or written (``op="write"``) in one file.
* ``deny(prefix)``: writes, renames, removals and mkdir under ``prefix`` (root-relative) get
  SFTP permission denied (tests run as root, so file modes cannot do that).
* ``grow_on_read(path, data)``: the first read of ``path`` appends ``data`` to it, like a
  provider still writing the file.

Counters: ``bytes_read``, ``bytes_written`` (totals over every connection).
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import Any

import paramiko
from paramiko import SFTPAttributes, SFTPHandle, SFTPServer, SFTPServerInterface
from paramiko.sftp import SFTP_FAILURE, SFTP_NO_SUCH_FILE, SFTP_OK, SFTP_PERMISSION_DENIED


class _Auth(paramiko.ServerInterface):
    def __init__(self, srv: SFTPTestServer):
        self.srv = srv
        self.transport: paramiko.Transport | None = None

    def check_auth_password(self, username: str, password: str) -> int:
        ok = username == self.srv.user and password == self.srv.password
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        ok = username == self.srv.user and key in self.srv.authorized_keys
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def get_allowed_auths(self, username: str) -> str:
        return "password,publickey"

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED


class _Handle(SFTPHandle):
    def __init__(self, fs: _FS, path: str, fd: int, flags: int):
        super().__init__(flags)
        self.fs, self.path, self.fd = fs, path, fd
        self.read_bytes = self.written_bytes = 0

    def read(self, offset: int, length: int) -> bytes | int:
        srv = self.fs.srv
        data = os.pread(self.fd, length, offset)
        self.read_bytes += len(data)
        with srv.lock:
            srv.bytes_read += len(data)
            grow = srv._grow.pop(self.path, None)
            drop = srv._drop.get("read")
            fire = drop is not None and self.read_bytes >= drop
            if fire:
                del srv._drop["read"]
        if grow is not None:
            with open(srv.root / self.path, "ab") as fh:
                fh.write(grow)
        if fire:
            self.fs.conn.close()
            return SFTP_FAILURE
        return data

    def write(self, offset: int, data: bytes) -> int:
        srv = self.fs.srv
        os.pwrite(self.fd, data, offset)
        self.written_bytes += len(data)
        with srv.lock:
            srv.bytes_written += len(data)
            drop = srv._drop.get("write")
            fire = drop is not None and self.written_bytes >= drop
            if fire:
                del srv._drop["write"]
        if fire:
            self.fs.conn.close()
            return SFTP_FAILURE
        return SFTP_OK

    def stat(self) -> SFTPAttributes:
        return SFTPAttributes.from_stat(os.fstat(self.fd))

    def chattr(self, attr: SFTPAttributes) -> int:
        if attr.st_size is not None:
            os.ftruncate(self.fd, attr.st_size)
        return SFTP_OK

    def close(self) -> None:
        os.close(self.fd)


class _FS(SFTPServerInterface):
    def __init__(self, server: _Auth, *args: Any, srv: SFTPTestServer, **kwargs: Any):
        super().__init__(server, *args, **kwargs)
        self.srv = srv
        assert server.transport is not None
        self.conn = server.transport

    def _rel(self, path: str) -> str:
        return os.path.normpath("/" + path).lstrip("/")

    def _real(self, path: str) -> Path:
        return self.srv.root / self._rel(path)

    def _denied(self, path: str) -> bool:
        rel = self._rel(path)
        return any(rel == p or rel.startswith(p + "/") for p in self.srv._denied)

    def list_folder(self, path: str) -> list[SFTPAttributes] | int:
        real = self._real(path)
        if not real.is_dir():
            return SFTP_NO_SUCH_FILE
        out = []
        for name in os.listdir(real):
            attr = SFTPAttributes.from_stat(os.stat(real / name))
            attr.filename = name
            out.append(attr)
        return out

    def stat(self, path: str) -> SFTPAttributes | int:
        try:
            return SFTPAttributes.from_stat(os.stat(self._real(path)))
        except OSError as exc:
            return SFTPServer.convert_errno(exc.errno)

    lstat = stat

    def open(self, path: str, flags: int, attr: SFTPAttributes) -> _Handle | int:
        writing = flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND)
        if writing and self._denied(path):
            return SFTP_PERMISSION_DENIED
        try:
            fd = os.open(self._real(path), flags | getattr(os, "O_BINARY", 0), 0o644)
        except OSError as exc:
            return SFTPServer.convert_errno(exc.errno)
        return _Handle(self, self._rel(path), fd, flags)

    def remove(self, path: str) -> int:
        if self._denied(path):
            return SFTP_PERMISSION_DENIED
        try:
            os.remove(self._real(path))
        except OSError as exc:
            return SFTPServer.convert_errno(exc.errno)
        return SFTP_OK

    def rename(self, oldpath: str, newpath: str) -> int:
        if self._real(newpath).exists():
            return SFTP_FAILURE  # plain SFTP rename never replaces a file
        return self.posix_rename(oldpath, newpath)

    def posix_rename(self, oldpath: str, newpath: str) -> int:
        if self._denied(oldpath) or self._denied(newpath):
            return SFTP_PERMISSION_DENIED
        try:
            os.replace(self._real(oldpath), self._real(newpath))
        except OSError as exc:
            return SFTPServer.convert_errno(exc.errno)
        return SFTP_OK

    def mkdir(self, path: str, attr: SFTPAttributes) -> int:
        if self._denied(path):
            return SFTP_PERMISSION_DENIED
        try:
            os.mkdir(self._real(path))
        except OSError as exc:
            return SFTPServer.convert_errno(exc.errno)
        return SFTP_OK

    def chattr(self, path: str, attr: SFTPAttributes) -> int:
        return SFTP_OK


class SFTPTestServer:
    """An SFTP server on 127.0.0.1 (a free port) serving ``root``; start with ``with``."""

    def __init__(self, root: Path, user: str = "exchange", password: str = "s3cret-pw"):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.user, self.password = user, password
        self.host_key = paramiko.ECDSAKey.generate()
        self.authorized_keys: list[paramiko.PKey] = []
        self.lock = threading.Lock()
        self.bytes_read = self.bytes_written = 0
        self._drop: dict[str, int] = {}
        self._denied: list[str] = []
        self._grow: dict[str, bytes] = {}
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._transports: list[paramiko.Transport] = []
        self._stopped = threading.Event()

    # -- faults ------------------------------------------------------------------------
    def drop_after(self, op: str, nbytes: int) -> None:
        with self.lock:
            self._drop[op] = nbytes

    def deny(self, prefix: str) -> None:
        self._denied.append(prefix.strip("/"))

    def grow_on_read(self, path: str, data: bytes) -> None:
        with self.lock:
            self._grow[path.strip("/")] = data

    # -- client side helpers ------------------------------------------------------------
    def known_hosts_line(self) -> str:
        return f"[127.0.0.1]:{self.port} {self.host_key.get_name()} {self.host_key.get_base64()}"

    def write_known_hosts(self, path: Path) -> Path:
        path.write_text(self.known_hosts_line() + "\n", encoding="utf-8")
        return path

    def url(self, base: str = "", known_hosts: Path | None = None) -> str:
        query = f"?known_hosts={known_hosts}" if known_hosts else ""
        return f"sftp://{self.user}:{self.password}@127.0.0.1:{self.port}/{base}{query}"

    # -- serving -------------------------------------------------------------------------
    def _serve_one(self, conn: socket.socket) -> None:
        t = paramiko.Transport(conn)
        with self.lock:
            self._transports.append(t)
        t.add_server_key(self.host_key)
        auth = _Auth(self)
        auth.transport = t
        t.set_subsystem_handler("sftp", SFTPServer, _FS, srv=self)
        try:
            t.start_server(server=auth)
        except (paramiko.SSHException, EOFError, OSError):
            return
        chan = t.accept(10)  # keep a reference: a collected Channel closes itself
        while t.is_active() and not self._stopped.is_set():
            self._stopped.wait(0.05)
        del chan
        t.close()

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve_one, args=(conn,), daemon=True).start()

    def __enter__(self) -> SFTPTestServer:
        self._sock.listen(16)
        threading.Thread(target=self._accept_loop, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        self._sock.close()
        with self.lock:
            for t in self._transports:
                t.close()
