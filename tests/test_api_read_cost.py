"""What an API read costs the store, pinned so that it cannot grow back: a cached token is
still refused as soon as it is revoked, the reads' events are appended in batches (one chain
lock and one commit for all the calls waiting), and a page of subscriptions takes as many
queries whatever its size."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from exchange import audit
from exchange.api.calls import GroupAudit
from exchange.store.locks import serialize
from exchange.store.models import AuditEvent
from exchange.workflow import service as svc
from exchange.workflow.users import principal_of, revoke_tokens
from exchange.workspace import Workspace
from tests.test_api import serve
from tests.workflow_setup import add_people, form, open_city, tokens


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def ws(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Workspace]:
    url = None if request.param == "sqlite" else request.getfixturevalue("pg_database")
    workspace = open_city(tmp_path, url)
    add_people(workspace)
    yield workspace
    workspace.close()


@contextmanager
def statements(ws: Workspace, *, this_thread: bool = False) -> Iterator[list[str]]:
    """Every SQL statement the store's engine sends inside the block (a list that fills up);
    with ``this_thread``, only the calling thread's, once this process's pending seal is done
    (the audit sealer's timer thread links earlier commits' events meanwhile, and those
    statements are not a read's)."""
    sent: list[str] = []
    caller = threading.get_ident()
    if this_thread:
        audit.settle(ws.store)

    def seen(*args: Any) -> None:
        if not this_thread or threading.get_ident() == caller:
            sent.append(args[2])

    sa.event.listen(ws.store.engine, "before_cursor_execute", seen)
    try:
        yield sent
    finally:
        sa.event.remove(ws.store.engine, "before_cursor_execute", seen)


def commits(ws: Workspace) -> list[None]:
    done: list[None] = []
    sa.event.listen(ws.store.engine, "commit", lambda _conn: done.append(None))
    return done


def api_calls(ws: Workspace) -> list[tuple[str, str, int]]:
    with ws.store.session() as s:
        assert audit.check_chain(s).broken_id is None
        query = sa.select(AuditEvent).where(AuditEvent.kind == "api.call").order_by(AuditEvent.id)
        events = s.scalars(query).all()
        return [(e.actor, e.subject, e.payload["status"]) for e in events]


def test_a_revoked_token_is_refused_at_once_though_the_server_remembers_it(
    ws: Workspace,
) -> None:
    token = tokens(ws)["tax"]
    for base in serve(ws):
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as tax:
            assert tax.get("/me").status_code == 200  # authenticated once, then remembered
            assert tax.get("/catalog/resources").status_code == 200
            with ws.store.session() as s:
                revoke_tokens(s, "tax", "test")  # by another process, say the CLI
            r = tax.get("/me")
            assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
            # a read that its action refuses (no such subscription) is refused as revoked too
            assert tax.get("/subscriptions/999").status_code == 401
            assert tax.get("/calendar/deadline?start=2026-09-30T10:00&working_days=5"
                           ).status_code == 401  # fmt: skip
    calls = api_calls(ws)
    assert ("tax", "GET /me", 200) in calls
    # each refused read is audited once, as the uncached path audits an unknown token
    assert calls.count(("anonymous", "GET /me", 401)) == 1
    assert calls.count(("anonymous", "GET /subscriptions/999", 401)) == 1
    assert ("tax", "GET /subscriptions/999", 404) not in calls


def test_reads_waiting_together_are_audited_in_one_commit(
    ws: Workspace,
) -> None:
    group = GroupAudit(ws.store)
    e = audit.Event("api.call", "GET /me", {"status": 200, "user_id": None}, "tax")
    group.append(e)  # the batching thread started, the chain has a head
    done = commits(ws)

    # While another writer holds the chain's lock, 20 reads queue up behind it...
    with statements(ws) as sent:
        holder = ws.store.session()
        s: Session = holder.__enter__()
        if s.get_bind().dialect.name == "postgresql":
            # Appends take no lock of the store's (they are chained after commit): a writer
            # holding the table keeps the batch waiting instead.
            s.execute(sa.text("LOCK TABLE audit_events IN SHARE MODE"))
        else:
            serialize(s)  # SQLite's one write lock
        waiting = [threading.Thread(target=group.append, args=(e,)) for _ in range(20)]
        for t in waiting:
            t.start()
        # the first batch (however many it took) waits on the lock, the rest queue
        until = time.monotonic() + 30
        while group.unwritten() < 20 and time.monotonic() < until:
            threading.Event().wait(0.01)
        assert group.unwritten() == 20
        holder.__exit__(None, None, None)
        for t in waiting:
            t.join(timeout=30)

    # ...and go in at most two batches: one for the first, one for everyone behind it.
    # Commits: the holder's own, the batches', and the sealer's round after each batch
    # (exchange.audit.seal links the committed events; no append waits for it).
    assert len(done) <= 5, len(done)
    inserts = [q for q in sent if q.lstrip().upper().startswith("INSERT INTO AUDIT_EVENTS")]
    assert len(inserts) <= 2
    assert len(api_calls(ws)) == 21


def test_a_page_of_subscriptions_takes_as_many_queries_whatever_its_size(
    ws: Workspace,
) -> None:
    with ws.store.session() as s:
        tax = principal_of(s, "tax")
    for i in range(12):
        svc.apply(ws, tax, form("OPEN" if i % 2 else "COND", target_table=f"t{i}"))

    def queries(limit: int) -> int:
        with statements(ws, this_thread=True) as sent:
            total, items = svc.list_page(ws, tax, limit=limit)
        assert total == 12 and len(items) == limit
        return len(sent)

    assert queries(2) == queries(12)
