"""FTP and FTPS through ftplib: passive mode; FTPS protects control and data with TLS.

Listing uses MLSD (RFC 3659) and falls back to NLST + SIZE + MDTM for servers without it
(vsftpd). Reading and writing from an offset use REST, so an interrupted transfer resumes.
The FTPS data connection reuses the control connection's TLS session, which servers such as
vsftpd (``require_ssl_reuse``) insist on. The server certificate is verified against the
system's CAs or a CA file named by the connection (``?ca_file=``).
"""

from __future__ import annotations

import calendar
import ftplib
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

from connectors.files.base import (
    AccessDenied,
    ConnectionLost,
    FileInfo,
    FileMissing,
    FileTransport,
    NodeURL,
    TransferError,
    clean_path,
)


def open_ftp(url: NodeURL, *, known_hosts: str | None = None, **tuning: int | str) -> FTPTransport:
    """An FTP node: ``ftp://user:pw@host:21/base`` (no user: anonymous)."""
    return FTPTransport(url.node, _options(url, tls=False))


def open_ftps(url: NodeURL, *, known_hosts: str | None = None, **tuning: int | str) -> FTPTransport:
    """An FTPS node: ``ftps://user:pw@host:990/base?ca_file=/etc/exchange/ca.pem``."""
    return FTPTransport(url.node, _options(url, tls=True))


def _options(url: NodeURL, *, tls: bool) -> FTPOptions:
    host = url.host
    return FTPOptions(
        host=host,
        port=url.port or 21,
        username=url.username or "anonymous",
        password=url.password,
        base=url.base,
        tls=tls,
        ca_file=url.query.get("ca_file"),
    )


@dataclass(frozen=True)
class FTPOptions:
    host: str
    port: int = 21
    username: str = "anonymous"
    password: str | None = None
    base: str = "/"
    tls: bool = False
    ca_file: str | None = None
    timeout: float = 30.0


class _ReusingFTP_TLS(ftplib.FTP_TLS):
    """FTP_TLS whose data connections resume the control connection's TLS session."""

    def ntransfercmd(
        self, cmd: str, rest: int | str | None = None
    ) -> tuple[socket.socket, int | None]:
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if getattr(self, "_prot_p", False):
            session = getattr(self.sock, "session", None)
            conn = self.context.wrap_socket(conn, server_hostname=self.host, session=session)
        return conn, size


def _mdtm(value: str) -> float:
    """``20261124083000`` or ``20261124083000.123`` (UTC) -> epoch seconds."""
    main, _, frac = value.strip().partition(".")
    t = time.strptime(main[:14], "%Y%m%d%H%M%S")
    return calendar.timegm(t) + (float("0." + frac) if frac else 0.0)


class _DataStream:
    """One data connection (RETR or STOR); closing it reads the server's final reply.

    A download closed before its end (``read_text`` of a marker reads its first bytes) is cut
    short on purpose: the server's "426 transfer aborted" is then the expected reply.
    """

    def __init__(
        self, transport: FTPTransport, conn: socket.socket, path: str, reading: bool = False
    ):
        self.t, self.conn, self.path = transport, conn, path
        self.closed = False
        self.reading = reading
        self.at_end = False  # the server closed the data connection: the whole file came

    def read(self, n: int = -1) -> bytes:
        try:
            data = self.conn.recv(n if n > 0 else 1 << 20)
        except (OSError, EOFError) as exc:
            raise self.t._error(exc, self.path) from None
        if not data:
            self.at_end = True
        return data

    def write(self, data: bytes) -> int:
        try:
            self.conn.sendall(data)
        except (OSError, EOFError) as exc:
            raise self.t._error(exc, self.path) from None
        return len(data)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        cut_short = self.reading and not self.at_end
        try:
            if isinstance(self.conn, ssl.SSLSocket) and not cut_short:
                self.conn.unwrap()  # (unread data would stand in the way of TLS's goodbye)
            self.conn.close()
            self.t.ftp.voidresp()
        except ftplib.error_temp as exc:
            if not (cut_short and str(exc).startswith(("426", "451"))):
                raise self.t._error(exc, self.path) from None
        except (OSError, EOFError, ftplib.Error) as exc:
            raise self.t._error(exc, self.path) from None

    def __enter__(self) -> _DataStream:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
            return
        self.closed = True
        try:  # already failing: drop the data connection, keep the first error
            self.conn.close()
        except OSError:
            pass


