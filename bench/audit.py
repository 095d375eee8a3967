"""Audited events a second on PostgreSQL, with several writer processes appending at once.

    python -m bench.audit [--writers 8] [--events 2000] [--groups 1,20] [--async-commit] [--quick]

A fresh PostgreSQL database is made on 127.0.0.1 (dropped at the end) and migrated, a
temporary ``EXCHANGE_HOME`` holds the signing key and the witness, and for each scheme
``--writers`` processes are started that each append ``--events`` events, in two scenarios:
every event in a transaction of its own (as the engine's single appends do), and events in
transactions of 20 (``--groups``: as the API's GroupAudit batches its calls' events and the
gateway's flusher its calls'); they start together (a shared start time) and the rate is
the events over the wall-clock time from that start until the last event is chained (and,
for the sealed scheme, checkpointed and witnessed):

- ``sealed``: ``exchange.audit.append_many`` as it is: no lock, chained after commit by the
  sealer in batches (one process at a time holds the sealer lease and seals every 50 ms for
  all; the others' timer threads only find it held), a checkpoint every 1,000 events;
- ``locked``: the former scheme, for comparison: each append takes the store's writer lock,
  reads the head and inserts its event linked (one lock holder at a time);
- ``plain``: the same INSERT with no chaining at all (what an unaudited write costs);
- ``bare``: the leanest insert there is, the ceiling of this machine: psycopg alone, no
  SQLAlchemy, one prepared INSERT a transaction in autocommit (one round trip, no BEGIN);
- ``deferred``: ``exchange.audit.append_many`` with no seal after each commit, the whole log
  chained and checkpointed by one seal at the end (the appends with no sealing while they
  run; that last seal, a checkpoint a round with its witness line and synchronous commit, is
  in its time).

Printed per scenario: each scheme's events/s, and sealed's ratio to the others; target >=
2,000 sealed events/s. ``--quick`` is 4 writers x 300 events, for CI.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import psycopg
import sqlalchemy as sa

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
SCHEMES = ("bare", "plain", "locked", "sealed", "deferred")
UNCHAINED = ("bare", "plain")  # schemes whose events are never chained
TARGET = 2000.0
AUDIT_ENV = (
    "EXCHANGE_AUDIT_KEY_ENV", "EXCHANGE_AUDIT_KEY_FILE", "EXCHANGE_AUDIT_WITNESS",
    "EXCHANGE_AUDIT_CHECKPOINT_EVENTS", "EXCHANGE_AUDIT_CHECKPOINT_SECONDS",
)  # fmt: skip


@contextmanager
def pg_database(async_commit: bool) -> Iterator[str]:
    """A fresh PostgreSQL database; its URL. Dropped afterwards."""
    name = f"exch_bench_audit_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE \"{name}\" ENCODING 'UTF8' TEMPLATE template0")
        if async_commit:
            admin.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def writer(scheme: str, url: str, name: str, events: int, start_at: float, group: int) -> None:
    """One writer process: ``events`` events, ``group`` to a transaction, from ``start_at``."""
    from exchange import audit
    from exchange.audit.chain import APPENDED, GENESIS, bounded_subject, canonical_event, link
    from exchange.kernel.clock import utcnow
    from exchange.store import Store
    from exchange.store.locks import serialize
    from exchange.store.models import AuditEvent

    table = cast(sa.Table, AuditEvent.__table__)
    store = Store(url, migrate=False)
    bare, sql = _bare_connection(scheme, url, table)
    with store.session():
        pass  # connect before the start, as a running process would have
    time.sleep(max(0.0, start_at - time.time()))
    for first in range(0, events, group):
        batch = [
            audit.Event(
                "api.call", bounded_subject(f"api:bench/{name}/{i}"),
                {"writer": name, "i": i, "status": 200}, actor=name,
            )
            for i in range(first, min(first + group, events))
        ]  # fmt: skip
        if scheme == "sealed":
            with store.session() as s:
                audit.append_many(s, batch)
        elif scheme == "deferred":
            with store.session() as s:
                audit.append_many(s, batch)
                s.info.pop(APPENDED)  # no seal after this commit: one seal at the end
        elif scheme == "bare":
            _bare_insert(bare, sql, batch)
        elif scheme == "plain":
            with store.engine.begin() as conn:
                conn.execute(
                    sa.insert(table),
                    [{"at": utcnow(), "actor": e.actor, "kind": e.kind, "subject": e.subject,
                      "payload": e.payload} for e in batch],
                )  # fmt: skip
        else:  # locked: the former scheme, one lock holder at a time
            with store.session() as s:
                serialize(s)
                head = s.execute(
                    sa.select(AuditEvent.seq, AuditEvent.hash)
                    .where(AuditEvent.seq.is_not(None))
                    .order_by(AuditEvent.seq.desc())
                    .limit(1)
                ).first()
                seq, prev = (head.seq, head.hash) if head is not None else (0, GENESIS)
                rows = []
                for e in batch:
                    at = utcnow()
                    h = link(prev, canonical_event(at, e.actor, e.kind, e.subject, e.payload))
                    seq += 1
                    rows.append(
                        {"at": at, "actor": e.actor, "kind": e.kind, "subject": e.subject,
                         "payload": e.payload, "seq": seq, "prev_hash": prev, "hash": h}
                    )  # fmt: skip
                    prev = h
                s.execute(sa.insert(table), rows)
    store.close()
    if bare is not None:
        bare.close()


def _bare_connection(scheme: str, url: str, table: sa.Table) -> tuple[Any, str]:
    """For ``bare``: an autocommit psycopg connection and the INSERT's text, compiled by
    SQLAlchemy's dialect (named parameters)."""
    if scheme != "bare":
        return None, ""
    from sqlalchemy.dialects import postgresql

    columns = ("at", "actor", "kind", "subject", "payload")
    stmt = sa.insert(table).values({c: sa.bindparam(c) for c in columns})
    sql = str(stmt.compile(dialect=postgresql.dialect(paramstyle="pyformat")))
    dsn = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    return psycopg.connect(dsn, autocommit=True, prepare_threshold=0), sql


