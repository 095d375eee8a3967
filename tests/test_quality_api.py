"""Api resources in the quality scores and the daily run report, from their gateway calls:
availability (the admitted calls the upstream answered: ok against upstream failures and
interrupted calls), timeliness (the answered calls within 1 s) and the call counts (calls,
429s, refusals), on SQLite and PostgreSQL alike. ``exchange quality scores`` shows them as a
table of their own, "API resources", after the table resources' (which stay as they were),
and in its JSON and CSV as rows of kind ``api``; the daily report has a section
``api_resources`` for the api resources called that day.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from typer.testing import CliRunner

from exchange import orchestration as orch
from exchange.cli.app import app
from exchange.gateway.models import ApiCall
from exchange.gateway.usage import TIMELY_MS, ApiQuality, api_quality
from exchange.kernel.settings import Settings
from exchange.quality.scores import api_resources, resource_scores
from exchange.workspace import Workspace

A = "410000-SCJG-API-0001"  # called: the figures below
B = "410000-SCJG-API-0002"  # called once, on another day
C = "410000-SCJG-API-0003"  # never called
TABLE = "410400-SCJG-0001"  # a table resource of the demo catalog
SINCE, UNTIL = dt.date(2026, 12, 1), dt.date(2026, 12, 3)


def _api(code: str) -> dict[str, Any]:
    return {
        "code": code, "name": f"接口 {code[-4:]}", "kind": "api", "provider": "prov_gw",
        "share": "conditional",
        "operations": [{"name": "by_uscc", "method": "GET", "path": "/ent/{uscc}",
                        "params": [{"name": "uscc", "in": "path"}]}],
        "fields": [{"name": "uscc", "type": "varchar", "path": "data.uscc"}],
    }  # fmt: skip


def write_catalog(home: Path) -> Path:
    """The demo catalog (table, file and folder resources) and three api resources."""
    doc = yaml.safe_load(
        Path(__file__).parents[1].joinpath("schemas/examples/demo.yaml").read_text("utf-8")
    )
    doc["nodes"].append(
        {"name": "prov_gw", "kind": "http", "department": "SCJG",
         "base_url": "https://prov.example/api", "auth": {"scheme": "none"}}
    )  # fmt: skip
    doc["resources"].extend(_api(code) for code in (A, B, C))
    path = home / "c.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), "utf-8")
    return path


def calls() -> list[dict[str, Any]]:
    """A on 2 December (Shanghai): 20 answered calls, 18 of 10..180 ms and two slow ones
    (1.5 s, 2.5 s); the upstream's own 404 to one (no such record: an answer, passed on);
    3 upstream failures and 1 interrupted call; 2 refused by the quota (429);
    3 refused for their code or parameters; 1 while the quota service was down. Outside the
    period: one answered call of A on 30 November. B: one answered call on 1 December."""
    out: list[dict[str, Any]] = []

    def add(at: str, res: str, status: int, outcome: str, ms: float) -> None:
        out.append({
            "call_id": f"c{len(out)}", "at": dt.datetime.fromisoformat(at), "code_id": 1,
            "subscription_id": 1, "department_code": "SWJ", "resource_code": res,
            "operation": "by_uscc", "status": status, "outcome": outcome, "latency_ms": ms,
            "bytes": 10,
        })  # fmt: skip

    for n in range(1, 19):
        add(f"2026-12-02T02:{n:02d}:00", A, 200, "ok", 10.0 * n)
    add("2026-12-02T02:30:00", A, 200, "ok", 1500.0)
    add("2026-12-02T02:31:00", A, 200, "ok", 2500.0)
    for n in range(3):
        add(f"2026-12-02T03:0{n}:00", A, 502, "upstream", 5000.0)
    add("2026-12-02T03:10:00", A, 0, "interrupted", 0.0)
    add("2026-12-02T03:11:00", A, 404, "upstream", 50.0)  # no such record: answered
    add("2026-12-02T03:20:00", A, 429, "quota", 0.5)
    add("2026-12-02T03:21:00", A, 429, "quota", 0.5)
    add("2026-12-02T03:30:00", A, 401, "refused", 0.2)
    add("2026-12-02T03:31:00", A, 403, "refused", 0.2)
    add("2026-12-02T03:32:00", A, 400, "refused", 0.1)
    add("2026-12-02T03:40:00", A, 503, "unavailable", 0.3)
    add("2026-11-30T15:59:59", A, 200, "ok", 9000.0)  # 30 November in Shanghai
    add("2026-12-01T01:00:00", B, 200, "ok", 3.0)
    return out


def _open(home: Path, url: str) -> Workspace:
    return Workspace.open(write_catalog(home), Settings(home=home, db_url=url))


@pytest.fixture(params=["sqlite", "postgresql"])
def ws(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Workspace]:
    url = (
        f"sqlite:///{tmp_path / 'exchange.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_database")
    )
    with _open(tmp_path, url) as opened:
        with opened.store.session() as s:
            s.execute(sa.insert(ApiCall), calls())
        yield opened


def test_availability_timeliness_and_the_counts_of_an_api_resource(ws: Workspace) -> None:
    (a,) = api_quality(ws.store, [A], SINCE, UNTIL)

    assert (a.calls, a.ok, a.answered_4xx, a.failed) == (31, 20, 1, 4)
    assert (a.quota, a.refused, a.unavailable) == (2, 3, 1)
    assert a.availability == 84.0  # 21 answered of 25 admitted
    assert a.timeliness == 90.5  # 19 of 21 answered within 1 s
    assert a.p95_ms == 1500.0  # nearest rank: the 20th of 21
    assert a.bound_ms == TIMELY_MS == 1000.0


def test_a_resource_without_calls_has_nothing_to_judge_and_each_is_listed_in_order(
    ws: Workspace,
) -> None:
    found = api_quality(ws.store, [C, B, A], SINCE, UNTIL)

    assert [q.resource for q in found] == [C, B, A]
    c, b, _ = found
    assert (c.calls, c.availability, c.timeliness, c.p95_ms) == (0, None, None, None)
    assert (b.calls, b.availability, b.timeliness, b.p95_ms) == (1, 100.0, 100.0, 3.0)


def test_the_period_is_of_shanghai_days(ws: Workspace) -> None:
    (nov30,) = api_quality(ws.store, [A], dt.date(2026, 11, 30), dt.date(2026, 11, 30))
    assert (nov30.calls, nov30.timeliness, nov30.p95_ms) == (1, 0.0, 9000.0)
    (dec1,) = api_quality(ws.store, [A], SINCE, SINCE)
    assert dec1.calls == 0


def test_a_stricter_bound_judges_fewer_calls_timely(ws: Workspace) -> None:
    (a,) = api_quality(ws.store, [A], SINCE, UNTIL, bound_ms=100.0)
    assert a.timeliness == 52.4  # 10, 20, .. 100 ms and the 404 in 50 ms: 11 of 21


def test_the_table_scores_leave_api_resources_to_the_gateway_figures(ws: Workspace) -> None:
    scored = [sc.resource for sc in resource_scores(ws, SINCE, UNTIL)]

    assert TABLE in scored and not {A, B, C} & set(scored)
    assert resource_scores(ws, SINCE, UNTIL, A) == []
    assert api_resources(ws) == [A, B, C]
    assert api_resources(ws, A) == [A] and api_resources(ws, TABLE) == []


def test_an_api_quality_reads_as_a_row_of_kind_api() -> None:
    q = ApiQuality(A, SINCE, UNTIL, 1, 1, 0, 0, 0, 0, 0, 100.0, 100.0, 3.0, 1000.0)
    assert q.as_dict() == {
        "kind": "api", "resource": A, "since": "2026-12-01", "until": "2026-12-03",
        "calls": 1, "ok": 1, "answered_4xx": 0, "refused": 0, "quota": 0, "failed": 0,
        "unavailable": 0,
        "availability": 100.0, "timeliness": 100.0, "p95_ms": 3.0, "bound_ms": 1000.0,
    }  # fmt: skip
    assert "resource" not in q.figures() and q.figures()["calls"] == 1


# -- as a platform engineer reads them ------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path) -> Path:
    with _open(tmp_path, f"sqlite:///{tmp_path / 'exchange.db'}") as opened:
        with opened.store.session() as s:
            s.execute(sa.insert(ApiCall), calls())
    return tmp_path


def exchange(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"EXCHANGE_HOME": str(home), "EXCHANGE_CATALOG": str(home / "c.yaml"), "COLUMNS": "250"}
    result = CliRunner().invoke(app, list(args), env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


PERIOD = ("--since", "2026-12-01", "--until", "2026-12-03")


def test_the_scores_table_has_a_section_for_api_resources(home: Path) -> None:
    shown = exchange(home, "quality", "scores", *PERIOD)

    assert shown.returncode == 0, shown.stderr
    tables, apis = shown.stdout.split("API resources")
    assert "quality scores 2026-12-01 .. 2026-12-03" in tables and TABLE in tables
    assert A not in tables  # the table resources' table is as it was
    assert "answered within 1000 ms" in apis
    (row,) = [line for line in apis.splitlines() if A in line]
    cells = [c for c in row.replace("│", " ").split() if c]
    assert cells == [A, "31", "20", "1", "2", "3", "4", "1", "84.0", "90.5", "1500"]
    (never,) = [line for line in apis.splitlines() if C in line]
    assert never.replace("│", " ").split() == [C, "0", "0", "0", "0", "0", "0", "0", "-", "-", "-"]


def test_one_api_resource_is_shown_alone_and_a_table_resource_as_before(home: Path) -> None:
    one = exchange(home, "quality", "scores", A, *PERIOD)
    assert "API resources" in one.stdout and "quality scores" not in one.stdout
    table = exchange(home, "quality", "scores", TABLE, *PERIOD)
    assert "quality scores" in table.stdout and "API resources" not in table.stdout

    as_csv = exchange(home, "quality", "scores", TABLE, *PERIOD, "--format", "csv")
    header = as_csv.stdout.splitlines()[0]
    assert header == ("resource,since,until,runs,rows,continuity,consistency,normativity,"
                      "authenticity,completeness,validity")  # fmt: skip


def test_json_and_csv_carry_api_resources_as_rows_of_kind_api(home: Path) -> None:
    out = home / "scores.json"
    written = exchange(home, "quality", "scores", *PERIOD, "--format", "json", "--output", str(out))
    assert written.returncode == 0, written.stderr
    docs = json.loads(out.read_text("utf-8"))
    tables = [d for d in docs if "kind" not in d]
    (a,) = [d for d in docs if d.get("resource") == A]
    assert TABLE in {d["resource"] for d in tables}
    assert set(tables[0]) == {"resource", "since", "until", "runs", "rows", "continuity",
                              "consistency", "normativity", "authenticity", "completeness",
                              "validity"}  # fmt: skip
    assert a["kind"] == "api" and a["availability"] == 84.0 and a["timeliness"] == 90.5
    assert (a["calls"], a["quota"], a["refused"]) == (31, 2, 3)

    as_csv = exchange(home, "quality", "scores", *PERIOD, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    (a_row,) = [r for r in rows if r["resource"] == A]
    (t_row,) = [r for r in rows if r["resource"] == TABLE]
    assert a_row["kind"] == "api" and a_row["availability"] == "84.0" and a_row["429"] == "2"
    assert a_row["runs"] == "" and t_row["kind"] == "table" and t_row["runs"] == "0"


def test_the_daily_report_has_the_days_api_resources(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXCHANGE_HOME", str(home))
    monkeypatch.setenv("EXCHANGE_DB_URL", f"sqlite:///{home / 'exchange.db'}")
    next_morning = dt.datetime(2026, 12, 3, 1, 0, tzinfo=dt.UTC)  # 09:00 in Shanghai

    path = orch.daily_report_step(home / "c.yaml", next_morning)

    assert path is not None and path.endswith("runs-2026-12-02.json")
    doc = json.loads(Path(path).read_text("utf-8"))
    assert doc["resources"] == {}  # no run that day
    assert list(doc["api_resources"]) == [A]  # B was called on 1 December, C never
    a = doc["api_resources"][A]
    assert (a["calls"], a["ok"], a["quota"], a["refused"], a["failed"]) == (31, 20, 2, 3, 4)
    assert (a["availability"], a["timeliness"], a["p95_ms"]) == (84.0, 90.5, 1500.0)
