"""Attacks on the audit log beyond the seven of the issue, and what ``exchange audit verify``
says of each: a backdated event slipped in before the next seal, checkpoints and witness wiped
to hide an edit, the signing key gone, an audit table dropped, the installation id changed;
and the wording of ranges and counts (one event, one checkpoint, an export's window).

Every case runs on a SQLite metadata store and on PostgreSQL (the ``store`` fixture and the
log of tests/test_audit_tamper.py: checkpoints 1-5, 6-10, 11-15, then three events).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa

from exchange import audit
from exchange.audit.chain import GENESIS, canonical_event, link
from exchange.audit.settings import AuditSettings
from exchange.kernel.clock import utcnow
from exchange.kernel.settings import Settings
from exchange.store import Store
from tests import test_audit_tamper
from tests.test_audit_export import lines, verify_tool, write_export
from tests.test_audit_tamper import (
    CHECKPOINTS,
    EVENTS,
    TOTAL,
    assert_found,
    build_log,
    rechain_from,
    run_verify,
    sql,
    witness_path,
)

store = test_audit_tamper.store  # the fixture: a SQLite or a PostgreSQL store, key and witness

INSTALLATION = sa.table("installation", sa.column("installation_id", sa.String()))


def later(monkeypatch: pytest.MonkeyPatch, hours: float) -> None:
    """Verify runs ``hours`` after the log was written (the events are that old)."""
    monkeypatch.setattr(
        "exchange.audit.verify.utcnow", lambda: utcnow() + dt.timedelta(hours=hours)
    )


def insert_unchained(store: Store, at: dt.datetime, run: str = "rFAKE") -> int:
    """A row inserted straight into audit_events, unchained, as the engine's appends are:
    the next seal chains it like theirs."""
    with store.engine.begin() as conn:
        row = conn.execute(
            sa.insert(EVENTS)
            .values(
                at=at, actor="engine", kind="delivery.delivered", subject="subscription:1",
                payload={"run": run, "node": "n", "table": "t", "rows": 12345},
            )
            .returning(EVENTS.c.id)
        )  # fmt: skip
        return int(row.scalar_one())


def first_at(store: Store) -> dt.datetime:
    with store.engine.connect() as conn:
        return conn.execute(sa.select(EVENTS.c.at).where(EVENTS.c.seq == 1)).scalar_one()


def rechain_all(store: Store) -> None:
    """Every hash recomputed from the first event on (no checkpoint left to anchor on)."""
    with store.engine.begin() as conn:
        prev = GENESIS
        for r in conn.execute(sa.select(EVENTS).order_by(EVENTS.c.seq)).all():
            h = link(prev, canonical_event(r.at, r.actor, r.kind, r.subject, r.payload))
            conn.execute(
                sa.update(EVENTS).where(EVENTS.c.id == r.id).values(prev_hash=prev, hash=h)
            )
            prev = h


# -- a backdated event ------------------------------------------------------------------------


def test_a_backdated_event_sealed_by_the_next_seal_is_found(store: Store) -> None:
    """The stranger's forgery: a delivery dated 12 days before the log began, inserted
    unchained; the next seal chains and signs it, but its time goes back in the chain."""
    build_log(store)
    forged_at = first_at(store) - dt.timedelta(days=12)
    forged = insert_unchained(store, forged_at)
    audit.seal(store, force=True)

    result = run_verify()

    seq = TOTAL + 1
    assert_found(
        result,
        f"event {seq} (id {forged}) is dated {forged_at:%Y-%m-%d %H:%M:%S} UTC, 12 days before "
        f"event {TOTAL} earlier in the chain (",
        "it was inserted with a back date",
        "EXCHANGE_AUDIT_MAX_LATENESS_S",
        "audit log NOT intact: 1 finding in 19 events and 4 checkpoints",
    )


def test_an_event_committed_late_by_a_long_transaction_is_not_backdating(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event's time is taken at append; a transaction open for five minutes commits it
    after events appended since: within the 15 minutes allowed, unless the setting says less."""
    build_log(store)
    insert_unchained(store, utcnow() - dt.timedelta(minutes=5), run="r-late")
    audit.seal(store, force=True)

    assert run_verify().exit_code == 0

    monkeypatch.setenv("EXCHANGE_AUDIT_MAX_LATENESS_S", "60")
    assert_found(
        run_verify(),
        "minutes before event 18 earlier in the chain",
        "a transaction open longer than 1 minute",
    )


