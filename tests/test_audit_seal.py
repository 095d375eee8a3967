"""Sealing the audit log: appended events are chained in order after they commit, signed
checkpoints cover consecutive ranges and the witness holds each one, a run's end forces one,
and the signing key is made once, kept private and never shown.

Every store test runs on a SQLite metadata store and on PostgreSQL.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from exchange import audit
from exchange.audit import keys
from exchange.audit.chain import ChainCheck
from exchange.audit.chain import check_chain as verify_chain
from exchange.audit.checkpoints import Checkpoint, verify_signature
from exchange.audit.seal import settle
from exchange.audit.settings import AuditSettings
from exchange.audit.witness import read_witness
from exchange.flow import run_resource
from exchange.kernel.errors import BadInput
from exchange.kernel.settings import Settings
from exchange.store import Store
from exchange.store.db import _alembic_config, create_store_engine
from exchange.store.models import AuditCheckpoint, AuditEvent
from exchange.workflow.grants import add_subscription
from exchange.workspace import Workspace
from tests.conftest import catalog_yaml
from tests.test_exchange_sqlite import FAR, RESOURCE, T0, make_source


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An engine home of the test's own: the key and the witness are made in it."""
    monkeypatch.setenv("EXCHANGE_HOME", str(tmp_path))
    for name in ("EXCHANGE_AUDIT_KEY_ENV", "EXCHANGE_AUDIT_KEY_FILE", "EXCHANGE_AUDIT_WITNESS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("EXCHANGE_AUDIT_CHECKPOINT_EVENTS", "5")
    return tmp_path


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, home: Path) -> Iterator[Store]:
    url = f"sqlite:///{home}/m.db" if request.param == "sqlite" else None
    s = Store(url or request.getfixturevalue("pg_database"))
    yield s
    s.close()


def append_events(store: Store, n: int, *, checkpoint_last: bool = False) -> None:
    """``n`` events, each in its own transaction, as the engine appends them."""
    for i in range(n):
        with store.session() as s:
            last = checkpoint_last and i == n - 1
            audit.append(s, "test.event", f"thing:{i}", {"i": i}, checkpoint=last)
    # Commits in quick succession are sealed by the process's timer thread: wait for it.
    assert settle(store)


def chain(store: Store) -> list[tuple[int, int | None, str | None, str | None]]:
    with store.engine.connect() as conn:
        return [
            (r.id, r.seq, r.prev_hash, r.hash)
            for r in conn.execute(
                sa.select(AuditEvent.id, AuditEvent.seq, AuditEvent.prev_hash, AuditEvent.hash)
                .order_by(AuditEvent.id)
            )
        ]  # fmt: skip


def stored_checkpoints(store: Store) -> list[Checkpoint]:
    with store.session() as s:
        rows = s.execute(sa.select(AuditCheckpoint).order_by(AuditCheckpoint.seq_to)).scalars()
        return [Checkpoint.from_row(r, store.installation_id) for r in rows]


def test_events_are_chained_in_order_once_their_transaction_commits(store: Store) -> None:
    """Each event gets the next position and links to the one before it; none is left
    unchained and the chain verifies."""
    append_events(store, 12)

    rows = chain(store)
    assert [seq for _, seq, _, _ in rows] == list(range(1, 13))
    assert rows[0][2] == audit.GENESIS
    assert all(rows[i][2] == rows[i - 1][3] for i in range(1, len(rows)))
    with store.session() as s:
        assert verify_chain(s) == ChainCheck(12)


def unchained(store: Store) -> int:
    with store.engine.connect() as conn:
        query = sa.select(sa.func.count()).where(AuditEvent.seq.is_(None))
        return int(conn.execute(query).scalar_one())


def test_a_burst_of_commits_is_chained_moments_later_with_no_seal_called(store: Store) -> None:
    """Commits in quick succession are sealed together by the process's timer thread: within
    a moment of the last one, every event is chained, though nothing asked for a seal (the
    bound is 0.1 s; the test allows a loaded machine 5 s)."""
    for i in range(40):
        with store.session() as s:
            audit.append(s, "test.event", f"thing:{i}", {"i": i})
    committed = time.monotonic()

    while unchained(store) and time.monotonic() - committed < 5.0:
        time.sleep(0.005)

    assert unchained(store) == 0
    with store.session() as s:
        assert verify_chain(s) == ChainCheck(40)


