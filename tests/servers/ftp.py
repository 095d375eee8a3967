"""Real FTP and FTPS servers on loopback, in this process (pyftpdlib), with faults.

    with FTPTestServer(root, tls=True, tmp=tmp_path) as srv:
        url = srv.url("in")        # ftps://exchange:pw@127.0.0.1:PORT/in?ca_file=...

FTPS uses a self-signed certificate made here (``cryptography``) that the client trusts
through ``ca_file``; TLS is required on the control and the data connections.

Faults: ``drop_after(op, nbytes)`` closes the control and data connections once ``nbytes``
have been sent (``op="read"``: a client download) or received (``"write"``); ``deny(dir)``
leaves the account read-only there (pyftpdlib answers "550 Not enough privileges").
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import threading
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import DTPHandler, FTPHandler, TLS_FTPHandler
from pyftpdlib.ioloop import IOLoop
from pyftpdlib.servers import FTPServer


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (PEM files): (cert, key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "ftps-cert.pem", directory / "ftps-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class FTPTestServer:
    """An FTP (or FTPS) server on 127.0.0.1 serving ``root``; start with ``with``."""

    def __init__(
        self,
        root: Path,
        *,
        tls: bool = False,
        tmp: Path | None = None,
        user: str = "exchange",
        password: str = "ftp-s3cret",
    ):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.user, self.password, self.tls = user, password, tls
        self.authorizer = DummyAuthorizer()
        self.authorizer.add_user(user, password, str(self.root), perm="elradfmwMT")
        self.drops: dict[str, int] = {}
        self.lock = threading.Lock()
        srv = self

        class DropDTP(DTPHandler):  # type: ignore[misc]
            def _maybe_drop(self, op: str, done: int) -> None:
                with srv.lock:
                    limit = srv.drops.get(op)
                    fire = limit is not None and done >= limit
                    if fire:
                        del srv.drops[op]
                if fire:  # after this callback returns: closing inside it upsets asynchat
                    self.ioloop.call_later(0, self.cmd_channel.close)

            def handle_read(self) -> None:
                super().handle_read()
                self._maybe_drop("write", self.tot_bytes_received)

            # pyftpdlib routes a data connection's reads to handle_read_event, not through
            # handle_read: without this an upload is never dropped.
            handle_read_event = handle_read

            def send(self, data: Any) -> int:
                sent = int(super().send(data))
                self._maybe_drop("read", self.tot_bytes_sent)
                return sent

        handler: type[FTPHandler]
        if tls:
            assert tmp is not None, "FTPS needs a directory for its certificate"
            self.cert, key = self_signed_certificate(tmp)

            class Handler(TLS_FTPHandler):  # type: ignore[misc]
                pass

            Handler.certfile = str(self.cert)
            Handler.keyfile = str(key)
            Handler.tls_control_required = True
            Handler.tls_data_required = True
        else:

            class Handler(FTPHandler):  # type: ignore[misc,no-redef]
                pass

            Handler.dtp_handler = DropDTP
            Handler.use_sendfile = False  # so that sends pass through DropDTP.send
        handler = Handler
        handler.authorizer = self.authorizer
        handler.passive_ports = None
        # Each server its own IOLoop: the default one is shared by every server in a process.
        self.server = FTPServer(("127.0.0.1", 0), handler, ioloop=IOLoop())
        self.port = self.server.address[1]
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"timeout": 0.05}, daemon=True
        )

    def drop_after(self, op: str, nbytes: int) -> None:
        with self.lock:
            self.drops[op] = nbytes

    def deny(self, directory: str) -> None:
        path = self.root / directory.strip("/")
        path.mkdir(parents=True, exist_ok=True)
        self.authorizer.override_perm(self.user, str(path), "elr", recursive=True)

    def url(self, base: str = "") -> str:
        scheme = "ftps" if self.tls else "ftp"
        query = f"?ca_file={self.cert}" if self.tls else ""
        return f"{scheme}://{self.user}:{self.password}@127.0.0.1:{self.port}/{base}{query}"

    def __enter__(self) -> FTPTestServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.close_all()
        self._thread.join(5)
