"""Tampering with the audit log, the way someone with write access to the store (or to the
witness file) would, through SQL: ``exchange audit verify`` finds each case, names the place
and exits 1; an intact log, an interrupted seal and pending events are not tampering.

Every case runs on a SQLite metadata store and on PostgreSQL. The log of each test: three
checkpoints of five events (1-5, 6-10, 11-15), each sealed at the end of a "run", then three
events chained after the last checkpoint.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner, Result

from exchange import audit
from exchange.audit import keys, witness
from exchange.audit.chain import canonical_event, link
from exchange.audit.checkpoints import Checkpoint, sign
from exchange.audit.verify import verify as verify_log
from exchange.cli.app import app
from exchange.kernel.settings import Settings
from exchange.store import AuditEvent, Store
from exchange.store.models import AuditCheckpoint

EVENTS = cast(sa.Table, AuditEvent.__table__)
CHECKPOINTS = cast(sa.Table, AuditCheckpoint.__table__)
PER_CHECKPOINT = 5
SEALED = 3  # checkpoints
AFTER = 3  # events chained after the last checkpoint
TOTAL = PER_CHECKPOINT * SEALED + AFTER


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Store]:
    """A migrated metadata store (a SQLite file, or a fresh PostgreSQL database) that the CLI
    opens too, its signing key in the home and its witness on another path."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/m.db"
    else:
        url = request.getfixturevalue("pg_database")
    monkeypatch.setenv("EXCHANGE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("EXCHANGE_DB_URL", url)
    monkeypatch.setenv("EXCHANGE_AUDIT_WITNESS", str(tmp_path / "elsewhere" / "witness.jsonl"))
    # checkpoints only at the end of each "run": the ranges are the test's, not the clock's
    monkeypatch.setenv("EXCHANGE_AUDIT_CHECKPOINT_SECONDS", "86400")
    s = Store(url)
    yield s
    s.close()


def witness_path(tmp_path: Path) -> Path:
    return tmp_path / "elsewhere" / "witness.jsonl"


def build_log(store: Store) -> None:
    """Three runs of five events, each sealed at its end, then three more events."""
    for n in range(PER_CHECKPOINT * SEALED + AFTER):
        with store.session() as s:
            last_of_run = n < PER_CHECKPOINT * SEALED and n % PER_CHECKPOINT == PER_CHECKPOINT - 1
            audit.append(
                s, "delivery.delivered", f"subscription:{n % 4 + 1}", {"n": n, "rows": 10 * n},
                checkpoint=last_of_run,
            )  # fmt: skip
    assert audit.settle(store)  # commits in quick succession: sealed by the timer thread


def run_verify(*args: str) -> Result:
    return CliRunner().invoke(app, ["audit", "verify", *args])


def assert_found(result: Result, *texts: str) -> None:
    """Exit 1, and each text in what verify printed about it."""
    print(result.output)  # the exact report, shown by pytest -rP
    assert result.exit_code == 1, result.output
    for text in texts:
        assert text in result.stderr, f"{text!r} not in:\n{result.stderr}"
    assert "audit log NOT intact" in result.stderr


def event_id(store: Store, seq: int) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(sa.select(EVENTS.c.id).where(EVENTS.c.seq == seq)).scalar_one())


def checkpoint(store: Store, seq_from: int) -> Checkpoint:
    with store.session() as s:
        row = s.scalars(sa.select(AuditCheckpoint).where(AuditCheckpoint.seq_from == seq_from))
        return Checkpoint.from_row(row.one(), store.installation_id)


def sql(store: Store, *statements: Any) -> None:
    """Run statements in one transaction, straight on the engine: no hook, no sealer."""
    with store.engine.begin() as conn:
        for statement in statements:
            conn.execute(statement)


