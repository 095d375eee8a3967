"""Which file errors a scheduler retries. A refused login, an unknown host key, an untrusted
certificate (and a refused directory or a missing file: the conformance suite,
tests/conformance/transports.py) are the same on every try: terminal. A connection that
could not be made or that dropped is not: the next try may get through.

Real servers on loopback (tests/servers); SFTP on both SSH layers."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from connectors.files import (
    AccessDenied,
    ConnectionLost,
    FileMissing,
    FileTransport,
    HostKeyRejected,
    TransferError,
    open_transport,
)
from exchange.kernel.errors import Retriable, is_terminal
from tests.servers.ftp import FTPTestServer
from tests.servers.sftp import SFTPTestServer

NETWORK_KINDS = ["sftp-openssh", "sftp-paramiko", "ftp", "ftps"]


def test_transfer_errors_are_terminal_and_a_lost_connection_is_not() -> None:
    for cls in (TransferError, AccessDenied, FileMissing, HostKeyRejected):
        assert cls.terminal is True, cls
        assert is_terminal(cls("node 'n': x")), cls
    assert ConnectionLost.terminal is False
    assert not is_terminal(ConnectionLost("node 'n': connection lost"))
    assert issubclass(ConnectionLost, Retriable) and not issubclass(ConnectionLost, TransferError)


def _layer(layer: str) -> str:
    if layer == "openssh" and shutil.which("ssh") is None:
        why = "OpenSSH's ssh client is not installed (apt-get install openssh-client)"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    return layer


@pytest.fixture(params=["openssh", "paramiko"])
def layer(request: pytest.FixtureRequest) -> str:
    """Which SSH layer carries SFTP (the URL's ``?client=``)."""
    return _layer(str(request.param))


@pytest.fixture
def sftp(tmp_path: Path) -> Iterator[SFTPTestServer]:
    with SFTPTestServer(tmp_path / "sftp") as srv:
        srv.write_known_hosts(tmp_path / "known_hosts")
        yield srv


def sftp_url(srv: SFTPTestServer, known_hosts: Path, layer: str, password: str = "") -> str:
    pw = password or srv.password
    return f"sftp://{srv.user}:{pw}@127.0.0.1:{srv.port}/?client={layer}&known_hosts={known_hosts}"


class Server:
    """One network file server of the given kind on loopback, and how to reach it."""

    def __init__(self, kind: str, tmp: Path):
        self.kind = kind
        self.layer = kind.split("-")[1] if kind.startswith("sftp-") else ""
        self.known_hosts = tmp / "known_hosts"
        self.srv: SFTPTestServer | FTPTestServer
        if self.layer:
            self.srv = SFTPTestServer(tmp / "root")
        else:
            self.srv = FTPTestServer(tmp / "root", tls=kind == "ftps", tmp=tmp)
            self.srv.server.handler.auth_failed_timeout = 0  # (pyftpdlib waits 3 s by default)
        self.root = self.srv.root

    def url(self, password: str = "") -> str:
        if isinstance(self.srv, SFTPTestServer):
            return sftp_url(self.srv, self.known_hosts, self.layer, password)
        url = self.srv.url("")
        return url.replace(self.srv.password, password) if password else url

    def open(self, password: str = "") -> FileTransport:
        return open_transport("n", self.kind.split("-")[0], self.url(password))


@pytest.fixture(params=NETWORK_KINDS)
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    s = Server(str(request.param), tmp_path)
    if s.layer:
        _layer(s.layer)
    s.srv.__enter__()
    if isinstance(s.srv, SFTPTestServer):
        s.srv.write_known_hosts(s.known_hosts)
    try:
        yield s
    finally:
        s.srv.__exit__(None, None, None)


# -- terminal: the same on every try ------------------------------------------------------------
def test_an_unknown_host_key_is_terminal(sftp: SFTPTestServer, tmp_path: Path, layer: str) -> None:
    (tmp_path / "other_hosts").write_text(
        "[127.0.0.1]:1 " + sftp.known_hosts_line().split(" ", 1)[1]
    )
    with pytest.raises(HostKeyRejected, match="host key is unknown") as err:
        open_transport("n", "sftp", sftp_url(sftp, tmp_path / "other_hosts", layer))
    assert is_terminal(err.value)
    assert sftp.bytes_written == sftp.bytes_read == 0


def test_a_host_key_that_differs_from_known_hosts_is_terminal(
    sftp: SFTPTestServer, tmp_path: Path, layer: str
) -> None:
    other = paramiko.ECDSAKey.generate()
    kh = tmp_path / "mitm_hosts"
    kh.write_text(f"[127.0.0.1]:{sftp.port} {other.get_name()} {other.get_base64()}\n")
    with pytest.raises(HostKeyRejected, match="does not match known_hosts") as err:
        open_transport("n", "sftp", sftp_url(sftp, kh, layer))
    assert is_terminal(err.value)


def test_a_missing_known_hosts_file_is_terminal(
    sftp: SFTPTestServer, tmp_path: Path, layer: str
) -> None:
    with pytest.raises(HostKeyRejected, match="does not exist") as err:
        open_transport("n", "sftp", sftp_url(sftp, tmp_path / "no_such_file", layer))
    assert is_terminal(err.value)


def test_a_refused_login_is_terminal(server: Server) -> None:
    with pytest.raises(AccessDenied) as err:
        server.open(password="not-the-pw-4711")
    assert is_terminal(err.value)
    assert "4711" not in str(err.value)


def test_an_untrusted_ftps_certificate_is_terminal(tmp_path: Path) -> None:
    with FTPTestServer(tmp_path / "root", tls=True, tmp=tmp_path) as srv:
        with pytest.raises(TransferError, match="TLS certificate not trusted") as err:
            open_transport("n", "ftps", srv.url("").split("?")[0])  # no ca_file
    assert is_terminal(err.value)


# -- not terminal: a retry may get through -------------------------------------------------------
@pytest.mark.parametrize("kind", NETWORK_KINDS)
def test_a_server_that_is_not_there_is_not_terminal(kind: str, tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    if kind.startswith("sftp-"):
        key = paramiko.ECDSAKey.generate()
        (tmp_path / "kh").write_text(f"[127.0.0.1]:{port} {key.get_name()} {key.get_base64()}\n")
        url = f"sftp://u:pw@127.0.0.1:{port}/?client={_layer(kind[5:])}&known_hosts={tmp_path}/kh"
    else:
        url = f"{kind}://u:pw@127.0.0.1:{port}/"
    with pytest.raises(ConnectionLost, match="cannot connect") as err:
        open_transport("n", kind.split("-")[0], url)
    assert not is_terminal(err.value)


def test_a_server_that_goes_away_mid_session_is_not_terminal(server: Server) -> None:
    (server.root / "a.csv").write_bytes(b"x")
    t = server.open()
    try:
        assert t.stat("a.csv") is not None
        server.srv.__exit__(None, None, None)  # the server stops: every connection drops
        with pytest.raises(ConnectionLost) as err:
            for _ in range(50):  # (ssh may take a moment to notice)
                t.stat("a.csv")
                list(t.list_dir(""))
        assert not is_terminal(err.value)
    finally:
        t.close()


@pytest.mark.parametrize("server", ["sftp-openssh", "sftp-paramiko", "ftp"], indirect=True)
def test_a_download_dropped_mid_file_is_not_terminal(server: Server) -> None:
    (server.root / "big.bin").write_bytes(os.urandom(3_000_000))
    server.srv.drop_after("read", 1_000_000)
    with server.open() as t, pytest.raises(ConnectionLost) as err:
        with t.open_read("big.bin") as fh:
            while fh.read(65_536):
                pass
    assert not is_terminal(err.value)


@pytest.mark.parametrize("server", ["sftp-openssh", "sftp-paramiko", "ftp"], indirect=True)
def test_an_upload_dropped_mid_file_is_not_terminal(server: Server) -> None:
    data = os.urandom(3_000_000)
    server.srv.drop_after("write", 1_000_000)
    with server.open() as t, pytest.raises(ConnectionLost) as err:
        with t.open_write("big.bin") as fh:
            for i in range(0, len(data), 65_536):
                fh.write(data[i : i + 65_536])
    assert not is_terminal(err.value)
