"""Appending under concurrency and crashes: writer processes that append at the same time never
lose or duplicate an event, and a process killed (SIGKILL) at any named point of appending or
sealing leaves a log that the next seal repairs: every event chained exactly once, positions
1..total without a gap, checkpoints and witness verifying.

Every test runs on a SQLite metadata store and on PostgreSQL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from exchange.audit.chain import ChainCheck
from exchange.audit.chain import check_chain as verify_chain
from exchange.audit.settings import AuditSettings
from exchange.audit.verify import verify
from exchange.audit.witness import read_witness
from exchange.kernel.settings import Settings
from exchange.store import Store
from exchange.store.models import AuditCheckpoint, AuditEvent

REPO = Path(__file__).resolve().parents[1]
# One writer: ``events`` events, each in its own transaction as the engine appends them, the
# last one forcing a checkpoint (as a run's end does).
WRITER = """
import sys
from exchange import audit
from exchange.store import Store
url, name, events = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = Store(url, migrate=False)
for i in range(events):
    with store.session() as s:
        audit.append(s, "test.event", f"{name}:{i}", {"writer": name, "i": i},
                     checkpoint=i == events - 1)
"""
CRASH_POINTS = [
    "audit.append:committed",  # the appender, after its commit, before it seals
    "audit.seal:chained",  # the sealer, links and checkpoint written, not committed
    "audit.seal:checkpoint-stored",  # the checkpoint committed, not in the witness yet
    "audit.seal:witness-written",  # in the witness, not marked witnessed in the store
]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = f"sqlite:///{tmp_path}/m.db" if request.param == "sqlite" else None
    s = Store(url or request.getfixturevalue("pg_database"))
    yield s
    s.close()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The writers' environment (and this process's): a home of the test's own, a checkpoint
    every 7 events."""
    values = {"EXCHANGE_HOME": str(tmp_path), "EXCHANGE_AUDIT_CHECKPOINT_EVENTS": "7"}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    for name in ("EXCHANGE_AUDIT_KEY_ENV", "EXCHANGE_AUDIT_KEY_FILE", "EXCHANGE_AUDIT_WITNESS"):
        monkeypatch.delenv(name, raising=False)
    base = {k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_")}
    return {**base, **values, "PYTHONPATH": str(REPO)}


def start_writer(
    store: Store, env: dict[str, str], name: str, events: int, crash_at: str | None = None
) -> subprocess.Popen[str]:
    run_env = {**env, **({"EXCHANGE_CRASH_AT": crash_at} if crash_at else {})}
    url = store.engine.url.render_as_string(hide_password=False)
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, url, name, str(events)],
        env=run_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], expected: int = 0) -> None:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == expected, err


def stored(store: Store) -> list[tuple[str, int | None]]:
    """(subject, position) of every event, in id order."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(AuditEvent.subject, AuditEvent.seq).order_by(AuditEvent.id)
        ).all()
    return [(r.subject, r.seq) for r in rows]


def assert_sealed_and_verifying(store: Store, total: int) -> None:
    """Every event chained exactly once at 1..total, the chain, every checkpoint and the
    witness verify, and each checkpoint is in the witness once."""
    events = stored(store)
    assert len(events) == total
    assert len({subject for subject, _ in events}) == total, "an event was duplicated"
    assert sorted(seq or 0 for _, seq in events) == list(range(1, total + 1))
    with store.session() as s:
        assert verify_chain(s) == ChainCheck(total)
    config = AuditSettings.from_env(Settings.from_env())
    report = verify(store, config)
    assert report.findings == [], report.findings
    with store.engine.connect() as conn:
        signatures = conn.execute(
            sa.select(AuditCheckpoint.signature).order_by(AuditCheckpoint.seq_to)
        ).scalars().all()  # fmt: skip
    lines = [doc["signature"] for _, doc in read_witness(config.witness)]
    assert lines == signatures


def test_concurrent_writers_lose_and_duplicate_nothing(store: Store, env: dict[str, str]) -> None:
    """6 processes append 40 events each at the same time: 240 events, each chained once,
    positions 1..240, each writer's events in its own order, all sealed and witnessed."""
    writers = [start_writer(store, env, f"w{n}", 40) for n in range(6)]
    for proc in writers:
        finish(proc)

    assert_sealed_and_verifying(store, 240)
    events = dict(stored(store))
    for n in range(6):
        seqs = [events[f"w{n}:{i}"] or 0 for i in range(40)]
        assert seqs == sorted(seqs), "a writer's events were chained out of its order"


@pytest.mark.parametrize("crash_at", CRASH_POINTS)
def test_a_process_killed_while_appending_or_sealing_is_repaired(
    store: Store, env: dict[str, str], crash_at: str
) -> None:
    """A writer killed at the crash point keeps every event it committed; the writers that
    come after it (two at once) and their seals chain, checkpoint and witness the lot, with
    no event lost or doubled and no checkpoint written twice to the witness."""
    finish(start_writer(store, env, "first", 10), expected=0)
    finish(start_writer(store, env, "killed", 10, crash_at), expected=-signal.SIGKILL)
    committed = [subject for subject, _ in stored(store) if subject.startswith("killed:")]
    assert committed == [f"killed:{i}" for i in range(len(committed))]
    assert committed, "the writer died before it committed an event"

    later = [start_writer(store, env, f"later{n}", 10) for n in range(2)]
    for proc in later:
        finish(proc)

    assert_sealed_and_verifying(store, 10 + len(committed) + 20)
