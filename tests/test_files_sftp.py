"""Folder resources over SFTP: pulled once, fanned out to every subscriber exactly once,
surviving dropped connections, a refused directory, a file still being written and an
unknown host key. Real SFTP servers on loopback (paramiko's server side, tests/servers).

Every test runs twice: SFTP carried by OpenSSH's ssh client and by paramiko's own SSH."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import paramiko
import pytest
import sqlalchemy as sa

from exchange.files.models import FileDelivery
from exchange.flow import run_resource
from exchange.workflow.grants import add_subscription
from exchange.workspace import Workspace
from tests.conftest import catalog_yaml
from tests.servers.sftp import SFTPTestServer

CODE = "410400-SCJG-0002"
UNTIL = dt.date.today() + dt.timedelta(days=365)
FOLDER = f"""\
- code: "{CODE}"
  name: 企业年报附件
  kind: folder
  provider: market
  share: unconditional
  files: {{path: out/reports, recursive: true, mirror: true}}
"""


@pytest.fixture(autouse=True, params=["openssh", "paramiko"])
def ssh_layer(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which SSH layer carries SFTP in this test (EXCHANGE_SFTP_CLIENT)."""
    if request.param == "openssh" and shutil.which("ssh") is None:
        why = "OpenSSH's ssh client is not installed (apt-get install openssh-client)"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    monkeypatch.setenv("EXCHANGE_SFTP_CLIENT", request.param)
    return str(request.param)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[SFTPTestServer, SFTPTestServer]]:
    """The provider's SFTP server and the subscribers' one, trusted in $EXCHANGE_HOME."""
    with (
        SFTPTestServer(tmp_path / "provider") as provider,
        SFTPTestServer(tmp_path / "subscribers") as subscribers,
    ):
        for home in ("tax", "hrss"):  # the subscribers' accounts' base directories
            (subscribers.root / home).mkdir()
        (tmp_path / "known_hosts").write_text(
            provider.known_hosts_line() + "\n" + subscribers.known_hosts_line() + "\n"
        )
        yield provider, subscribers


def write(root: Path, rel: str, data: bytes) -> bytes:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def open_ws(
    make_workspace: Callable[[str], Workspace],
    monkeypatch: pytest.MonkeyPatch,
    provider: SFTPTestServer,
    subscribers: SFTPTestServer,
    resource: str = FOLDER,
) -> Workspace:
    monkeypatch.setenv("T_MARKET_SFTP", provider.url(""))
    monkeypatch.setenv("T_TAX_SFTP", subscribers.url("tax"))
    monkeypatch.setenv("T_HRSS_SFTP", subscribers.url("hrss"))
    nodes = {
        "market": ("sftp", "{env: T_MARKET_SFTP}"),
        "tax_sftp": ("sftp", "{env: T_TAX_SFTP}"),
        "hrss_sftp": ("sftp", "{env: T_HRSS_SFTP}"),
        "stats_local": ("local", "{path: stats}"),
    }
    return make_workspace(catalog_yaml(nodes, resource))


def ledger(ws: Workspace) -> list[tuple[int, str, str]]:
    with ws.store.session() as s:
        rows = s.execute(
            sa.select(FileDelivery).where(FileDelivery.status == "delivered").order_by("id")
        ).scalars()
        return [(r.subscription_id, r.path, r.action) for r in rows]


