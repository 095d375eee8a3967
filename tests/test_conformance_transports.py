"""Every file transport runs the conformance suite (tests/conformance/transports.py): a local
directory, SFTP over OpenSSH's ssh and over paramiko's own SSH, FTP and FTPS, against the
in-process servers on loopback (tests/servers). One server of each kind serves the whole
module; each test gets a fresh base directory on it.

A new transport gets the whole suite by one line in ``NODES``: a function that returns the
``Node`` (its URL and the local directory its base maps to) for a fresh directory name."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from connectors.files import open_transport
from tests.conformance.transports import Node, TransportConformance
from tests.servers.ftp import FTPTestServer
from tests.servers.sftp import SFTPTestServer

NodeMaker = Callable[[pytest.FixtureRequest, str], Node]
_names = itertools.count()


@pytest.fixture(scope="module")
def sftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SFTPTestServer, Path]]:
    """One SFTP server for the module, and a known_hosts file that trusts it."""
    tmp = tmp_path_factory.mktemp("sftp")
    with SFTPTestServer(tmp / "root") as srv:
        yield srv, srv.write_known_hosts(tmp / "known_hosts")


@pytest.fixture(scope="module")
def ftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FTPTestServer]:
    with FTPTestServer(tmp_path_factory.mktemp("ftp") / "root") as srv:
        yield srv


@pytest.fixture(scope="module")
def ftps_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FTPTestServer]:
    tmp = tmp_path_factory.mktemp("ftps")
    with FTPTestServer(tmp / "root", tls=True, tmp=tmp) as srv:
        yield srv


def _deny_locally(request: pytest.FixtureRequest, base: Path) -> Callable[[str], None]:
    """Make a directory of a local node refuse writes, as the kernel does it (EACCES/EPERM)."""

    def deny(rel: str) -> None:
        path = base / rel
        if os.geteuid() != 0:
            path.chmod(0o555)
            request.addfinalizer(lambda: path.chmod(0o755))
            return
        # root passes file modes by: an immutable directory is refused even to root.
        if shutil.which("chattr") is None:
            pytest.skip("running as root, and chattr (e2fsprogs) is not installed")
        done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"running as root, and chattr +i is not possible here: {done.stderr}")
        request.addfinalizer(lambda: subprocess.run(["chattr", "-i", str(path)], check=False))

    return deny


def local_node(request: pytest.FixtureRequest, name: str) -> Node:
    base = request.getfixturevalue("tmp_path") / name / "node"
    base.mkdir(parents=True)
    return Node("local", f"file://{quote(str(base))}", base, deny=_deny_locally(request, base))


def sftp_node(layer: str) -> NodeMaker:
    """SFTP carried by ``layer``: openssh (``ssh -s … sftp``) or paramiko's own SSH."""

    def make(request: pytest.FixtureRequest, name: str) -> Node:
        if layer == "openssh" and shutil.which("ssh") is None:
            why = "OpenSSH's ssh client is not installed (apt-get install openssh-client)"
            if os.environ.get("CI") == "true":
                pytest.fail(why)
            pytest.skip(why)
        srv, known_hosts = request.getfixturevalue("sftp_server")
        base = srv.root / name / "node"
        base.mkdir(parents=True)
        url = f"{srv.url(f'{name}/node')}?client={layer}"
        return Node(
            "sftp", url, base, str(known_hosts), deny=lambda d: srv.deny(f"{name}/node/{d}")
        )

    return make


def ftp_node(tls: bool) -> NodeMaker:
    def make(request: pytest.FixtureRequest, name: str) -> Node:
        srv: FTPTestServer = request.getfixturevalue("ftps_server" if tls else "ftp_server")
        base = srv.root / name / "node"
        base.mkdir(parents=True)
        return Node(
            "ftps" if tls else "ftp",
            srv.url(f"{name}/node"),
            base,
            deny=lambda d: srv.deny(f"{name}/node/{d}"),
        )

    return make


#: Every transport the engine has: test id -> how to make a fresh node of it.
NODES: dict[str, NodeMaker] = {
    "local": local_node,
    "sftp-openssh": sftp_node("openssh"),
    "sftp-paramiko": sftp_node("paramiko"),
    "ftp": ftp_node(tls=False),
    "ftps": ftp_node(tls=True),
}


class TestFileTransport(TransportConformance):
    @pytest.fixture(params=list(NODES))
    def node(self, request: pytest.FixtureRequest) -> Node:
        return NODES[request.param](request, f"t{next(_names)}")


@pytest.mark.parametrize("layer", ["openssh", "paramiko"])
def test_an_sftp_node_runs_on_the_ssh_layer_its_url_names(
    request: pytest.FixtureRequest, layer: str
) -> None:
    # Otherwise the two SFTP rows above could be paramiko twice under two names.
    node = NODES[f"sftp-{layer}"](request, f"t{next(_names)}")
    with open_transport("conformance", "sftp", node.url, known_hosts=node.known_hosts) as t:
        assert getattr(t, "client", None) == layer