def rechain_from(store: Store, seq: int) -> None:
    """Recompute prev_hash and hash of every event from ``seq`` on, as an attacker who knows
    the (public) hash scheme would after editing one."""
    with store.engine.begin() as conn:
        prev = conn.execute(sa.select(EVENTS.c.hash).where(EVENTS.c.seq == seq - 1)).scalar_one()
        rows = conn.execute(
            sa.select(EVENTS).where(EVENTS.c.seq >= seq).order_by(EVENTS.c.seq)
        ).all()
        for r in rows:
            h = link(prev, canonical_event(r.at, r.actor, r.kind, r.subject, r.payload))
            conn.execute(
                sa.update(EVENTS).where(EVENTS.c.id == r.id).values(prev_hash=prev, hash=h)
            )
            prev = h


def head_hash(store: Store, seq: int) -> str:
    with store.engine.connect() as conn:
        return str(conn.execute(sa.select(EVENTS.c.hash).where(EVENTS.c.seq == seq)).scalar_one())


def replace_checkpoint(store: Store, old: Checkpoint, new: Checkpoint) -> None:
    sql(
        store,
        sa.update(CHECKPOINTS)
        .where(CHECKPOINTS.c.seq_from == old.seq_from)
        .values(
            seq_from=new.seq_from, seq_to=new.seq_to, count=new.count, head_hash=new.head_hash,
            at=new.at, prev_signature=new.prev_signature, key_id=new.key_id,
            signature=new.signature,
        ),
    )  # fmt: skip


# -- what is not tampering --------------------------------------------------------------------


def test_an_intact_log_verifies_with_its_counts_key_and_witness(
    store: Store, tmp_path: Path
) -> None:
    build_log(store)
    key_id = keys.key_id(keys.public_key(audit.AuditSettings.from_env(Settings.from_env())))

    result = run_verify()

    print(result.output)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        f"audit log intact: {TOTAL} events, {SEALED} checkpoints signed by key {key_id}, "
        f"witnessed in {witness_path(tmp_path)}; {AFTER} events after the last checkpoint"
    )


def test_an_empty_log_verifies(store: Store) -> None:
    result = run_verify()

    assert result.exit_code == 0, result.output
    assert "audit log intact: 0 events, no checkpoint yet; 0 events after" in result.stdout


def test_an_auditor_verifies_with_their_own_copy_of_the_public_key(
    store: Store, tmp_path: Path
) -> None:
    build_log(store)
    copy = tmp_path / "auditor" / "audit.pub"
    copy.parent.mkdir()
    copy.write_bytes((tmp_path / "home" / "audit-signing.key.pub").read_bytes())

    assert run_verify("--public-key", str(copy)).exit_code == 0


def test_a_public_key_that_did_not_sign_the_checkpoints_finds_every_one(
    store: Store, tmp_path: Path
) -> None:
    build_log(store)
    other = tmp_path / "other.pub"
    other.write_bytes(
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )

    result = run_verify("--public-key", str(other))

    assert_found(result, "checkpoint 1 (events 1-5): the signature is not valid")
    assert result.stderr.count("the signature is not valid") == 2 * SEALED  # store and witness