def test_folder_fans_out_to_every_subscriber_exactly_once(
    tmp_path: Path,
    servers: tuple[SFTPTestServer, SFTPTestServer],
    make_workspace: Callable[[str], Workspace],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider, subscribers = servers
    src = provider.root / "out/reports"
    a = write(src, "2026/a.pdf", os.urandom(300_000))
    b = write(src, "b.xlsx", b"PK\x03\x04" + os.urandom(5_000))
    ws = open_ws(make_workspace, monkeypatch, provider, subscribers)
    for node in ("tax_sftp", "hrss_sftp"):
        add_subscription(ws, CODE, node, [], UNTIL, target_dir="in/reports")

    first = run_resource(ws, CODE)

    assert first.status == "succeeded", first.failures
    for who in ("tax", "hrss"):
        got = subscribers.root / who / "in/reports"
        assert (got / "2026/a.pdf").read_bytes() == a
        assert (got / "b.xlsx").read_bytes() == b
        assert not [p for p in got.rglob("*") if p.name.endswith(".exchange-part")]
    read_once = provider.bytes_read
    assert read_once == len(a) + len(b)  # pulled once for both subscribers

    again = run_resource(ws, CODE)
    assert again.status == "succeeded" and again.extracted == 0
    assert provider.bytes_read == read_once  # nothing new: nothing pulled

    c = write(src, "2026/a.pdf", os.urandom(200_000))  # changed
    (src / "b.xlsx").unlink()  # deleted at the source: mirrored
    third = run_resource(ws, CODE)
    assert third.status == "succeeded", third.failures
    for who in ("tax", "hrss"):
        got = subscribers.root / who / "in/reports"
        assert (got / "2026/a.pdf").read_bytes() == c
        assert not (got / "b.xlsx").exists()

    # A new subscriber gets everything present; the others get nothing twice.
    add_subscription(ws, CODE, "stats_local", [], UNTIL, target_dir="annual")
    run_resource(ws, CODE)
    assert (tmp_path / "stats/annual/2026/a.pdf").read_bytes() == c
    rows = ledger(ws)
    tax_puts = [(sid, p) for sid, p, act in rows if sid == 1 and act == "put"]
    assert tax_puts == [(1, "2026/a.pdf"), (1, "b.xlsx"), (1, "2026/a.pdf")]
    assert [(sid, p, act) for sid, p, act in rows if sid == 3] == [(3, "2026/a.pdf", "put")]


def test_dropped_connections_resume_from_their_offset(
    servers: tuple[SFTPTestServer, SFTPTestServer],
    make_workspace: Callable[[str], Workspace],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider, subscribers = servers
    big = write(provider.root / "out/reports", "dump.bin", os.urandom(6_000_000))
    ws = open_ws(make_workspace, monkeypatch, provider, subscribers)
    add_subscription(ws, CODE, "tax_sftp", [], UNTIL, target_dir="in")
    provider.drop_after("read", 2_500_000)
    subscribers.drop_after("write", 3_000_000)

    summary = run_resource(ws, CODE)

    assert summary.status == "succeeded", summary.failures
    landed = (subscribers.root / "tax/in/dump.bin").read_bytes()
    assert sha(landed) == sha(big)
    # The upload went on from where the server stopped, it did not start over.
    assert subscribers.bytes_written < 1.5 * len(big)
    with ws.store.session() as s:
        row = s.execute(sa.select(FileDelivery)).scalar_one()
    assert row.resumed_from is not None and row.resumed_from >= 3_000_000
    assert row.sha256 == sha(big)


def test_a_refused_directory_fails_one_subscriber_and_the_others_are_served(
    servers: tuple[SFTPTestServer, SFTPTestServer],
    make_workspace: Callable[[str], Workspace],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider, subscribers = servers
    data = write(provider.root / "out/reports", "r.txt", "营业执照 scan\n".encode())
    ws = open_ws(make_workspace, monkeypatch, provider, subscribers)
    add_subscription(ws, CODE, "tax_sftp", [], UNTIL, target_dir="in")
    add_subscription(ws, CODE, "hrss_sftp", [], UNTIL, target_dir="in")
    (subscribers.root / "tax/in").mkdir(parents=True)
    subscribers.deny("tax/in")

    summary = run_resource(ws, CODE)

    assert summary.status == "failed"
    assert list(summary.failures) == [1]
    assert "node 'tax_sftp'" in summary.failures[1]
    assert "permission denied" in summary.failures[1]
    assert "s3cret" not in summary.failures[1]
    assert (subscribers.root / "hrss/in/r.txt").read_bytes() == data
    assert not (subscribers.root / "tax/in/r.txt").exists()

    # Once the directory is writable, the next run serves only the one that missed it.
    subscribers._denied.clear()
    hrss_writes = subscribers.bytes_written
    retry = run_resource(ws, CODE)
    assert retry.status == "succeeded", retry.failures
    assert (subscribers.root / "tax/in/r.txt").read_bytes() == data
    assert subscribers.bytes_written == hrss_writes + len(data)


def test_a_file_still_being_written_waits_for_the_next_run(
    servers: tuple[SFTPTestServer, SFTPTestServer],
    make_workspace: Callable[[str], Workspace],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider, subscribers = servers
    src = provider.root / "out/reports"
    write(src, "done.csv", b"id\n1\n")
    write(src, "growing.csv", b"id\n1\n2\n")
    provider.grow_on_read("out/reports/growing.csv", b"3\n4\n")
    ws = open_ws(make_workspace, monkeypatch, provider, subscribers)
    add_subscription(ws, CODE, "tax_sftp", [], UNTIL, target_dir="in")

    first = run_resource(ws, CODE)

    got = subscribers.root / "tax/in"
    assert (got / "done.csv").exists()
    assert not (got / "growing.csv").exists()
    assert first.quarantined == 1  # held back this run
    second = run_resource(ws, CODE)
    assert second.status == "succeeded"
    assert (got / "growing.csv").read_bytes() == b"id\n1\n2\n3\n4\n"


def test_an_unknown_host_key_is_refused_before_anything_is_sent(
    tmp_path: Path,
    servers: tuple[SFTPTestServer, SFTPTestServer],
    make_workspace: Callable[[str], Workspace],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider, subscribers = servers
    write(provider.root / "out/reports", "r.txt", b"x")
    ws = open_ws(make_workspace, monkeypatch, provider, subscribers)
    add_subscription(ws, CODE, "tax_sftp", [], UNTIL, target_dir="in")
    add_subscription(ws, CODE, "stats_local", [], UNTIL, target_dir="in")
    # The platform's known_hosts holds the provider only: the subscribers' server is unknown.
    (tmp_path / "known_hosts").write_text(provider.known_hosts_line() + "\n")

    summary = run_resource(ws, CODE)

    assert summary.failures[1].startswith("node 'tax_sftp' ([127.0.0.1]:")
    assert "host key is unknown" in summary.failures[1]
    assert "never added automatically" in summary.failures[1]
    assert (tmp_path / "stats/in/r.txt").exists()  # the other subscriber was served
    assert subscribers.bytes_written == 0
    assert str(subscribers.port) not in (tmp_path / "known_hosts").read_text()  # not added

    # A different key under the right name is refused too (a man in the middle).
    other = paramiko.ECDSAKey.generate()
    (tmp_path / "known_hosts").write_text(
        f"[127.0.0.1]:{subscribers.port} {other.get_name()} {other.get_base64()}\n"
        + provider.known_hosts_line()
        + "\n"
    )
    again = run_resource(ws, CODE)
    assert "does not match known_hosts" in again.failures[1]


def test_key_authentication_by_reference_to_a_key_file(
    tmp_path: Path, servers: tuple[SFTPTestServer, SFTPTestServer], ssh_layer: str
) -> None:
    from connectors.files import open_transport

    provider, _ = servers
    key = paramiko.ECDSAKey.generate()
    key.write_private_key_file(str(tmp_path / "id_ecdsa"))
    provider.authorized_keys.append(key)
    write(provider.root, "out/k.txt", b"by key")
    url = (
        f"sftp://{provider.user}@127.0.0.1:{provider.port}/out"
        f"?key_file={tmp_path / 'id_ecdsa'}&known_hosts={tmp_path / 'known_hosts'}"
    )
    with open_transport("market", "sftp", url) as t:
        assert t.read_text("k.txt") == "by key"
        assert getattr(t, "client", None) == ssh_layer


def test_a_large_file_reads_in_order_across_windows_from_any_offset(
    tmp_path: Path, servers: tuple[SFTPTestServer, SFTPTestServer]
) -> None:
    from connectors.files import open_transport

    provider, _ = servers
    data = write(provider.root, "big.bin", os.urandom(5_000_000))
    url = provider.url("", known_hosts=tmp_path / "known_hosts")
    # Small windows and requests: many window turns between the two handles.
    with open_transport("market", "sftp", url, read_window=300_000, request_size=40_000) as t:
        for offset in (0, 1, 299_999, 1_234_567, 4_999_999):
            with t.open_read("big.bin", offset) as fh:
                got = b"".join(iter(lambda: fh.read(65_536), b""))
            assert got == data[offset:], offset
        with t.open_read("big.bin", 0) as fh:  # closing half-way leaves nothing behind
            assert fh.read(10) == data[:10]
        assert t.read_text("big.bin", 5) == data[:5].decode("utf-8", errors="replace")


def test_a_wrong_password_is_refused_and_never_shown(
    tmp_path: Path, servers: tuple[SFTPTestServer, SFTPTestServer]
) -> None:
    from connectors.files import AccessDenied, open_transport

    provider, _ = servers
    url = provider.url("", known_hosts=tmp_path / "known_hosts").replace(
        provider.password, "not-the-pw-4711"
    )
    with pytest.raises(AccessDenied) as err:
        open_transport("market", "sftp", url)
    assert "authentication failed for user 'exchange'" in str(err.value)
    assert "4711" not in str(err.value)


def test_the_password_is_not_on_the_ssh_command_line(
    tmp_path: Path, servers: tuple[SFTPTestServer, SFTPTestServer], ssh_layer: str
) -> None:
    from connectors.files import open_transport
    from connectors.files.sftp import SFTPTransport

    if ssh_layer != "openssh":
        pytest.skip("only the openssh layer starts a process")
    provider, _ = servers
    with open_transport("market", "sftp", provider.url("", tmp_path / "known_hosts")) as t:
        assert isinstance(t, SFTPTransport) and t._ssh is not None
        cmdline = Path(f"/proc/{t._ssh.proc.pid}/cmdline").read_bytes()
        assert b"ssh" in cmdline and provider.password.encode() not in cmdline
        assert t.stat("nothing-here") is None  # the session works


def test_a_key_file_with_a_passphrase_takes_it_from_the_url(
    tmp_path: Path, servers: tuple[SFTPTestServer, SFTPTestServer]
) -> None:
    from connectors.files import AccessDenied, open_transport

    provider, _ = servers
    key = paramiko.ECDSAKey.generate()
    key.write_private_key_file(str(tmp_path / "id_locked"), password="open sesame")
    provider.authorized_keys.append(key)
    write(provider.root, "out/k.txt", b"locked key")
    query = f"?key_file={tmp_path / 'id_locked'}&known_hosts={tmp_path / 'known_hosts'}"
    at = f"127.0.0.1:{provider.port}/out{query}"
    with open_transport("market", "sftp", f"sftp://{provider.user}:open%20sesame@{at}") as t:
        assert t.read_text("k.txt") == "locked key"
    with pytest.raises(AccessDenied):
        open_transport("market", "sftp", f"sftp://{provider.user}:wrong@{at}")


def test_a_server_that_is_not_there_is_a_lost_connection_naming_the_node(
    tmp_path: Path, servers: tuple[SFTPTestServer, SFTPTestServer]
) -> None:
    import socket

    from connectors.files import ConnectionLost, open_transport

    provider, _ = servers
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    key = provider.known_hosts_line().split(" ", 1)[1]
    (tmp_path / "kh").write_text(f"[127.0.0.1]:{port} {key}\n")
    url = f"sftp://exchange:pw@127.0.0.1:{port}/?known_hosts={tmp_path / 'kh'}"
    with pytest.raises(ConnectionLost) as err:
        open_transport("market", "sftp", url)
    assert str(err.value).startswith(f"node 'market' ([127.0.0.1]:{port}): cannot connect")
    assert "refused" in str(err.value).lower()