def test_a_forward_dated_event_is_found_and_the_events_after_it_are_not(store: Store) -> None:
    """An event dated a day ahead: after the checkpoint that seals it was signed. The honest
    events after it are not taken for backdated."""
    build_log(store)
    ahead = insert_unchained(store, utcnow() + dt.timedelta(days=1))
    audit.seal(store, force=True)
    with store.session() as s:
        audit.append(s, "run.finished", "resource:R", {"run": "r5"}, checkpoint=True)

    result = run_verify()

    assert_found(
        result,
        f"event {TOTAL + 1} (id {ahead}) is dated",
        "after checkpoint 4 (events 16-19) that seals it was signed",
        "1 finding in",
    )
    assert "back date" not in result.stderr


# -- checkpoints, witness or key gone ---------------------------------------------------------


def test_wiped_checkpoints_and_witness_leave_warnings_naming_the_key_and_the_age(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Event 7 edited, the log re-chained, every checkpoint deleted and the witness removed:
    the chain is consistent again, which no check can refute without a checkpoint; but a
    signing key exists and the events wait hours for one, which verify says."""
    build_log(store)
    sql(
        store,
        sa.delete(CHECKPOINTS),
        sa.update(EVENTS).where(EVENTS.c.seq == 7).values(payload={"n": 6, "rows": 1}),
    )
    rechain_all(store)
    witness_path(tmp_path).unlink()
    monkeypatch.setenv("EXCHANGE_AUDIT_CHECKPOINT_SECONDS", "60")
    later(monkeypatch, 3)

    result = run_verify()

    print(result.output)
    assert result.exit_code == 0, result.output
    key = tmp_path / "home" / "audit-signing.key"
    assert f"warning: {TOTAL} events not sealed by any checkpoint, the oldest dated " in (
        result.stderr
    )
    assert "(3 hours ago), though one is due every 60 s" in result.stderr
    assert "run `exchange audit seal`" in result.stderr
    assert (
        f"warning: a signing key exists ({key}) but neither the store nor the witness "
        f"{witness_path(tmp_path)} (missing) holds a checkpoint"
    ) in result.stderr
    assert "they were deleted from both, and the chain alone cannot show an edit" in (result.stderr)


def test_events_waiting_past_the_interval_are_warned_of_and_recent_ones_not(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_log(store)
    monkeypatch.setenv("EXCHANGE_AUDIT_CHECKPOINT_SECONDS", "60")

    fresh = run_verify()
    assert fresh.exit_code == 0 and "warning" not in fresh.output

    later(monkeypatch, 2)
    old = run_verify()
    print(old.output)
    assert old.exit_code == 0, old.output
    assert (
        "warning: 3 events not sealed by any checkpoint, the oldest dated " in old.stderr
        and "(2 hours ago), though one is due every 60 s (EXCHANGE_AUDIT_CHECKPOINT_SECONDS)"
        in old.stderr
    )
    assert "audit log intact" in old.stdout


def test_a_signing_key_gone_after_checkpoints_is_said_by_verify(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key file removed: runs go on (their events are chained, the seals fail with a
    logged warning); verify checks the checkpoints with the public half and says the key is
    gone and what waits for it."""
    build_log(store)
    key = tmp_path / "home" / "audit-signing.key"
    key.unlink()
    for n in range(4):
        with store.session() as s:
            audit.append(s, "run.finished", "resource:R", {"run": f"k{n}"}, checkpoint=True)
    monkeypatch.setenv("EXCHANGE_AUDIT_CHECKPOINT_SECONDS", "60")
    later(monkeypatch, 1)

    result = run_verify()

    print(result.output)
    assert result.exit_code == 0, result.output
    assert (
        f"warning: the audit signing key {key} is missing, but the store holds 3 checkpoints "
        "signed with it"
    ) in result.stderr
    assert "warning: 7 events not sealed by any checkpoint" in result.stderr
    assert "restore the signing key, then run `exchange audit seal`" in result.stderr


# -- an audit table gone ----------------------------------------------------------------------


@pytest.mark.parametrize("table", ["audit_checkpoints", "audit_events"])
def test_a_dropped_audit_table_is_a_finding_not_a_traceback(store: Store, table: str) -> None:
    build_log(store)

    sql(store, sa.text(f"DROP TABLE {table}"))

    result = run_verify()
    assert_found(
        result,
        f"the store has no table {table}: it was dropped",
        "audit log NOT intact: 1 finding: the audit tables could not be read",
    )
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)


