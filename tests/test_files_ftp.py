"""File resources over FTP and FTPS (passive mode; TLS on control and data) against real
pyftpdlib servers on loopback; completion markers on local directories."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from exchange.flow import run_resource
from exchange.workflow.grants import add_subscription
from exchange.workspace import Workspace
from tests.conftest import catalog_yaml
from tests.servers.ftp import FTPTestServer

CODE = "410400-SWJ-0007"
UNTIL = dt.date.today() + dt.timedelta(days=365)


def resource(files: str) -> str:
    return f"""\
- code: "{CODE}"
  name: 月度纳税申报表
  kind: file
  provider: tax_ftp
  share: unconditional
  files: {files}
"""


def test_ftp_provider_to_ftps_and_ftp_subscribers_with_resume_and_a_refused_one(
    tmp_path: Path, make_workspace: Callable[[str], Workspace], monkeypatch: pytest.MonkeyPatch
) -> None:
    with (
        FTPTestServer(tmp_path / "tax") as tax,
        FTPTestServer(tmp_path / "market", tls=True, tmp=tmp_path) as market,
        FTPTestServer(tmp_path / "hrss") as hrss,
    ):
        monthly = tax.root / "out/monthly"
        monthly.mkdir(parents=True)
        big = os.urandom(4_000_000)
        (monthly / "2026-10.xlsx").write_bytes(big)
        (monthly / "2026-10.tmp").write_bytes(b"not matched by the pattern")
        monkeypatch.setenv("T_TAX", tax.url(""))
        monkeypatch.setenv("T_MARKET", market.url(""))
        monkeypatch.setenv("T_HRSS", hrss.url(""))
        nodes = {
            "tax_ftp": ("ftp", "{env: T_TAX}"),
            "market_ftps": ("ftps", "{env: T_MARKET}"),
            "hrss_ftp": ("ftp", "{env: T_HRSS}"),
        }
        ws = make_workspace(catalog_yaml(nodes, resource('{path: out/monthly, pattern: "*.xlsx"}')))
        add_subscription(ws, CODE, "market_ftps", [], UNTIL, target_dir="in/tax")
        add_subscription(ws, CODE, "hrss_ftp", [], UNTIL, target_dir="in/tax")
        tax.drop_after("read", 1_500_000)  # the provider drops the download once
        hrss.deny("in")

        summary = run_resource(ws, CODE)

        landed = (market.root / "in/tax/2026-10.xlsx").read_bytes()
        assert hashlib.sha256(landed).digest() == hashlib.sha256(big).digest()
        assert not (market.root / "in/tax/2026-10.tmp").exists()
        assert summary.status == "failed" and list(summary.failures) == [2]
        assert "node 'hrss_ftp'" in summary.failures[2]
        assert "permission denied" in summary.failures[2]
        assert "ftp-s3cret" not in summary.failures[2]
        assert list((hrss.root / "in").iterdir()) == []


def test_ftps_refuses_a_server_certificate_it_does_not_trust(
    tmp_path: Path,
) -> None:
    from connectors.files import TransferError, open_transport

    with FTPTestServer(tmp_path / "m", tls=True, tmp=tmp_path) as market:
        url = market.url("").split("?")[0]  # no ca_file: the self-signed cert is unknown
        with pytest.raises(TransferError, match="TLS certificate not trusted"):
            open_transport("market_ftps", "ftps", url)


@pytest.mark.parametrize("marker", ["ok", "md5"])
def test_only_files_whose_completion_marker_exists_are_pulled(
    marker: str, tmp_path: Path, make_workspace: Callable[[str], Workspace]
) -> None:
    src = tmp_path / "prov/out"
    src.mkdir(parents=True)
    (tmp_path / "sub").mkdir()
    good, pending, corrupt = b"complete file", b"half writ", b"bytes on disk"
    (src / "a.dat").write_bytes(good)
    (src / "b.dat").write_bytes(pending)  # no marker yet
    (src / "c.dat").write_bytes(corrupt)
    if marker == "ok":
        (src / "a.dat.ok").write_bytes(b"")
        (src / "c.dat.ok").write_bytes(b"")
    else:
        (src / "a.dat.md5").write_text(hashlib.md5(good).hexdigest() + "  a.dat\n")
        (src / "c.dat.md5").write_text(hashlib.md5(b"what the provider meant").hexdigest())
    nodes = {"tax_ftp": ("local", "{path: prov}"), "sub_fe": ("local", "{path: sub}")}
    ws = make_workspace(
        catalog_yaml(nodes, resource(f"{{path: out, pattern: '*.dat', marker: {marker}}}"))
    )
    add_subscription(ws, CODE, "sub_fe", [], UNTIL, target_dir="in")

    summary = run_resource(ws, CODE)

    got = sorted(p.name for p in (tmp_path / "sub/in").iterdir())
    if marker == "ok":
        assert got == ["a.dat", "c.dat"]
    else:
        assert got == ["a.dat"]  # c.dat's md5 does not match its marker: held back
        assert summary.quarantined == 1
    (src / f"b.dat.{marker}").write_text(hashlib.md5(pending).hexdigest())
    run_resource(ws, CODE)
    assert (tmp_path / "sub/in/b.dat").read_bytes() == pending
