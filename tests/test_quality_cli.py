"""``exchange quality`` as a platform engineer, a provider and a requester use it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml
from typer.testing import CliRunner

from exchange.cli.app import app
from exchange.demo.quality import damage_provider
from exchange.demo.run import create_provider
from tests.test_cli import exchange as exchange_process

RESOURCE = "410400-SCJG-0001"


def exchange(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The command in this process (a subprocess each costs seconds); exit codes of the
    error hierarchy are checked through ``exchange_process``."""
    env = {"EXCHANGE_HOME": str(home), "EXCHANGE_CATALOG": str(home / "c.yaml"), "COLUMNS": "250"}
    result = CliRunner().invoke(app, list(args), env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def test_quarantine_tickets_error_reports_scores_and_a_held_run(tmp_path: Path) -> None:
    doc = yaml.safe_load(
        Path(__file__).parents[1].joinpath("schemas/examples/demo.yaml").read_text("utf-8")
    )
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True), "utf-8")
    create_provider(tmp_path / "provider.db", 800)
    assert damage_provider(tmp_path / "provider.db", 800) == 3  # ids 321, 500, 777
    added = exchange(
        tmp_path, "subscription", "add", RESOURCE, "--node", "hrss_fe", "--department", "RSJ",
        "--fields", "id,uscc,name,phone", "--until", "2027-01-31",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr

    run = exchange(tmp_path, "run", RESOURCE)
    assert run.returncode == 0, run.stderr
    assert "extracted 800, valid 797, quarantined 3" in run.stdout
    assert f"3 rows quarantined: exchange quality quarantine {RESOURCE}" in run.stdout
    assert "stale: newest row 2024-01-01" in run.stdout  # the demo data is from January 2024

    held = exchange(tmp_path, "quality", "quarantine", RESOURCE)
    assert held.returncode == 0, held.stderr
    assert "3 rows held" in held.stdout
    assert "uscc:uscc=" in held.stdout and "phone:phone=****" in held.stdout
    assert "resident_id:id_card=410****" in held.stdout

    tickets = exchange(tmp_path, "quality", "tickets")
    assert tickets.returncode == 0, tickets.stderr
    assert "open" in tickets.stdout and "market_fe" in tickets.stdout
    assert "23:59:59" in tickets.stdout  # the deadline, end of the 3rd working day
    answered = exchange(
        tmp_path, "quality", "ticket", "answer", "1",
        "--resolution", "fixed_at_source", "--reason", "已更正",
    )  # fmt: skip
    assert answered.returncode == 0 and "answered (fixed_at_source)" in answered.stdout
    wrong = exchange_process(tmp_path, "quality", "ticket", "answer", "1", "--resolution",
                             "maybe", "--reason", "x")  # fmt: skip
    assert wrong.returncode == 2 and "resolution must be one of" in wrong.stderr

    report = exchange(
        tmp_path, "quality", "error-report", "add", RESOURCE, "--keys", "5,6",
        "--fields", "phone", "--description", "空号", "--subscription", "1",
    )  # fmt: skip
    assert report.returncode == 0, report.stderr
    assert "error report 1" in report.stdout and "the provider answers by" in report.stdout
    listed = exchange(tmp_path, "quality", "error-report", "list")
    assert "hrss_fe" in listed.stdout and "0/1 subscribers" in listed.stdout

    out = tmp_path / "scores.json"
    scores = exchange(
        tmp_path, "quality", "scores", RESOURCE, "--format", "json", "--output", str(out)
    )
    assert scores.returncode == 0, scores.stderr
    (score,) = json.loads(out.read_text("utf-8"))
    assert score["resource"] == RESOURCE and score["rows"] == 800
    assert score["authenticity"] == 99.8 and score["normativity"] == 99.9
    assert score["validity"] == 0.0  # its one run was stale
    shown = exchange(tmp_path, "quality", "scores")
    assert "continuity" in shown.stdout and "authenticity" in shown.stdout

    # A stricter platform: more than 0.1 % bad rows holds the whole run back.
    (table,) = [r for r in doc["resources"] if r["code"] == RESOURCE]
    table["quality"]["max_bad_ratio"] = 0.001
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True), "utf-8")
    strict = exchange_process(tmp_path, "run", RESOURCE, "--full")
    assert strict.returncode == 1
    assert "HELD BACK, nothing delivered: 3 of 800 rows bad (0.4%)" in strict.stdout
    status = exchange(tmp_path, "status", RESOURCE)
    assert "held" in status.stdout


def test_gx_report_of_the_last_run(tmp_path: Path) -> None:
    doc = yaml.safe_load(
        Path(__file__).parents[1].joinpath("schemas/examples/demo.yaml").read_text("utf-8")
    )
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True), "utf-8")
    create_provider(tmp_path / "provider.db", 400)
    damage_provider(tmp_path / "provider.db", 400)  # id 321: a phone number too short
    added = exchange(
        tmp_path, "subscription", "add", RESOURCE, "--node", "hrss_fe", "--department", "RSJ",
        "--fields", "id,uscc,name,phone", "--until", "2027-01-31",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr  # (a run nobody receives reads nothing)
    assert exchange(tmp_path, "run", RESOURCE).returncode == 0

    report = exchange(tmp_path, "quality", "report", RESOURCE, "--limit", "1000")

    assert report.returncode == 0, report.stderr
    assert "400 rows" in report.stdout
    assert "expect_column_values_to_match_regex" in report.stdout and "fail" in report.stdout
    assert (tmp_path / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html").exists()
    assert (tmp_path / "gx" / "expectations" / f"{RESOURCE}.json").exists()
