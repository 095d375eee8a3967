"""The ``exchange`` command as a platform engineer runs it."""

from __future__ import annotations

import os
import re
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
    assert "3,000" in out.stdout  # rows extracted by the full run
    # The demo damages 7 codes at the provider, then fixes them and a reported row.
    assert "extracted 3,000, valid 2,993, quarantined 7" in out.stdout
    assert "the incremental run delivered 7 of them; 0 still held" in out.stdout
    assert "the fix reached 2 of 2 subscribers" in out.stdout
    # The folder resource: 11 files to both, then 1 replaced + 1 added + 1 deleted.
    assert re.search(r"tax_files:/in/annual_reports\W+delivered\W+11\b", out.stdout)
    assert re.search(r"hrss_files:/in/annual_reports\W+delivered\W+3\b", out.stdout)
    assert "tax_files: folder matches the provider's" in out.stdout
    assert "hrss_files: folder matches the provider's" in out.stdout


def test_subscribe_run_and_status_from_the_command_line(tmp_path: Path) -> None:
    doc = yaml.safe_load(
        Path(__file__).parents[1].joinpath("schemas/examples/demo.yaml").read_text("utf-8")
    )
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True), "utf-8")
    create_provider(tmp_path / "provider.db", 500)

    assert exchange(tmp_path, "db", "upgrade").returncode == 0
    added = exchange(
        tmp_path, "subscription", "add", "410400-SCJG-0001", "--node", "tax_fe",
        "--department", "SWJ", "--fields", "id,uscc,name", "--until", "2027-01-31",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "subscription 1" in added.stdout

    refused = exchange(
        tmp_path, "subscription", "add", "410400-SCJG-0001", "--node", "hrss_fe",
        "--department", "RSJ", "--fields", "name,phone", "--until", "2027-01-31",
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


def test_a_folder_subscription_from_the_command_line(tmp_path: Path) -> None:
    doc = yaml.safe_load(
        Path(__file__).parents[1].joinpath("schemas/examples/demo.yaml").read_text("utf-8")
    )
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True), "utf-8")
    reports = tmp_path / "files/market/out/annual_reports/2025"
    reports.mkdir(parents=True)
    (reports / "r1.pdf").write_bytes(b"%PDF-1.7 annual report")
    (tmp_path / "files/tax").mkdir(parents=True)

    added = exchange(
        tmp_path, "subscription", "add", "410400-SCJG-0002", "--node", "tax_files",
        "--department", "SWJ", "--dir", "in/reports", "--until", "2027-01-31",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "tax_files:/in/reports" in added.stdout

    wrong = exchange(
        tmp_path, "subscription", "add", "410400-SCJG-0002", "--node", "tax_fe",
        "--department", "SWJ", "--until", "2027-01-31",
    )  # fmt: skip
    assert wrong.returncode == 2 and "a database node receives tables" in wrong.stderr

    run = exchange(tmp_path, "run", "410400-SCJG-0002")
    assert run.returncode == 0, run.stderr
    assert "tax_files:/in/reports" in run.stdout and "delivered" in run.stdout
    assert (tmp_path / "files/tax/in/reports/2025/r1.pdf").read_bytes() == b"%PDF-1.7 annual report"

    status = exchange(tmp_path, "status", "410400-SCJG-0002")
    assert "tax_files:/in/reports" in status.stdout and "succeeded" in status.stdout