def test_an_interrupted_seal_is_reported_as_such_not_as_tampering(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The checkpoint is stored, then the process fails before writing the witness: the
    checkpoint is in the store, not marked witnessed, and the next seal writes it."""
    build_log(store)

    def crash(path: Path, doc: dict[str, Any]) -> None:
        raise OSError("the witness's disk went away")

    with monkeypatch.context() as patched:
        patched.setattr(witness, "append_line", crash)
        with caplog.at_level(logging.WARNING), store.session() as s:
            audit.append(s, "run.finished", "resource:R", {"run": "r4"}, checkpoint=True)
    assert "the witness's disk went away" in caplog.text
    result = run_verify()

    print(result.output)
    assert result.exit_code == 0, result.output
    assert (
        "1 checkpoint in the store not yet witnessed: a seal was interrupted before writing "
        "the witness (the next seal writes it)"
    ) in result.stdout
    assert f"{SEALED + 1} checkpoints" in result.stdout


def test_a_seal_while_verify_walks_the_chain_is_not_a_finding(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Verify reads the checkpoints, walks the chain, then reads the witness: a run that ends
    meanwhile adds events, a checkpoint and its witness line the walk did not see."""
    verifier = importlib.import_module("exchange.audit.verify")
    build_log(store)
    count_unchained = verifier._count_unchained

    def a_run_ends_meanwhile(st: Store) -> int:
        with store.session() as s:
            audit.append(s, "run.finished", "resource:R", {"run": "r4"}, checkpoint=True)
        return count_unchained(st)

    monkeypatch.setattr(verifier, "_count_unchained", a_run_ends_meanwhile)
    result = run_verify()

    print(result.output)
    assert result.exit_code == 0, result.output
    assert f"audit log intact: {TOTAL} events, {SEALED} checkpoints" in result.stdout


def test_pending_events_are_counted_not_found(store: Store) -> None:
    """Events appended but not chained yet (their writer died before its seal ran)."""
    build_log(store)
    pending = [
        {"at": dt.datetime(2026, 12, 1, 8, 0), "actor": "engine", "kind": "api.call",
         "subject": f"GET /r{i}", "payload": {"i": i}}
        for i in range(2)
    ]  # fmt: skip
    sql(store, sa.insert(EVENTS).values(pending))

    result = run_verify()

    print(result.output)
    assert result.exit_code == 0, result.output
    assert "2 events pending: appended, not yet chained (the next seal chains them)" in (
        result.stdout
    )
    assert f"audit log intact: {TOTAL} events" in result.stdout


# -- the seven cases --------------------------------------------------------------------------


def test_an_edited_event_is_found_at_that_event(store: Store) -> None:
    build_log(store)
    edited = event_id(store, 7)

    sql(store, sa.update(EVENTS).where(EVENTS.c.seq == 7).values(payload={"n": 6, "rows": 1}))

    result = run_verify()
    assert_found(
        result,
        f"event 7 (id {edited}) was edited: its content (delivery.delivered subscription:3) "
        "does not match its hash",
    )
    assert result.stderr.count("was edited") == 1


def test_a_deleted_middle_event_is_found_by_the_gap_it_leaves(store: Store) -> None:
    build_log(store)
    after = event_id(store, 8)

    sql(store, sa.delete(EVENTS).where(EVENTS.c.seq == 7))

    assert_found(run_verify(), f"event 7 missing before event 8 (id {after}): deleted")


def test_a_deleted_event_with_the_sequence_renumbered_breaks_the_link(store: Store) -> None:
    build_log(store)
    moved = event_id(store, 8)

    sql(
        store,
        sa.delete(EVENTS).where(EVENTS.c.seq == 7),
        *[
            sa.update(EVENTS).where(EVENTS.c.seq == seq).values(seq=seq - 1)
            for seq in range(8, TOTAL + 1)
        ],
    )

    assert_found(
        run_verify(),
        f"event 7 (id {moved}) does not follow event 6: its prev_hash is not that event's hash",
    )


def test_a_truncated_tail_is_found_against_the_witness(store: Store) -> None:
    """The last checkpoint and every event from 11 on deleted: what is left of the store is
    consistent, but the witness holds a checkpoint up to event 15."""
    build_log(store)

    sql(
        store,
        sa.delete(EVENTS).where(EVENTS.c.seq > 10),
        sa.delete(CHECKPOINTS).where(CHECKPOINTS.c.seq_from == 11),
    )

    assert_found(
        run_verify(),
        "the store's chain ends at event 10 but the witness",
        "holds a checkpoint up to event 15: events 11-15 were deleted (the tail truncated)",
        "line 3 holds a checkpoint of events 11-15 that the store lacks",
    )


def test_a_truncated_tail_with_its_checkpoint_left_is_found_in_the_store(store: Store) -> None:
    build_log(store)

    sql(store, sa.delete(EVENTS).where(EVENTS.c.seq > 12))

    assert_found(
        run_verify(),
        "checkpoint 3 (events 11-15) seals events up to 15 but the store's chain ends at "
        "event 12: events 13-15 were deleted",
    )


def test_reordered_events_are_found_by_their_links(store: Store) -> None:
    build_log(store)
    seventh, eighth = event_id(store, 7), event_id(store, 8)

    sql(
        store,
        sa.update(EVENTS).where(EVENTS.c.seq == 7).values(seq=-1),
        sa.update(EVENTS).where(EVENTS.c.seq == 8).values(seq=7),
        sa.update(EVENTS).where(EVENTS.c.seq == -1).values(seq=8),
    )

    assert_found(
        run_verify(),
        f"event 7 (id {eighth}) does not follow event 6",
        f"event 8 (id {seventh}) does not follow event 7",
        f"event 9 (id {event_id(store, 9)}) does not follow event 8",
    )


def test_a_rechained_log_is_found_by_the_checkpoint_it_no_longer_matches(store: Store) -> None:
    """Event 7 edited and every hash from it on recomputed: the chain itself is consistent
    again, but checkpoint 2 signed the old hash of event 10, and no one can re-sign it
    without the key."""
    build_log(store)
    signed = checkpoint(store, 6).head_hash

    sql(store, sa.update(EVENTS).where(EVENTS.c.seq == 7).values(payload={"n": 6, "rows": 1}))
    rechain_from(store, 7)

    result = run_verify()
    assert_found(
        result,
        "events up to 10 were rewritten after checkpoint 2 (events 6-10) was signed: its head "
        f"hash {signed[:16]}... does not match event 10's {head_hash(store, 10)[:16]}...",
        "events 11-15 were rewritten after checkpoint 3 (events 11-15) was signed",
    )
    assert "was edited" not in result.stderr  # every hash matches its content again


@pytest.mark.parametrize("how", ["re-signed with another key", "altered"])
def test_a_replaced_checkpoint_is_found(store: Store, how: str) -> None:
    """Re-signed: the attacker re-chains after an edit and signs a new checkpoint 2 with a
    key of their own; altered: checkpoint 2's count and time changed in place."""
    build_log(store)
    old = checkpoint(store, 6)
    if how == "altered":
        new = dataclasses.replace(old, count=4, at=old.at - dt.timedelta(hours=1))
    else:
        sql(store, sa.update(EVENTS).where(EVENTS.c.seq == 7).values(payload={"n": 6}))
        rechain_from(store, 7)
        theirs = Ed25519PrivateKey.generate()
        new = sign(
            dataclasses.replace(
                old, head_hash=head_hash(store, 10), key_id=keys.key_id(theirs.public_key())
            ),
            theirs,
        )

    replace_checkpoint(store, old, new)

    result = run_verify()
    assert_found(
        result,
        "checkpoint 2 (events 6-10): the signature is not valid",
        "checkpoint 2 (events 6-10) differs from its copy in witness",
        "line 2 (",
        "it was replaced or altered in the store",
    )
    if how == "altered":
        assert "checkpoint 2 (events 6-10) counts 4 events, not the 5 of its range" in (
            result.stderr
        )
    else:
        assert f"it names key {new.key_id}, not the trusted key {old.key_id}" in result.stderr
        # the next checkpoint still chains to the old signature
        assert "checkpoint 3 (events 11-15) does not carry the signature" in result.stderr


@pytest.mark.parametrize("line", [2, 3], ids=["middle", "last"])
def test_a_deleted_witness_line_is_found(store: Store, tmp_path: Path, line: int) -> None:
    build_log(store)
    path = witness_path(tmp_path)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)

    path.write_text("".join(lines[: line - 1] + lines[line:]), encoding="utf-8")

    cp = {2: "checkpoint 2 (events 6-10)", 3: "checkpoint 3 (events 11-15)"}[line]
    expected = [f"{cp} is marked witnessed but the witness {path} lacks it"]
    if line == 2:
        expected.append(
            f"witness {path} line 2 (events 11-15) does not follow the line before it: its "
            "prev_signature is not line 1's signature, so a witness line before it was deleted"
        )
    assert_found(run_verify(), *expected)


