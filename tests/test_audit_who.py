"""``exchange audit who``: who received or called what, when, from the audit log. After the
demo's runs (tables and files, two departments) and some gateway calls stored by the
gateway's own flusher path, it answers for a resource, a subscription and a department (by
code or by name): when (Asia/Shanghai), who (department, node, code), what (resource,
subscription) and how (rows or files in which run, calls of which operation with which status,
how many). It reads only the window's range of the log.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from exchange.audit.who import Receipt, Subject, parse_subject, who
from exchange.cli.app import app as cli
from exchange.gateway.spool import DONE, Line, store_batch
from exchange.kernel.clock import utcnow
from exchange.kernel.errors import BadInput
from exchange.store import Store
from exchange.store.models import AuditEvent

TABLE = "410400-SCJG-0001"  # the demo's table resource: subscriptions 1 (SWJ) and 2 (RSJ)
FILES = "410400-SCJG-0002"  # its files: subscriptions 3 (SWJ) and 4 (RSJ)
API = "410400-SCJG-API-0001"  # an API resource called through the gateway
DEPARTMENTS = {"SCJG": "市场监督管理局", "SWJ": "税务局", "RSJ": "人力资源和社会保障局"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The demo run once, then gateway calls stored as the flusher stores them: SWJ's code 7
    (subscription 5) calls ``by_uscc`` three times (one refused by quota), RSJ's code 8
    (subscription 6) once."""
    from exchange.demo.run import run_demo

    base = tmp_path_factory.mktemp("who-demo")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EXCHANGE_AUDIT_KEY_FILE", str(base / "keys" / "audit-signing.key"))
        mp.setenv("EXCHANGE_AUDIT_WITNESS", str(base / "witness" / "audit-witness.jsonl"))
        run_demo(base / "home", rows=300, say=lambda _: None)
        now = time.time()
        calls = [
            Line(DONE, "c1", now - 3, API, "by_uscc", code=7, sub=5, dept="SWJ", st=200, out="ok",
                 ms=3.0, b=120),
            Line(DONE, "c2", now - 2, API, "by_uscc", code=7, sub=5, dept="SWJ", st=200, out="ok",
                 ms=4.0, b=130),
            Line(DONE, "c3", now - 1, API, "by_uscc", code=7, sub=5, dept="SWJ", st=429,
                 out="quota", ms=0.5),
            Line(DONE, "c4", now - 1, API, "by_uscc", code=8, sub=6, dept="RSJ", st=200, out="ok",
                 ms=2.0, b=99),
        ]  # fmt: skip
        st = Store(f"sqlite:///{base / 'home' / 'exchange.db'}")
        try:
            with st.session() as s:
                store_batch(s, "spool-test", calls, None)
        finally:
            st.close()
        yield base


@pytest.fixture
def store(demo: Path) -> Iterator[Store]:
    st = Store(f"sqlite:///{demo / 'home' / 'exchange.db'}")
    yield st
    st.close()


def ask(store: Store, subject: str, since: dt.datetime | None = None) -> list[Receipt]:
    until = utcnow() + dt.timedelta(minutes=1)
    with store.session() as s:
        report = who(
            s, parse_subject(subject, DEPARTMENTS), since or until - dt.timedelta(days=1),
            until, DEPARTMENTS,
        )  # fmt: skip
    return report.receipts


def test_a_resource_lists_each_delivery_of_each_run_to_each_department(store: Store) -> None:
    got = ask(store, TABLE)
    assert sorted((r.subscription_id, r.department, r.node, r.status, r.rows) for r in got) == [
        (1, "SWJ", "tax_fe", "delivered", 6), (1, "SWJ", "tax_fe", "delivered", 300),
        (2, "RSJ", "hrss_fe", "delivered", 6), (2, "RSJ", "hrss_fe", "delivered", 300),
    ]  # fmt: skip
    assert [r.rows for r in got] == [300, 300, 6, 6]  # oldest first: the full run, then the next
    first = min(got, key=lambda r: r.at)
    assert first.department_name in ("税务局", "人力资源和社会保障局")
    assert first.resource == TABLE and first.channel == "table" and first.target == "enterprise"
    assert first.how.startswith("delivered 300 rows in run r")
    assert len({r.run for r in got}) == 2  # the full run and the incremental one


