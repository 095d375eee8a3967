"""The hash-chained audit log: appended events verify, and any edit or deletion is pinpointed
by ``exchange.audit.verify`` (the event's position in the chain and its id).

Every test runs on a SQLite metadata store and on PostgreSQL (the production store, migrated
by Alembic from EXCHANGE_DB_URL). The tampering cases against checkpoints and the witness are
in test_audit_tamper.py.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import pytest
import sqlalchemy as sa

from exchange import audit
from exchange.audit.chain import SUBJECT_MAX, canonical_event, link
from exchange.audit.verify import Report, verify
from exchange.kernel.settings import Settings
from exchange.store import AuditEvent, Store
from exchange.store.db import upgrade

EVENTS: list[tuple[str, str, dict[str, Any]]] = [
    ("run.started", "resource:410400-SCJG-0001", {"run": "r1", "full": True}),
    ("delivery.delivered", "subscription:1", {"run": "r1", "node": "tax_fe", "rows": 3000}),
    ("delivery.failed", "subscription:2", {"run": "r1", "error": "列 name 超长", "rows": 0}),
    ("run.finished", "resource:410400-SCJG-0001", {"run": "r1", "status": "succeeded"}),
]
events_table = cast(sa.Table, AuditEvent.__table__)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Store]:
    """A migrated metadata store: a SQLite file, or a fresh PostgreSQL database; its audit
    key and witness in the test's home, checkpointed only when asked."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/m.db"
    else:
        url = request.getfixturevalue("pg_database")
    monkeypatch.setenv("EXCHANGE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("EXCHANGE_AUDIT_CHECKPOINT_SECONDS", "86400")
    s = Store(url)
    yield s
    s.close()


def append_all(store: Store, events: list[tuple[str, str, dict[str, Any]]] = EVENTS) -> list[int]:
    """Append each event in its own transaction, as the engine does; return the ids of the
    whole chain in its order."""
    for kind, subject, payload in events:
        with store.session() as s:
            audit.append(s, kind, subject, payload)
    assert audit.settle(store)  # commits in quick succession: sealed by the timer thread
    return event_ids(store)


def event_ids(store: Store) -> list[int]:
    with store.engine.connect() as conn:
        query = sa.select(events_table.c.id).order_by(events_table.c.seq)
        return list(conn.scalars(query.where(events_table.c.seq.is_not(None))))


def check(store: Store) -> Report:
    return verify(store, audit.AuditSettings.from_env(Settings.from_env()))


def kinds_at(report: Report) -> list[tuple[str, str]]:
    return [(f.kind, f.where) for f in report.findings]


def tamper(store: Store, event_id: int, **values: Any) -> None:
    """Change a stored event behind the engine's back, as someone with database access could."""
    with store.engine.begin() as conn:
        changed = conn.execute(
            sa.update(events_table).where(events_table.c.id == event_id).values(**values)
        )
        assert changed.rowcount == 1


def delete(store: Store, event_id: int) -> None:
    with store.engine.begin() as conn:
        conn.execute(sa.delete(events_table).where(events_table.c.id == event_id))


# -- an untouched chain -----------------------------------------------------------------------


def test_an_empty_log_is_intact(store: Store) -> None:
    report = check(store)

    assert report.intact
    assert (report.events, report.checkpoints, report.unchained) == (0, 0, 0)


def test_appended_events_verify_intact_with_their_count(store: Store) -> None:
    append_all(store)

    report = check(store)

    assert report.findings == []
    assert report.events == len(EVENTS)
    assert report.unsealed == len(EVENTS)  # no checkpoint asked for yet


def test_each_event_links_to_the_previous_hash_in_sequence_order(store: Store) -> None:
    append_all(store)

    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(events_table.c.seq, events_table.c.prev_hash, events_table.c.hash)
            .order_by(events_table.c.seq)
        ).all()  # fmt: skip
    assert [r.seq for r in rows] == list(range(1, len(EVENTS) + 1))
    assert rows[0].prev_hash == audit.GENESIS
    assert [r.prev_hash for r in rows[1:]] == [r.hash for r in rows[:-1]]
    assert len({r.hash for r in rows}) == len(rows)


def test_payloads_that_are_not_plain_json_still_verify(store: Store) -> None:
    append_all(
        store,
        [
            (
                "watermark.advanced",
                "subscription:1",
                {
                    "value": dt.datetime(2026, 3, 2, 9, 0, 0, 123456),
                    "capital": Decimal("1234567.89"),
                    "ratio": 0.1,
                    "fields": ["id", "名称"],
                    "nested": {"b": None, "a": [1, 2.5, "三"]},
                },
            )
        ],
    )

    report = check(store)

    assert report.findings == []
    assert report.events == 1


def test_a_long_subject_with_control_characters_is_stored_bounded_and_verifies(
    store: Store,
) -> None:
    """A URL path of any length and bytes (an API call's subject) cannot fail the write."""
    append_all(store, [("api.call", "GET /a\x00b/" + "x" * 500, {"status": 200})])

    with store.engine.connect() as conn:
        subject = conn.execute(sa.select(events_table.c.subject)).scalar_one()
    assert subject.startswith("GET /a\\x00b/x")
    assert len(subject) == SUBJECT_MAX and subject.endswith("…")
    assert check(store).intact


