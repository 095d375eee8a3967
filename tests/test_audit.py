"""The hash-chained audit log: appended events verify, and any edit or deletion is pinpointed.

Every test runs on a SQLite metadata store and on PostgreSQL (the production store, migrated
by Alembic from EXCHANGE_DB_URL).
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from exchange import audit
from exchange.kernel.settings import Settings
from exchange.store import AuditEvent, Store
from exchange.store.db import upgrade

EVENTS = [
    ("run.started", "resource:410400-SCJG-0001", {"run": "r1", "full": True}),
    ("delivery.delivered", "subscription:1", {"run": "r1", "node": "tax_fe", "rows": 3000}),
    ("delivery.failed", "subscription:2", {"run": "r1", "error": "列 name 超长", "rows": 0}),
    ("run.finished", "resource:410400-SCJG-0001", {"run": "r1", "status": "succeeded"}),
]
events_table = AuditEvent.__table__


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A migrated metadata store: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/m.db"
    else:
        url = request.getfixturevalue("pg_database")
    s = Store(url)
    yield s
    s.close()


def append_all(store: Store, events: list[tuple[str, str, dict[str, Any]]] = EVENTS) -> list[int]:
    """Append each event in its own transaction, as the engine does; return their ids."""
    for kind, subject, payload in events:
        with store.session() as s:
            audit.append(s, kind, subject, payload)
    return event_ids(store)


def event_ids(store: Store) -> list[int]:
    with store.engine.connect() as conn:
        return list(conn.scalars(sa.select(events_table.c.id).order_by(events_table.c.id)))


def verify(store: Store) -> audit.ChainCheck:
    with store.session() as s:
        return audit.verify(s)


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
    assert verify(store) == audit.ChainCheck(events=0)


def test_appended_events_verify_intact_with_their_count(store: Store) -> None:
    append_all(store)

    assert verify(store) == audit.ChainCheck(events=len(EVENTS))


def test_each_event_links_to_the_previous_hash(store: Store) -> None:
    append_all(store)

    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(events_table.c.prev_hash, events_table.c.hash).order_by(events_table.c.id)
        ).all()
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

    assert verify(store) == audit.ChainCheck(events=1)


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

    check = verify(store)
    assert check.broken_id == ids[1]
    assert check.reason == "its content does not match its hash"


def test_editing_an_event_and_rehashing_it_is_caught_at_the_next_event(store: Store) -> None:
    ids = append_all(store)
    with store.session() as s:
        edited = s.get_one(AuditEvent, ids[1])
        payload = {"run": "r1", "node": "tax_fe", "rows": 1}
        canonical = audit._canonical(edited.at, edited.actor, edited.kind, edited.subject, payload)
        rehashed = audit._link(edited.prev_hash, canonical)

    tamper(store, ids[1], payload=payload, hash=rehashed)

    check = verify(store)
    assert check.broken_id == ids[2]
    assert check.reason == "its prev_hash does not match the previous event's hash"


def test_deleting_a_middle_event_is_reported_at_the_event_after_it(store: Store) -> None:
    ids = append_all(store)

    delete(store, ids[1])

    check = verify(store)
    assert check.broken_id == ids[2]
    assert check.reason == "its prev_hash does not match the previous event's hash"
    assert check.events == 2  # the first event, then the one whose link broke


def test_deleting_the_first_event_is_reported_at_the_new_first_event(store: Store) -> None:
    ids = append_all(store)

    delete(store, ids[0])

    assert verify(store).broken_id == ids[1]


def test_appending_after_a_tampered_event_does_not_heal_the_chain(store: Store) -> None:
    ids = append_all(store)
    tamper(store, ids[0], payload={"run": "r0"})

    append_all(store, EVENTS[:1])

    assert verify(store).broken_id == ids[0]


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
        assert verify(store) == audit.ChainCheck(events=len(EVENTS))

        tamper(store, ids[2], payload={"run": "r1", "error": None, "rows": 0})

        assert verify(store).broken_id == ids[2]
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
        assert f"audit chain intact: {len(EVENTS)} events" in intact.stdout

        tamper(store, ids[1], subject="subscription:9")
        broken = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert broken.returncode == 1
        assert f"audit chain broken at event {ids[1]}" in broken.stderr
    finally:
        store.close()


def _wait_until_a_backend_waits_for_a_lock(store: Store, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    query = sa.text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    while time.monotonic() < deadline:
        with store.engine.connect() as conn:
            if conn.execute(query).scalar():
                return True
        time.sleep(0.05)
    return False


@pytest.mark.postgres
def test_concurrent_appends_on_postgresql_keep_the_chain_intact(pg_database: str) -> None:
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
            _wait_until_a_backend_waits_for_a_lock(store)
        writer.join(timeout=30)

        assert not errors
        assert verify(store) == audit.ChainCheck(events=3)
    finally:
        store.close()


def test_many_concurrent_writers_keep_the_chain_intact(store: Store) -> None:
    """Eight threads appending at once (an API server's thread pool): on SQLite too, a writer
    waits for the chain's lock instead of failing on the unique prev_hash."""
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
    assert verify(store) == audit.ChainCheck(events=80)


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
        with ws.store.session() as s:
            rejected = s.scalars(
                sa.select(AuditEvent.id).where(AuditEvent.kind == "subscription.reject")
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
    assert f"audit chain broken at event {rejected}: its content does not match" in out.stderr