def test_a_subscription_of_files_lists_the_files_delivered(store: Store) -> None:
    got = ask(store, "subscription:3")
    assert [(r.channel, r.rows, r.node, r.target) for r in got] == [
        ("files", 11, "tax_files", "/in/annual_reports"),
        ("files", 3, "tax_files", "/in/annual_reports"),
    ]
    assert all(r.resource == FILES and r.department == "SWJ" for r in got)
    assert got[0].how.startswith("delivered 11 files in run r")
    assert ask(store, "3") == got  # a bare number is a subscription


def test_a_department_by_name_gets_its_deliveries_and_its_gateway_calls(store: Store) -> None:
    """税务局 (SWJ): its table and file deliveries, and its code's calls grouped per day,
    operation and status: two answered, one refused by its quota."""
    got = ask(store, "税务局")
    assert got == ask(store, "SWJ") == ask(store, "department:SWJ")
    deliveries = [r for r in got if r.channel != "api"]
    assert sorted((r.subscription_id, r.rows) for r in deliveries) == [
        (1, 6),
        (1, 300),
        (3, 3),
        (3, 11),
    ]
    calls = sorted((r.status, r.calls, r.bytes, r.code_id) for r in got if r.channel == "api")
    assert calls == [("200 ok", 2, 250, 7), ("429 quota", 1, 0, 7)]
    answered = next(r for r in got if r.status == "200 ok")
    assert answered.how == "2 calls of by_uscc: 200 ok"
    assert answered.last_at > answered.at and answered.department_name == "税务局"
    assert all(r.department == "SWJ" for r in got)


def test_an_api_resource_and_subscription_list_their_calls(store: Store) -> None:
    by_resource = ask(store, API)
    assert sorted((r.department, r.status, r.calls) for r in by_resource) == [
        ("RSJ", "200 ok", 1),
        ("SWJ", "200 ok", 2),
        ("SWJ", "429 quota", 1),
    ]
    by_sub = ask(store, "subscription:6")
    assert [(r.department, r.code_id, r.calls, r.operation) for r in by_sub] == [
        ("RSJ", 8, 1, "by_uscc")
    ]


def test_a_window_before_everything_reads_nothing(store: Store) -> None:
    """The window becomes a range of event ids first: a day long before the demo reads no
    event at all."""
    long_ago = dt.datetime(2020, 1, 1)
    with store.session() as s:
        report = who(s, Subject("resource", TABLE), long_ago, long_ago + dt.timedelta(days=1))
    assert report.receipts == [] and report.events_read == 0


def test_a_narrow_window_reads_only_its_range(store: Store) -> None:
    """A window holding only the incremental run's deliveries reads fewer events than the log
    holds, and answers with that run alone."""
    everything = ask(store, TABLE)
    last_run = max(everything, key=lambda r: r.at).run
    second = [r for r in everything if r.run == last_run]
    since = min(r.at for r in second)
    with store.session() as s:
        report = who(s, Subject("resource", TABLE), since, since + dt.timedelta(seconds=5))
        events = s.execute(sa.select(sa.func.count()).select_from(AuditEvent)).scalar_one()
    assert {r.run for r in report.receipts} == {last_run}
    assert report.events_read < events


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("subscription:12", "subscription", "12"),
        ("12", "subscription", "12"),
        ("SWJ", "department", "SWJ"),
        ("人力资源和社会保障局", "department", "RSJ"),
        ("department:XYZ", "department", "XYZ"),
        ("410400-SCJG-0001", "resource", "410400-SCJG-0001"),
        ("resource:SWJ", "resource", "SWJ"),
    ],
)
def test_the_subject_is_read_as_a_subscription_department_or_resource(
    text: str, kind: str, value: str
) -> None:
    assert parse_subject(text, DEPARTMENTS) == Subject(kind, value)


def test_a_subscription_that_is_not_a_number_is_refused() -> None:
    with pytest.raises(BadInput, match="subscription 'x' is not a subscription id"):
        parse_subject("subscription:x", DEPARTMENTS)


