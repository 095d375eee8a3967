"""The ``exchange`` command as a platform engineer runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from exchange.demo.run import create_provider


def exchange(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exchange", *args],
        env={**os.environ, "EXCHANGE_HOME": str(home), "EXCHANGE_CATALOG": str(home / "c.yaml")},
        capture_output=True,
        text=True,
        timeout=300,
        cwd=home,
    )


def test_demo_delivers_to_both_requesters_and_verifies_them(tmp_path: Path) -> None:
    out = exchange(tmp_path, "demo", "--rows", "3000", "--home", str(tmp_path / "demo"))

    assert out.returncode == 0, out.stderr
    assert "full run" in out.stdout and "incremental run" in out.stdout
    assert "tax_fe: target table matches" in out.stdout
    assert "hrss_fe: target table matches" in out.stdout
    assert "3,000" in out.stdout  # rows delivered by the full run


def test_subscribe_run_and_status_from_the_command_line(tmp_path: Path) -> None:
    doc = yaml.safe_load(
        Path(__file__).parents[1].joinpath("schemas/examples/demo.yaml").read_text("utf-8")
    )
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True), "utf-8")
    create_provider(tmp_path / "provider.db", 500)

    assert exchange(tmp_path, "db", "upgrade").returncode == 0
    added = exchange(
        tmp_path, "subscription", "add", "410400-SCJG-0001", "--node", "tax_fe",
        "--fields", "id,uscc,name", "--until", "2027-01-31",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "subscription 1" in added.stdout

    refused = exchange(
        tmp_path, "subscription", "add", "410400-SCJG-0001", "--node", "hrss_fe",
        "--fields", "name,phone", "--until", "2027-01-31",
    )  # fmt: skip
    assert refused.returncode == 2
    assert "primary key id" in refused.stderr

    run = exchange(tmp_path, "run", "410400-SCJG-0001")
    assert run.returncode == 0, run.stderr
    assert "delivered" in run.stdout and "500" in run.stdout

    status = exchange(tmp_path, "status")
    assert status.returncode == 0
    assert "tax_fe.enterprise" in status.stdout and "succeeded" in status.stdout

    listed = exchange(tmp_path, "subscription", "list")
    assert "id, uscc, name" in listed.stdout

    verified = exchange(tmp_path, "audit", "verify")
    assert verified.returncode == 0 and "intact" in verified.stdout

    unknown = exchange(tmp_path, "run", "NOPE")
    assert unknown.returncode == 2 and "no resource 'NOPE'" in unknown.stderr