class FTPTransport(FileTransport):
    """One control connection to an FTP or FTPS node, in passive mode."""

    def __init__(self, node: str, opts: FTPOptions):
        super().__init__(node)
        self.opts = opts
        self.base = "/" + clean_path(opts.base) if clean_path(opts.base) else "/"
        where = f"node {node!r} ({opts.host}:{opts.port})"
        ftp: ftplib.FTP
        if opts.tls:
            ctx = ssl.create_default_context(cafile=opts.ca_file)
            ftp = _ReusingFTP_TLS(context=ctx, timeout=opts.timeout)
        else:
            ftp = ftplib.FTP(timeout=opts.timeout)
        self.ftp = ftp
        try:
            ftp.connect(opts.host, opts.port)
            if isinstance(ftp, ftplib.FTP_TLS):
                ftp.auth()
            ftp.login(opts.username, opts.password or "")
            if isinstance(ftp, ftplib.FTP_TLS):
                ftp.prot_p()
            ftp.set_pasv(True)
            ftp.voidcmd("TYPE I")
        except ssl.SSLCertVerificationError as exc:
            self.close()
            raise TransferError(
                f"{where}: TLS certificate not trusted: {exc.verify_message}"
            ) from None
        except ftplib.error_perm as exc:
            self.close()
            if str(exc).startswith("530"):
                raise AccessDenied(f"{where}: login failed for user {opts.username!r}") from None
            raise TransferError(f"{where}: {exc}") from None
        except (OSError, EOFError, ftplib.Error) as exc:
            self.close()
            raise ConnectionLost(f"{where}: cannot connect: {exc}") from None
        self._mlsd = True

    def _abs(self, path: str) -> str:
        rel = clean_path(path)
        return (self.base.rstrip("/") + "/" + rel) if rel else self.base

    def _error(self, exc: BaseException, path: str) -> Exception:
        where = f"node {self.node!r} path {clean_path(path) or '.'!r}"
        text = str(exc).strip()
        low = text.lower()
        if isinstance(exc, ftplib.error_perm):
            if text.startswith(("553", "532")) or any(
                w in low for w in ("denied", "privilege", "permission", "not allowed")
            ):
                return AccessDenied(f"{where}: permission denied ({text})")
            if "no such" in low or "not found" in low or "not exist" in low:
                return FileMissing(f"{where}: no such file or directory")
            return TransferError(f"{where}: {text}")
        if isinstance(exc, ftplib.error_temp | OSError | EOFError | ftplib.error_reply):
            return ConnectionLost(f"{where}: connection lost: {text or type(exc).__name__}")
        return TransferError(f"{where}: {text}")

    def _binary(self) -> None:
        """Back to TYPE I after a listing (the server answered it, well or not): ftplib lists
        in ASCII mode (``TYPE A``), in which servers convert the line ends of RETR and STOR
        and refuse SIZE."""
        try:
            self.ftp.voidcmd("TYPE I")
        except (OSError, EOFError, ftplib.Error):
            pass  # the connection is gone: the listing's own error (or the next call) says so

    def _call(self, path: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except (OSError, EOFError, ftplib.Error) as exc:
            raise self._error(exc, path) from None

    def stat(self, path: str) -> FileInfo | None:
        try:
            size = self.ftp.size(self._abs(path))
            mtime = _mdtm(self.ftp.sendcmd(f"MDTM {self._abs(path)}")[4:])
        except ftplib.error_perm as exc:
            err = self._error(exc, path)
            if isinstance(err, FileMissing) or str(exc).startswith("550"):
                return None
            raise err from None
        except (OSError, EOFError, ftplib.Error) as exc:
            raise self._error(exc, path) from None
        return FileInfo(clean_path(path), int(size or 0), mtime)

    def list_dir(self, path: str) -> Iterator[tuple[FileInfo, bool]]:
        rel = clean_path(path)
        if self._mlsd:
            try:
                entries = list(self.ftp.mlsd(self._abs(rel), facts=["type", "size", "modify"]))
            except ftplib.error_perm as exc:
                self._binary()
                if not str(exc).startswith(("500", "502")):
                    raise self._error(exc, path) from None
                self._mlsd = False  # the server has no MLSD: fall back for good
            except ftplib.Error as exc:
                self._binary()
                raise self._error(exc, path) from None
            except (OSError, EOFError) as exc:
                raise self._error(exc, path) from None
            else:
                self._binary()
                for name, facts in entries:
                    kind = facts.get("type", "")
                    if kind not in ("file", "dir"):
                        continue  # cdir, pdir, links
                    child = f"{rel}/{name}" if rel else name
                    mtime = _mdtm(facts["modify"]) if "modify" in facts else 0.0
                    yield FileInfo(child, int(facts.get("size", 0)), mtime), kind == "dir"
                return
        try:
            names = self.ftp.nlst(self._abs(rel))
        except ftplib.Error as exc:
            self._binary()
            raise self._error(exc, path) from None
        except (OSError, EOFError) as exc:
            raise self._error(exc, path) from None
        self._binary()
        for full in names:
            name = full.rstrip("/").rsplit("/", 1)[-1]
            if name in (".", ".."):
                continue
            child = f"{rel}/{name}" if rel else name
            info = self.stat(child)
            yield (info, False) if info is not None else (FileInfo(child, 0, 0.0), True)

    def open_read(self, path: str, offset: int = 0) -> BinaryIO:
        conn = self._call(path, self.ftp.transfercmd, f"RETR {self._abs(path)}", offset or None)
        return cast(BinaryIO, _DataStream(self, conn, path, reading=True))

    def open_write(self, path: str, offset: int = 0) -> BinaryIO:
        conn = self._call(path, self.ftp.transfercmd, f"STOR {self._abs(path)}", offset or None)
        return cast(BinaryIO, _DataStream(self, conn, path))

    def rename(self, src: str, dst: str) -> None:
        try:
            self.ftp.rename(self._abs(src), self._abs(dst))
        except ftplib.error_perm:
            # Some servers refuse to rename onto an existing file: remove it, then rename.
            self.remove(dst)
            self._call(dst, self.ftp.rename, self._abs(src), self._abs(dst))
        except (OSError, EOFError, ftplib.Error) as exc:
            raise self._error(exc, dst) from None

    def remove(self, path: str) -> None:
        try:
            self.ftp.delete(self._abs(path))
        except ftplib.error_perm as exc:
            err = self._error(exc, path)
            if not isinstance(err, FileMissing) and self.stat(path) is not None:
                raise err from None
        except (OSError, EOFError, ftplib.Error) as exc:
            raise self._error(exc, path) from None

    def makedirs(self, path: str) -> None:
        done = ""
        for part in clean_path(path).split("/"):
            if not part:
                continue
            done = f"{done}/{part}" if done else part
            try:
                self.ftp.mkd(self._abs(done))
            except ftplib.error_perm as exc:
                try:  # it may exist already: then CWD works
                    self.ftp.cwd(self._abs(done))
                except ftplib.error_perm:
                    raise self._error(exc, done) from None
            except (OSError, EOFError, ftplib.Error) as exc:
                raise self._error(exc, done) from None

    def close(self) -> None:
        try:
            self.ftp.quit()
        except (OSError, EOFError, ftplib.Error, AttributeError):
            self.ftp.close()