def cli_env(demo: Path) -> dict[str, str]:
    return {
        "EXCHANGE_HOME": str(demo / "home"),
        "EXCHANGE_DB_URL": f"sqlite:///{demo / 'home' / 'exchange.db'}",
        "COLUMNS": "250",
    }


def test_exchange_audit_who_prints_when_who_what_how(demo: Path) -> None:
    """The table: Shanghai times, the department's name and code with the node or code, the
    resource and subscription, and what was delivered or called."""
    result = CliRunner().invoke(
        cli, ["audit", "who", "税务局", "--catalog", str(demo / "home" / "catalog.yaml")],
        env=cli_env(demo),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = result.output
    assert "department SWJ" in out and "(Asia/Shanghai)" in out
    assert "税务局 (SWJ)" in out
    assert "tax_fe.enterprise" in out and "tax_files:/in/annual_reports" in out
    assert f"{TABLE} / subscription 1" in out
    assert "delivered 300 rows in run r" in out and "delivered 11 files in run r" in out
    assert "2 calls of by_uscc: 200 ok" in out and "code 7" in out


def test_exchange_audit_who_json_gives_one_object_a_line(demo: Path) -> None:
    result = CliRunner().invoke(
        cli, ["audit", "who", "subscription:2", "--json"], env=cli_env(demo)
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [(r["subscription_id"], r["department"], r["rows"]) for r in rows] == [
        (2, "RSJ", 300),
        (2, "RSJ", 6),
    ]
    assert rows[0]["at"].endswith("Z") and "T" in rows[0]["at_shanghai"]
    assert rows[0]["department_name"] == "人力资源和社会保障局"  # from the subscription's row


def test_exchange_audit_who_says_when_nothing_was_found(demo: Path) -> None:
    result = CliRunner().invoke(
        cli, ["audit", "who", TABLE, "--since", "2020-01-01", "--until", "2020-01-31"],
        env=cli_env(demo),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "nothing delivered to or called by resource" in result.output


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def bare_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A migrated store of each dialect, its audit log sealed with a key of the test's own."""
    from exchange.audit.seal import configure
    from exchange.audit.settings import AuditSettings

    url = (
        f"sqlite:///{tmp_path / 'm.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_database")
    )
    st = Store(url)
    configure(st, AuditSettings(key_file=tmp_path / "k.key", witness=tmp_path / "w.jsonl"))
    yield st
    st.close()


def test_who_answers_alike_on_sqlite_and_postgresql(bare_store: Store) -> None:
    """A delivery to a subscription and gateway calls, written as the engine writes them: the
    resource, the subscription and the department each find theirs."""
    from exchange import audit
    from exchange.store.models import Subscription

    with bare_store.session() as s:
        sub = Subscription(
            resource_code=TABLE, subscriber_node="tax_fe", target_table="enterprise",
            fields=["id"], valid_until=dt.date(2030, 1, 1), department_code="SWJ",
            department_name="税务局",
        )  # fmt: skip
        s.add(sub)
        s.flush()
        sid = sub.id
    with bare_store.session() as s:
        payload = {"run": "r1", "node": "tax_fe", "table": "enterprise", "rows": 42}
        audit.append(s, "delivery.delivered", f"subscription:{sid}", payload)
    now = time.time()
    with bare_store.session() as s:
        store_batch(s, "spool", [
            Line(DONE, "x1", now, f"{API}_%", "op", code=3, sub=sid + 1, dept="SWJ", st=200,
                 out="ok"),
            Line(DONE, "x2", now, API, "op", code=4, sub=sid + 2, dept="RSJ", st=200, out="ok"),
        ], None)  # fmt: skip
    assert [(r.rows, r.department) for r in ask(bare_store, TABLE)] == [(42, "SWJ")]
    assert [r.how for r in ask(bare_store, f"subscription:{sid}")] == [
        "delivered 42 rows in run r1"
    ]
    assert sorted((r.channel, r.resource) for r in ask(bare_store, "SWJ")) == [
        ("api", f"{API}_%"),
        ("table", TABLE),
    ]
    # A resource code's LIKE characters are matched as themselves.
    assert [r.resource for r in ask(bare_store, API)] == [API]