def test_a_process_that_ends_leaves_none_of_its_events_unchained(store: Store, home: Path) -> None:
    """A process that appends a burst and exits at once: what its timer thread still held is
    sealed on the way out."""
    burst = (
        "import sys\n"
        "from exchange import audit\n"
        "from exchange.store import Store\n"
        "store = Store(sys.argv[1], migrate=False)\n"
        "for i in range(30):\n"
        "    with store.session() as s:\n"
        "        audit.append(s, 'test.event', f'thing:{i}', {'i': i})\n"
    )
    url = store.engine.url.render_as_string(hide_password=False)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(
        [sys.executable, "-c", burst, url], env=env, capture_output=True, text=True, timeout=120
    )

    assert done.returncode == 0, done.stderr
    assert unchained(store) == 0
    assert [seq for _, seq, _, _ in chain(store)] == list(range(1, 31))


def test_a_process_whose_sqlite_store_was_removed_exits_without_a_warning(
    tmp_path: Path, home: Path
) -> None:
    """A scratch workspace deleted before its process ends: nothing is left to seal, so the
    exit hook neither warns nor makes an empty database file."""
    db = tmp_path / "scratch.db"
    burst = (
        "import sys, pathlib\n"
        "from exchange import audit\n"
        "from exchange.store import Store\n"
        "store = Store(sys.argv[1])\n"
        "for i in range(30):\n"
        "    with store.session() as s:\n"
        "        audit.append(s, 'test.event', f'thing:{i}', {'i': i})\n"
        "store.engine.dispose()\n"
        "pathlib.Path(sys.argv[2]).unlink()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(
        [sys.executable, "-c", burst, f"sqlite:///{db}", str(db)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert "could not be sealed" not in done.stderr
    assert not db.exists()


def test_a_rolled_back_append_leaves_nothing_to_chain(store: Store) -> None:
    """Events whose transaction rolled back are gone, and the next ones chain without a gap."""
    with pytest.raises(RuntimeError), store.session() as s:
        audit.append(s, "test.event", "thing:lost", {})
        raise RuntimeError("the action failed")
    append_events(store, 2)
    assert [seq for _, seq, _, _ in chain(store)] == [1, 2]


def test_checkpoints_cover_consecutive_ranges_signed_and_witnessed(
    store: Store, home: Path
) -> None:
    """Every 5 events a checkpoint: consecutive ranges, each linked to the previous one's
    signature, each verifying under the public key beside the key file, each in the witness
    as stored, and each marked witnessed."""
    append_events(store, 12)
    result = audit.seal(store, force=True)  # the 2 left after the second checkpoint
    assert result.checkpoint is not None and result.checkpoint.count == 2

    cps = stored_checkpoints(store)
    assert [(c.seq_from, c.seq_to, c.count) for c in cps] == [(1, 5, 5), (6, 10, 5), (11, 12, 2)]
    assert [c.prev_signature for c in cps] == ["", cps[0].signature, cps[1].signature]
    public = keys.load_public(home / "audit-signing.key.pub")
    assert all(verify_signature(c, public) for c in cps)
    heads = {seq: h for _, seq, _, h in chain(store)}
    assert [c.head_hash for c in cps] == [heads[5], heads[10], heads[12]]
    lines = read_witness(home / "audit-witness.jsonl")
    assert [Checkpoint.from_line(doc) for _, doc in lines] == cps
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(AuditCheckpoint.witnessed)).scalars().all() == [True] * 3


def test_a_checkpoint_is_not_made_for_nothing(store: Store) -> None:
    """Forced with no event since the last checkpoint, the sealer writes none."""
    append_events(store, 2, checkpoint_last=True)
    assert len(stored_checkpoints(store)) == 1
    assert audit.seal(store, force=True).checkpoint is None
    assert len(stored_checkpoints(store)) == 1


def test_a_checkpoint_is_due_after_its_interval(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fewer than N events are checkpointed once T seconds have passed since the last one."""
    append_events(store, 2)
    assert stored_checkpoints(store) == []
    monkeypatch.setenv("EXCHANGE_AUDIT_CHECKPOINT_SECONDS", "0.001")
    assert audit.seal(store).checkpoint is not None
    assert [(c.seq_from, c.seq_to) for c in stored_checkpoints(store)] == [(1, 2)]


def test_the_end_of_a_run_is_sealed_in_a_checkpoint(
    home: Path, make_workspace: Callable[[str], Workspace]
) -> None:
    """A run's final event forces a checkpoint: every event of the run is sealed when
    run_resource returns, and the witness holds it."""
    nodes = {n: ("sqlite", f"{{path: {n}.db}}") for n in ("src", "a", "b")}
    ws = make_workspace(catalog_yaml(nodes, RESOURCE.replace("MODE", "incremental")))
    make_source(home / "src.db", [(i, f"企业{i}", None, T0) for i in range(1, 11)])
    add_subscription(ws, "R1", "a", ["id", "name"], FAR)

    summary = run_resource(ws, "R1")

    assert summary.status == "succeeded"
    rows = chain(ws.store)
    assert all(seq is not None for _, seq, _, _ in rows)
    cps = stored_checkpoints(ws.store)
    assert cps[-1].seq_to == len(rows)
    assert [c.seq_from for c in cps] == [1] + [c.seq_to + 1 for c in cps[:-1]]
    witnessed = [Checkpoint.from_line(d) for _, d in read_witness(home / "audit-witness.jsonl")]
    assert witnessed[-1] == cps[-1]


def test_the_key_is_made_private_on_first_need(store: Store, home: Path) -> None:
    """The first checkpoint makes the key file 0600 and its public half beside it."""
    append_events(store, 1, checkpoint_last=True)
    key_file = home / "audit-signing.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    private = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    assert isinstance(private, Ed25519PrivateKey)
    assert keys.key_id(keys.load_public(home / "audit-signing.key.pub")) == keys.key_id(
        private.public_key()
    )


def test_a_lost_key_is_not_made_anew_once_checkpoints_exist(store: Store, home: Path) -> None:
    """With checkpoints signed, a missing key file is refused, naming the file: a new key
    would sign a history the old one never saw."""
    append_events(store, 1, checkpoint_last=True)
    (home / "audit-signing.key").unlink()
    append_events(store, 1)
    with pytest.raises(BadInput, match="audit-signing.key is missing"):
        audit.seal(store, force=True)
    assert not (home / "audit-signing.key").exists()
    # The events were chained all the same; only the checkpoint waits for the key.
    assert [seq for _, seq, _, _ in chain(store)] == [1, 2]


def test_a_key_given_by_environment_variable_signs(
    store: Store, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EXCHANGE_AUDIT_KEY_ENV names the variable holding the PEM: no key file is made."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    monkeypatch.setenv("AUDIT_PEM", pem)
    monkeypatch.setenv("EXCHANGE_AUDIT_KEY_ENV", "AUDIT_PEM")
    append_events(store, 1, checkpoint_last=True)
    [cp] = stored_checkpoints(store)
    assert verify_signature(cp, private.public_key())
    assert cp.key_id == keys.key_id(private.public_key())
    assert not (home / "audit-signing.key").exists()


@pytest.mark.parametrize("value", [None, "-----BEGIN PRIVATE KEY-----\nnot a key\n"])
def test_a_bad_key_variable_is_named_never_shown(
    home: Path, monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    """A missing or unreadable key variable is an error naming the variable, not its value."""
    monkeypatch.setenv("EXCHANGE_AUDIT_KEY_ENV", "AUDIT_PEM")
    if value is None:
        monkeypatch.delenv("AUDIT_PEM", raising=False)
    else:
        monkeypatch.setenv("AUDIT_PEM", value)
    with pytest.raises(BadInput) as caught:
        keys.signing_key(AuditSettings.from_env(Settings.from_env()), may_create=True)
    assert "AUDIT_PEM" in str(caught.value)
    assert "not a key" not in str(caught.value)


def test_keygen_writes_a_pair_and_never_overwrites(home: Path) -> None:
    """keygen makes the private key 0600 and its public half; a second keygen is refused."""
    made = keys.keygen(home / "k" / "signing.key")
    assert stat.S_IMODE(os.stat(made.path).st_mode) == 0o600
    assert made.public_path == home / "k" / "signing.key.pub"
    assert made.key_id == keys.key_id(keys.load_public(made.public_path))
    before = made.path.read_bytes()
    with pytest.raises(BadInput, match="exists"):
        keys.keygen(made.path)
    assert made.path.read_bytes() == before


def test_a_key_readable_by_others_is_refused(home: Path) -> None:
    """A key file group or others may read is refused, saying how to fix it."""
    made = keys.keygen(home / "signing.key")
    os.chmod(made.path, 0o644)
    with pytest.raises(BadInput, match="chmod 600"):
        keys.signing_key(AuditSettings(made.path, home / "w.jsonl"), may_create=False)


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_a_chain_written_before_migration_0012_keeps_verifying(
    request: pytest.FixtureRequest, home: Path, backend: str
) -> None:
    """Events chained the former way (in id order, with a gap where a transaction rolled
    back) get their positions in id order, verify, and the next events chain after them."""
    url = (
        f"sqlite:///{home}/old.db"
        if backend == "sqlite"
        else request.getfixturevalue("pg_database")
    )
    engine = create_store_engine(url)
    command.upgrade(_alembic_config(engine), "0011")
    events = sa.table(
        "audit_events",
        *(sa.column(c) for c in ("id", "actor", "kind", "subject", "prev_hash", "hash")),
        sa.column("at", sa.DateTime()),
        sa.column("payload", sa.JSON()),
    )
    prev = audit.GENESIS
    for n in range(4):
        at = T0.replace(minute=n)
        payload = {"n": n}
        h = audit.link(prev, audit.canonical_event(at, "engine", "old", "x", payload))
        row = {"at": at, "actor": "engine", "kind": "old", "subject": "x",
               "payload": payload, "prev_hash": prev, "hash": h}  # fmt: skip
        with engine.connect() as conn, conn.begin() as tx:
            conn.execute(sa.insert(events).values(**row))
            if n == 2:
                tx.rollback()  # an id lost (on PostgreSQL: a gap in the ids)
                continue
        prev = h
    engine.dispose()

    store = Store(url)
    try:
        assert [seq for _, seq, _, _ in chain(store)] == [1, 2, 3]
        append_events(store, 2)
        assert [seq for _, seq, _, _ in chain(store)] == [1, 2, 3, 4, 5]
        with store.session() as s:
            assert verify_chain(s) == ChainCheck(5)
    finally:
        store.close()


def test_the_log_is_indexed_by_time_and_by_what_is_pending(store: Store) -> None:
    """Exports and who read a window of time by an index; the sealer's look for unchained
    events reads an index of those alone (the same cost at a million chained events)."""
    indexes = {i["name"]: i for i in sa.inspect(store.engine).get_indexes("audit_events")}

    assert indexes["ix_audit_events_at"]["column_names"] == ["at"]
    assert indexes["ix_audit_events_pending"]["column_names"] == ["id"]


@pytest.mark.postgres
def test_a_busy_sealer_hands_the_lock_to_a_run_end_at_once(
    pg_database: str, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL one store's sealer holds the lock while commits keep coming (it seals
    for all); a run's end on another store, which waits for the lock to sign its checkpoint,
    is handed it at the holder's next round: the checkpoint is stored while the load goes
    on (the bound is a round or two; the test allows a loaded machine 5 s)."""
    monkeypatch.setenv("EXCHANGE_AUDIT_CHECKPOINT_EVENTS", "1000000")  # only the forced one
    monkeypatch.setenv("EXCHANGE_AUDIT_CHECKPOINT_SECONDS", "3600")
    busy, other = Store(pg_database), Store(pg_database, migrate=False)
    stop = threading.Event()

    def load() -> None:
        i = 0
        while not stop.is_set():
            with busy.session() as s:
                audit.append(s, "test.load", f"load:{i}", {"i": i})
            i += 1

    def run_end() -> None:
        with other.session() as s:
            audit.append(s, "run.finished", "run:1", {}, checkpoint=True)

    def checkpoints() -> int:
        with other.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count(AuditCheckpoint.id))).scalar_one())

    loader, ender = threading.Thread(target=load), threading.Thread(target=run_end)
    loader.start()
    try:
        started = time.monotonic()
        while time.monotonic() - started < 5.0 and unchained(busy) == 0:
            time.sleep(0.01)
        time.sleep(0.3)  # the busy store's sealer holds the lock by now
        asked = time.monotonic()
        ender.start()
        while checkpoints() == 0 and time.monotonic() - asked < 5.0:
            time.sleep(0.01)
        took = time.monotonic() - asked
        assert checkpoints() == 1
        assert loader.is_alive(), "the load stopped before the checkpoint"
        assert took < 5.0
    finally:
        stop.set()
        loader.join()
        ender.join()
    assert settle(busy) and settle(other)
    assert unchained(busy) == 0
    with busy.session() as s:
        assert verify_chain(s).broken_id is None
    busy.close()
    other.close()