def test_a_deleted_witness_file_is_found(store: Store, tmp_path: Path) -> None:
    build_log(store)

    witness_path(tmp_path).unlink()

    assert_found(run_verify(), f"the witness {witness_path(tmp_path)} does not exist")


def test_a_torn_last_witness_line_of_an_unwitnessed_checkpoint_is_not_tampering(
    store: Store, tmp_path: Path
) -> None:
    """A seal killed while writing the witness line: the line is cut short and the checkpoint
    not marked witnessed; the next seal writes it whole."""
    build_log(store)
    path = witness_path(tmp_path)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(lines[:-1]) + lines[-1][:40], encoding="utf-8")
    sql(store, sa.update(CHECKPOINTS).where(CHECKPOINTS.c.seq_from == 11).values(witnessed=False))

    result = run_verify()
    assert result.exit_code == 0, result.output
    assert "1 checkpoint in the store not yet witnessed" in result.stdout

    audit.seal(store, force=True)
    healed = run_verify()
    assert healed.exit_code == 0, healed.output
    assert "not yet witnessed" not in healed.stdout


def test_an_edited_witness_line_is_found(store: Store, tmp_path: Path) -> None:
    build_log(store)
    path = witness_path(tmp_path)
    text = path.read_text(encoding="utf-8")

    path.write_text(text.replace('"count":5', '"count":6', 1), encoding="utf-8")

    assert_found(
        run_verify(),
        f"witness {path} line 1: the signature is not valid",
        f"witness {path} line 1 differs from checkpoint 1 (events 1-5) (count): the "
        "witness's copy was altered (the store's verifies)",
    )