# -- a tampered chain -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"payload": {"run": "r1", "node": "tax_fe", "rows": 2999}},
        {"subject": "subscription:9"},
        {"kind": "delivery.failed"},
        {"actor": "someone"},
        {"at": dt.datetime(2020, 1, 1)},
    ],
    ids=["payload", "subject", "kind", "actor", "at"],
)
def test_editing_one_event_is_reported_at_exactly_that_event(
    store: Store, change: dict[str, Any]
) -> None:
    ids = append_all(store)

    tamper(store, ids[1], **change)

    report = check(store)
    assert kinds_at(report) == [("edited", f"event 2 (id {ids[1]})")]
    assert "does not match its hash" in report.findings[0].message


def test_editing_an_event_and_rehashing_it_is_caught_at_the_next_event(store: Store) -> None:
    ids = append_all(store)
    with store.session() as s:
        ev = s.get_one(AuditEvent, ids[1])
        payload = {"run": "r1", "node": "tax_fe", "rows": 1}
        rehashed = link(
            str(ev.prev_hash), canonical_event(ev.at, ev.actor, ev.kind, ev.subject, payload)
        )

    tamper(store, ids[1], payload=payload, hash=rehashed)

    report = check(store)
    assert kinds_at(report) == [("link", f"event 3 (id {ids[2]})")]
    assert "its prev_hash is not that event's hash" in report.findings[0].message


def test_deleting_a_middle_event_is_reported_at_the_event_after_it(store: Store) -> None:
    ids = append_all(store)

    delete(store, ids[1])

    report = check(store)
    assert kinds_at(report) == [("deleted", f"event 3 (id {ids[2]})")]
    assert report.findings[0].message.startswith("event 2 missing before event 3")
    assert report.events == len(EVENTS) - 1


def test_deleting_the_first_event_is_reported_at_the_new_first_event(store: Store) -> None:
    ids = append_all(store)

    delete(store, ids[0])

    report = check(store)
    assert kinds_at(report) == [("deleted", f"event 2 (id {ids[1]})")]
    assert report.findings[0].message.startswith("event 1 missing before event 2")


def test_appending_after_a_tampered_event_does_not_heal_the_chain(store: Store) -> None:
    ids = append_all(store)
    tamper(store, ids[0], payload={"run": "r0"})

    append_all(store, EVENTS[:1])

    assert kinds_at(check(store)) == [("edited", f"event 1 (id {ids[0]})")]


def test_a_log_rewritten_wholesale_reports_a_bounded_number_of_findings(store: Store) -> None:
    """Every event edited: the first ones are named, the rest summed up in one line."""
    from exchange.audit.verify import EVENT_FINDINGS_MAX

    append_all(store, [("api.call", f"GET /{i}", {"i": i}) for i in range(EVENT_FINDINGS_MAX + 5)])
    with store.engine.begin() as conn:
        conn.execute(sa.update(events_table).values(actor="someone"))

    findings = check(store).findings

    assert len(findings) == EVENT_FINDINGS_MAX + 1
    assert findings[-1].message == "... and 5 more events edited"


# -- PostgreSQL as the metadata store ---------------------------------------------------------


