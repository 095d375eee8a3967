"""The transport registry: one entry per file node kind of the kernel, each kind's URL schemes,
and the options a node's URL gives its transport (connectors/files/registry.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from connectors.files import FILE_KINDS, SFTP_CLIENT_ENV, open_transport
from connectors.files.local import LocalTransport
from connectors.files.registry import TRANSPORTS
from exchange.kernel.errors import BadInput
from exchange.kernel.kinds import FILE_NODE_KINDS


class Recorded(Exception):
    """Raised by a stand-in transport class: carries what it was built with."""

    def __init__(self, node: str, opts: Any):
        self.node, self.opts = node, opts


def record(node: str, opts: Any) -> None:
    raise Recorded(node, opts)


def built(kind: str, url: str, **kwargs: Any) -> Any:
    with pytest.raises(Recorded) as got:
        open_transport("n", kind, url, **kwargs)
    assert got.value.node == "n"
    return got.value.opts


def test_the_registry_has_one_transport_per_file_node_kind_of_the_kernel() -> None:
    assert tuple(TRANSPORTS) == FILE_NODE_KINDS
    assert FILE_KINDS == frozenset(FILE_NODE_KINDS)


def test_every_registered_factory_can_be_loaded() -> None:
    for kind, entry in TRANSPORTS.items():
        assert callable(entry.load()), kind
        assert entry.schemes, kind


def test_the_sftp_client_env_name_stays_importable() -> None:
    assert SFTP_CLIENT_ENV == "EXCHANGE_SFTP_CLIENT"


def test_opening_a_local_node_does_not_import_the_network_transports(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from connectors.files import open_transport\n"
        f"open_transport('n', 'local', 'file://{tmp_path}').close()\n"
        "print(sorted(m for m in ('paramiko', 'connectors.files.sftp', 'connectors.files.ftp')"
        " if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_a_kind_that_is_not_a_file_node_is_bad_input() -> None:
    with pytest.raises(BadInput, match="node 'n': kind 'postgresql' is not a file node"):
        open_transport("n", "postgresql", "file:///srv")


@pytest.mark.parametrize("kind", FILE_NODE_KINDS)
def test_a_url_of_another_scheme_is_bad_input(kind: str) -> None:
    with pytest.raises(BadInput, match=f"node 'n' is declared {kind} but its URL scheme is 'http'"):
        open_transport("n", kind, "http://127.0.0.1/srv")
    other = "ftp" if kind != "ftp" else "ftps"
    with pytest.raises(BadInput, match=f"its URL scheme is '{other}'"):
        open_transport("n", kind, f"{other}://127.0.0.1/srv")


@pytest.mark.parametrize("kind", ["sftp", "ftp", "ftps"])
def test_a_network_node_without_a_host_is_bad_input(kind: str) -> None:
    with pytest.raises(BadInput, match="node 'n': the connection URL names no host"):
        open_transport("n", kind, f"{kind}:///base/dir")


def test_a_local_node_is_the_urls_path_unquoted(tmp_path: Path) -> None:
    (tmp_path / "市场 监管").mkdir()
    t = open_transport("n", "local", f"file://{tmp_path}/%E5%B8%82%E5%9C%BA%20%E7%9B%91%E7%AE%A1")
    assert isinstance(t, LocalTransport) and t.base == tmp_path / "市场 监管"
    assert isinstance(open_transport("n", "local", "file://"), LocalTransport)


def test_sftp_options_come_from_the_url_then_the_platform_then_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import connectors.files.sftp as sftp

    monkeypatch.setattr(sftp, "SFTPTransport", record)
    monkeypatch.delenv(SFTP_CLIENT_ENV, raising=False)
    o = built("sftp", "sftp://host.example/")
    assert (o.host, o.port, o.username, o.password, o.base) == ("host.example", 22, "", None, "/")
    assert (o.known_hosts, o.key_file, o.client) == ("~/.ssh/known_hosts", None, "auto")

    o = built(
        "sftp",
        "ssh://ex%40change:p%20w@10.0.0.7:2222/in/%E7%A8%8E?key_file=/etc/k&client=paramiko"
        "&known_hosts=/etc/node_hosts",
        known_hosts="/etc/platform_hosts",
        read_window=300_000,
        request_size=40_000,
    )
    assert (o.host, o.port, o.username, o.password) == ("10.0.0.7", 2222, "ex@change", "p w")
    assert (o.base, o.key_file, o.client, o.known_hosts) == (
        "/in/税",
        "/etc/k",
        "paramiko",
        "/etc/node_hosts",
    )
    assert (o.read_window, o.request_size) == (300_000, 40_000)

    monkeypatch.setenv(SFTP_CLIENT_ENV, "openssh")
    o = built("sftp", "sftp://u@h/b", known_hosts="/etc/platform_hosts")
    assert (o.known_hosts, o.client) == ("/etc/platform_hosts", "openssh")
    assert built("sftp", "sftp://u@h/b?client=paramiko").client == "paramiko"  # the URL wins


def test_ftp_and_ftps_options_come_from_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    import connectors.files.ftp as ftp

    monkeypatch.setattr(ftp, "FTPTransport", record)
    o = built("ftp", "ftp://ftp.example/out")
    assert (o.host, o.port, o.username, o.password, o.base, o.tls, o.ca_file) == (
        "ftp.example",
        21,
        "anonymous",
        None,
        "/out",
        False,
        None,
    )
    o = built("ftps", "ftps://u:p%2Fw@10.0.0.8:990/in?ca_file=/etc/ca.pem", known_hosts="/x")
    assert (o.host, o.port, o.username, o.password, o.base, o.tls, o.ca_file) == (
        "10.0.0.8",
        990,
        "u",
        "p/w",
        "/in",
        True,
        "/etc/ca.pem",
    )