# -- a shared or emptied witness, a store with no key yet -------------------------------------


def test_a_witness_shared_with_another_installation_is_not_tampering(
    store: Store, tmp_path: Path
) -> None:
    """Two installations' seals write to one witness file, their lines interleaved: each
    store verifies against its own lines, and the other's are not taken for tampering."""
    other = Store(f"sqlite:///{tmp_path}/other.db")
    try:
        for n in range(4):
            for st in (store, other):
                with st.session() as s:
                    audit.append(s, "run.finished", "resource:R", {"n": n}, checkpoint=True)
        lines = witness.read_witness(witness_path(tmp_path))
        assert {doc["installation"] for _, doc in lines} == {
            store.installation_id,
            other.installation_id,
        }
        config = audit.AuditSettings.from_env(Settings.from_env())
        for st in (store, other):
            report = verify_log(st, config)
            assert report.findings == [], report.findings
            assert (report.checkpoints, report.other_installations) == (4, 4)
    finally:
        other.close()


def test_an_emptied_witness_is_found(store: Store, tmp_path: Path) -> None:
    build_log(store)

    witness_path(tmp_path).write_text("", encoding="utf-8")

    assert_found(
        run_verify(),
        f"the witness {witness_path(tmp_path)} holds no checkpoint of this installation "
        f"({store.installation_id}) but the store marks {SEALED} witnessed: it was emptied",
    )


def test_an_emptied_witness_with_the_marks_undone_in_the_store_is_found(
    store: Store, tmp_path: Path
) -> None:
    """Only the last checkpoint can be waiting for its witness line (a seal witnesses every
    checkpoint before it makes the next): earlier ones missing are lines deleted."""
    build_log(store)

    witness_path(tmp_path).write_text("", encoding="utf-8")
    sql(store, sa.update(CHECKPOINTS).values(witnessed=False))

    assert_found(
        run_verify(),
        f"checkpoint 1 (events 1-5) is not in the witness {witness_path(tmp_path)} nor marked "
        "witnessed, yet a later checkpoint was made",
        "checkpoint 2 (events 6-10) is not in the witness",
    )


def test_a_log_with_events_but_no_key_yet_verifies_and_makes_no_key(
    store: Store, tmp_path: Path
) -> None:
    """Before the first checkpoint no signing key exists: verify checks the chain and says
    nothing is sealed yet, and does not make a key."""
    for n in range(3):
        with store.session() as s:
            audit.append(s, "api.call", f"GET /r{n}", {"n": n})
    assert audit.settle(store)
    key = tmp_path / "home" / "audit-signing.key"
    assert not key.exists()

    result = run_verify()

    assert result.exit_code == 0, result.output
    assert "audit log intact: 3 events, no checkpoint yet; 3 events after" in result.stdout
    assert not key.exists() and not keys.public_path(key).exists()