def _bare_insert(conn: Any, sql: str, batch: list[Any]) -> None:
    from psycopg.types.json import Jsonb

    from exchange.kernel.clock import utcnow

    rows = [
        {"at": utcnow(), "actor": e.actor, "kind": e.kind, "subject": e.subject,
         "payload": Jsonb(e.payload)}
        for e in batch
    ]  # fmt: skip
    if len(rows) == 1:
        conn.execute(sql, rows[0])  # autocommit: the statement is its transaction
    else:
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(sql, rows)


def measure(
    scheme: str, writers: int, events: int, group: int, home: Path, async_commit: bool
) -> float:
    """Events a second of ``scheme``: a fresh database, ``writers`` processes at once, each
    committing ``group`` events a transaction."""
    from exchange import audit
    from exchange.audit.settings import KEY_FILE, WITNESS_FILE, AuditSettings
    from exchange.store import Store
    from exchange.store.models import AuditCheckpoint, AuditEvent

    with pg_database(async_commit) as url:
        store = Store(url)
        store.installation_id  # noqa: B018 - read once before the clock starts
        env = {**os.environ, "EXCHANGE_HOME": str(home)}
        for name in ("EXCHANGE_CRASH_AT", *AUDIT_ENV):
            env.pop(name, None)
        # This process's final seal signs with the writers' key and witness.
        audit.configure(store, AuditSettings(home / KEY_FILE, home / WITNESS_FILE))
        cpu_before = _children_cpu()
        start_at = time.time() + 2.0  # every process imported and connected by then
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.audit",
                    "--worker",
                    scheme,
                    url,
                    f"w{n}",
                    str(events),
                    str(start_at),
                    str(group),
                ],
                env=env,
            )  # fmt: skip
            for n in range(writers)
        ]
        for p in procs:
            if p.wait() != 0:
                raise SystemExit(f"a {scheme} writer exited {p.returncode}")
        if scheme in ("sealed", "deferred"):
            audit.seal(store, force=True)  # the tail: chained and checkpointed before the clock
        elapsed = time.time() - start_at
        cpu = _children_cpu() - cpu_before
        with store.engine.connect() as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(AuditEvent)).scalar()
            chained = conn.execute(
                sa.select(sa.func.count()).where(AuditEvent.seq.is_not(None))
            ).scalar()
            checkpoints = conn.execute(
                sa.select(sa.func.count()).select_from(AuditCheckpoint)
            ).scalar()
        store.close()
    want = writers * events
    if total != want or (scheme not in UNCHAINED and chained != want):
        raise SystemExit(f"{scheme}: {total} events stored, {chained} chained, not {want}")
    extra = f", {checkpoints} checkpoints" if scheme not in (*UNCHAINED, "locked") else ""
    print(
        f"  {scheme:8s} {want / elapsed:7,.0f} events/s  ({want} in {elapsed:.2f} s{extra}; "
        f"writers' CPU {cpu:.1f} s)"
    )
    return want / elapsed


def scenario(args: argparse.Namespace, group: int, tmp: Path) -> dict[str, float]:
    """Every scheme with ``group`` events a transaction; prints and returns the rates."""
    commit = "synchronous_commit off" if args.async_commit else "each commit on disk"
    what = (
        "one event a transaction (the engine's single appends)"
        if group == 1
        else (f"{group} events a transaction (the API's GroupAudit, the gateway's flusher)")
    )
    print(f"audit appends on PostgreSQL: {args.writers} writers x {args.events} events, "
          f"{what}, {commit}")  # fmt: skip
    rates = {
        s: measure(s, args.writers, args.events, group, tmp / f"{s}-{group}", args.async_commit)
        for s in args.schemes.split(",")
    }
    sealed = rates.get("sealed", 0.0)
    if "locked" in rates:
        print(f"  sealed / locked (the former scheme): {sealed / rates['locked']:.2f}x")
    if "plain" in rates:
        print(f"  sealed / plain (no audit chain):     {sealed / rates['plain']:.2f}x")
    if "bare" in rates:
        print(f"  sealed / bare (the leanest insert):  {sealed / rates['bare']:.2f}x")
    verdict = "met" if sealed >= TARGET else "NOT met"
    print(f"  target >= {TARGET:,.0f} sealed events/s: {verdict}")
    return rates


def _children_cpu() -> float:
    """CPU seconds (user and system) of the finished child processes, so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--events", type=int, default=2000, help="events per writer")
    parser.add_argument(
        "--groups",
        default="1,20",
        help="events per transaction, one scenario each (default: 1 and 20)",
    )
    parser.add_argument("--schemes", default=",".join(SCHEMES), help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--async-commit",
        action="store_true",
        help="the database's synchronous_commit off for every scheme (what the rates are "
        "when a commit does not wait for the disk: a disk with a write cache, say)",
    )
    parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        scheme, url, name, events, start_at, group = args.worker
        writer(scheme, url, name, int(events), float(start_at), int(group))
        return
    if args.quick:
        args.writers, args.events = 4, 300
    groups = [int(g) for g in args.groups.split(",") if g.strip()]
    results: dict[str, dict[str, int]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        for group in groups:
            rates = scenario(args, group, Path(tmp))
            results[f"group_{group}"] = {k: round(v) for k, v in rates.items()}
    print(json.dumps({"events_per_second": results}))


if __name__ == "__main__":
    main()