@pytest.mark.postgres
def test_exchange_db_url_postgresql_is_migrated_and_audited(
    pg_database: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("EXCHANGE_DB_URL", pg_database)
    monkeypatch.setenv("EXCHANGE_HOME", str(tmp_path))
    store = Store(Settings.from_env().db_url)
    try:
        assert store.engine.dialect.name == "postgresql"
        assert upgrade(store.engine) is False  # Store already brought it to the head revision
        ids = append_all(store)
        assert check(store).intact

        tamper(store, ids[2], payload={"run": "r1", "error": None, "rows": 0})

        assert kinds_at(check(store)) == [("edited", f"event 3 (id {ids[2]})")]
    finally:
        store.close()


@pytest.mark.postgres
def test_cli_audit_verify_on_postgresql_exits_1_naming_the_tampered_event(
    pg_database: str, tmp_path: Path
) -> None:
    env = {**os.environ, "EXCHANGE_DB_URL": pg_database, "EXCHANGE_HOME": str(tmp_path)}
    command = [sys.executable, "-m", "exchange", "audit", "verify"]
    store = Store(pg_database)
    try:
        ids = append_all(store)

        intact = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert intact.returncode == 0, intact.stderr
        assert f"audit log intact: {len(EVENTS)} events, no checkpoint yet" in intact.stdout

        tamper(store, ids[1], subject="subscription:9")
        broken = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert broken.returncode == 1
        assert f"event 2 (id {ids[1]}) was edited" in broken.stderr
    finally:
        store.close()


@pytest.mark.postgres
def test_an_appender_on_postgresql_does_not_wait_for_another_open_transaction(
    pg_database: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Appenders take no lock: a second writer commits while the first is still open, and
    the chain holds both once the first commits."""
    monkeypatch.setenv("EXCHANGE_HOME", str(tmp_path))
    store = Store(pg_database)
    try:
        append_all(store, EVENTS[:1])
        errors: list[BaseException] = []

        def second_writer() -> None:
            try:
                with store.session() as s:
                    audit.append(s, "run.started", "resource:B", {"run": "rB"})
            except BaseException as exc:  # reported by the assertion below
                errors.append(exc)

        with store.session() as first:
            audit.append(first, "run.started", "resource:A", {"run": "rA"})
            writer = threading.Thread(target=second_writer)
            writer.start()
            writer.join(timeout=30)
            assert not writer.is_alive(), "the second appender waited for the first"

        assert not errors
        assert audit.settle(store)  # the second commit, just after the first: the timer's
        report = check(store)
        assert report.findings == []
        assert (report.events, report.unchained) == (3, 0)
    finally:
        store.close()


def test_many_concurrent_writers_keep_the_chain_intact(store: Store) -> None:
    """Eight threads appending at once (an API server's thread pool): every event is chained
    once, none lost, the chain intact."""
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        try:
            for j in range(10):
                with store.session() as s:
                    audit.append(s, "api.call", f"GET /w{i}", {"j": j})
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert not errors
    audit.seal(store)  # whatever a sealer that lost the race left for the next one
    report = check(store)
    assert report.findings == []
    assert (report.events, report.unchained) == (80, 0)


def test_altering_a_workflow_event_in_the_database_is_named_by_exchange_audit_verify(
    tmp_path: Path,
) -> None:
    from exchange.workflow import service
    from tests.workflow_setup import add_people, form, open_city

    ws = open_city(tmp_path)
    try:
        people = add_people(ws)
        sid = service.apply(ws, people["tax"], form()).id
        service.review(ws, people["market"], sid, approve=False, reason="用途不明确")
        # chained within a moment of its commit (an event edited before that would be
        # hashed as edited: the window the sealer's bounded delay leaves)
        assert audit.settle(ws.store)
        with ws.store.session() as s:
            rejected, seq = s.execute(
                sa.select(AuditEvent.id, AuditEvent.seq).where(
                    AuditEvent.kind == "subscription.reject"
                )
            ).one()
        # someone with database access turns the rejection into an approval
        tamper(ws.store, rejected, payload={"from": "under_review", "to": "filing"})
    finally:
        ws.close()
    env = {**os.environ, "EXCHANGE_HOME": str(tmp_path),
           "EXCHANGE_DB_URL": f"sqlite:///{tmp_path / 'exchange.db'}"}  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-m", "exchange", "audit", "verify"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert out.returncode == 1
    assert f"event {seq} (id {rejected}) was edited: its content (subscription.reject" in (
        out.stderr
    )


# -- keygen and seal --------------------------------------------------------------------------


def test_keygen_writes_a_key_pair_and_prints_where_and_its_id(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from exchange.audit import keys
    from exchange.cli.app import app

    out = tmp_path / "keys" / "audit.key"

    made = CliRunner().invoke(app, ["audit", "keygen", "--out", str(out)])

    assert made.exit_code == 0, made.output
    key_id = keys.key_id(keys.load_public(Path(f"{out}.pub")))
    assert made.stdout.splitlines() == [
        f"private key: {out}",
        f"public key:  {out}.pub",
        f"key id:      {key_id}",
    ]
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    again = CliRunner().invoke(app, ["audit", "keygen", "--out", str(out)])
    assert again.exit_code != 0
    assert out.read_bytes()  # not overwritten
    assert key_id == keys.key_id(keys.load_public(Path(f"{out}.pub")))


def test_seal_chains_what_is_pending_and_prints_the_checkpoint(
    store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from exchange.cli.app import app

    monkeypatch.setenv("EXCHANGE_DB_URL", store.engine.url.render_as_string(hide_password=False))
    append_all(store)
    runner = CliRunner()

    sealed = runner.invoke(app, ["audit", "seal"])

    assert sealed.exit_code == 0, sealed.output
    report = check(store)
    assert report.intact and (report.checkpoints, report.witnessed) == (1, 1)
    assert f"checkpoint 1 (events 1-{len(EVENTS)}, {len(EVENTS)} events)" in sealed.stdout
    assert f"signed by key {report.key_id}, witnessed in {report.witness}" in sealed.stdout
    again = runner.invoke(app, ["audit", "seal"])
    assert again.exit_code == 0, again.output
    assert "nothing new to seal since the last checkpoint" in again.stdout


def test_verify_without_any_public_key_says_how_to_give_one(store: Store, tmp_path: Path) -> None:
    """Checkpoints were signed, the key file is gone and no auditor's copy was given: an
    error to fix (exit 2 from the CLI), not a finding about the log."""
    from exchange.kernel.errors import BadInput

    with store.session() as s:
        audit.append(s, "run.finished", "resource:R", {"run": "r1"}, checkpoint=True)
    for made in (tmp_path / "home").glob("audit-signing.key*"):
        made.unlink()

    with pytest.raises(BadInput, match="no public key to check the checkpoints' signatures"):
        check(store)