def test_an_unreadable_audit_table_is_a_finding_naming_it(store: Store) -> None:
    build_log(store)

    sql(store, sa.text("ALTER TABLE audit_checkpoints DROP COLUMN witnessed"))

    result = run_verify()
    assert_found(result, "the store's table audit_checkpoints could not be read (")
    assert "Traceback" not in result.output


# -- an installation id changed ---------------------------------------------------------------


def test_a_changed_installation_id_is_named_as_such(store: Store) -> None:
    build_log(store)
    original = store.installation_id

    sql(store, sa.update(INSTALLATION).values(installation_id="0" * 32))

    result = run_verify()
    assert_found(
        result,
        "checkpoint 1 (events 1-5) differs from what it signed in its installation: the "
        f"store's installation id is {'0' * 32}, but its checkpoints were signed for "
        f"installation {original}",
        "1 finding in 18 events and 3 checkpoints",
    )
    assert "signature is not valid" not in result.stderr


# -- wording ----------------------------------------------------------------------------------


def test_a_one_event_checkpoint_rewritten_reads_in_the_singular(store: Store) -> None:
    with store.session() as s:
        audit.append(s, "run.finished", "resource:R", {"run": "r1"}, checkpoint=True)

    sql(store, sa.update(EVENTS).where(EVENTS.c.seq == 1).values(payload={"run": "r2"}))
    rechain_all(store)

    assert_found(
        run_verify(),
        "event 1 was rewritten after checkpoint 1 (event 1) was signed",
        "audit log NOT intact: 1 finding in 1 event and 1 checkpoint",
    )


def test_a_rechain_names_the_range_it_can_know(store: Store) -> None:
    """Event 7 edited and re-chained: checkpoint 2 (6-10) says the rewrite starts somewhere in
    its range (not that all of 6-10 changed); checkpoint 3, every hash of which changed, says
    11-15."""
    build_log(store)

    sql(store, sa.update(EVENTS).where(EVENTS.c.seq == 7).values(payload={"n": 6, "rows": 1}))
    rechain_from(store, 7)

    result = run_verify()
    assert_found(
        result,
        "events up to 10 were rewritten after checkpoint 2 (events 6-10) was signed",
        "(the rewrite starts at one of events 6-10: a signed head hash cannot tell which)",
        "events 11-15 were rewritten after checkpoint 3 (events 11-15) was signed",
    )
    assert "events 6-10 were rewritten" not in result.stderr


def test_the_standalone_verifier_names_a_windows_range_and_counts_in_the_singular(
    store: Store, tmp_path: Path
) -> None:
    """A window inside checkpoint 2: its events 6-10 anchored on checkpoint 1."""
    build_log(store)
    with store.engine.connect() as conn:
        at = conn.execute(sa.select(EVENTS.c.at).where(EVENTS.c.seq == 7)).scalar_one()
    out = tmp_path / "audit.jsonl"
    config = AuditSettings.from_env(Settings.from_env())
    write_export(store, config, out, at, at + dt.timedelta(microseconds=1))
    assert [d["seq"] for d in lines(out) if d["type"] == "event"] == [6, 7, 8, 9, 10]

    done = verify_tool(out)

    print(done.stdout)
    assert done.returncode == 0, done.stdout
    assert "5 events (seq 6-10): every hash and link recomputed" in done.stdout
    assert "1 checkpoint: signature, range" in done.stdout
