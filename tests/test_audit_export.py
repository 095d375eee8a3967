"""The audit export an outside auditor verifies: JSON lines with whole signed checkpoints around
the window, checked by docs/tools/verify_audit_export.py (the standard library and
``cryptography``, none of the engine's code) in a subprocess. An export of the demo's own log
verifies; an edited event, a removed line, an altered or removed checkpoint and a stranger's key
each fail it, naming the line; events after the last checkpoint are exported marked unsealed.
The engine-appended log exports and verifies on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from exchange import audit
from exchange.audit import export as export_module
from exchange.audit import keys
from exchange.audit.export import export, has_checkpoints
from exchange.audit.seal import configure, seal
from exchange.audit.settings import AuditSettings
from exchange.cli.app import app as cli
from exchange.kernel.errors import BadInput
from exchange.store import Store
from exchange.store.models import AuditCheckpoint, AuditEvent

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "docs" / "tools" / "verify_audit_export.py"
EVER = (dt.datetime(2000, 1, 1), dt.datetime(2100, 1, 1))


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The demo run once (small): its store holds the engine's own events, checkpointed at the
    end of every run, signed by a key and witnessed outside the demo's home."""
    from exchange.demo.run import run_demo

    base = tmp_path_factory.mktemp("audit-demo")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EXCHANGE_AUDIT_KEY_FILE", str(base / "keys" / "audit-signing.key"))
        mp.setenv("EXCHANGE_AUDIT_WITNESS", str(base / "witness" / "audit-witness.jsonl"))
        run_demo(base / "home", rows=300, say=lambda _: None)
        yield base


def settings_of(base: Path) -> AuditSettings:
    return AuditSettings(
        key_file=base / "keys" / "audit-signing.key",
        witness=base / "witness" / "audit-witness.jsonl",
    )


def write_export(store: Store, cfg: AuditSettings, path: Path, since: dt.datetime,
                 until: dt.datetime) -> export_module.ExportSummary:  # fmt: skip
    """Export as ``exchange audit export`` does (no key yet while nothing was signed)."""
    with store.session() as s, path.open("w", encoding="utf-8") as f:
        public = keys.public_key(cfg) if has_checkpoints(s) else None
        return export(
            s, f, since=since, until=until, installation=store.installation_id,
            public_key=public,
        )  # fmt: skip


def verify_tool(export_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The standalone verifier in a fresh interpreter that cannot import the engine (its
    working directory and path hold no ``exchange``)."""
    return subprocess.run(
        [sys.executable, "-I", str(TOOL), str(export_path), *args],
        capture_output=True, text=True, timeout=60, cwd=export_path.parent,
    )  # fmt: skip


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(t) for t in path.read_text(encoding="utf-8").splitlines()]


def rewrite(path: Path, docs: list[dict[str, Any]]) -> None:
    path.write_text(
        "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8"
    )


@pytest.fixture
def demo_store(demo: Path) -> Iterator[Store]:
    st = Store(f"sqlite:///{demo / 'home' / 'exchange.db'}")
    configure(st, settings_of(demo))
    yield st
    st.close()


def test_the_verifier_imports_nothing_of_the_engine() -> None:
    """The tool an auditor runs needs Python's standard library and ``cryptography`` only."""
    imported = {
        line.split()[1].split(".")[0]
        for line in TOOL.read_text(encoding="utf-8").splitlines()
        if line.startswith(("import ", "from "))
    }
    assert imported <= {"__future__", "argparse", "base64", "hashlib", "json", "sys",
                        "collections", "typing", "cryptography"}  # fmt: skip


def test_an_export_of_the_demo_verifies_with_the_standalone_tool(
    demo: Path, demo_store: Store, tmp_path: Path
) -> None:
    """Every event of the demo's runs and workflow steps, every checkpoint: the tool recomputes
    the hashes and links, checks each signature with the key the operator hands over, and
    says so (exit 0)."""
    out = tmp_path / "audit.jsonl"
    summary = write_export(demo_store, settings_of(demo), out, *EVER)
    with demo_store.session() as s:
        events = s.execute(sa.select(sa.func.count()).select_from(AuditEvent)).scalar_one()
        cps = s.execute(sa.select(sa.func.count()).select_from(AuditCheckpoint)).scalar_one()
    assert (summary.events, summary.checkpoints, summary.unsealed) == (events, cps, 0)
    kinds = {d["kind"] for d in lines(out) if d["type"] == "event"}
    assert {"run.planned", "delivery.delivered", "run.succeeded", "subscription.added"} <= kinds
    pub = keys.public_path(settings_of(demo).key_file)
    done = verify_tool(out, "--public-key", str(pub))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{events} events (seq 1-{events})" in done.stdout
    assert f"{cps} checkpoints" in done.stdout
    assert "read from the export itself" not in done.stdout


def test_the_header_states_the_installation_key_window_and_schemes(
    demo: Path, demo_store: Store, tmp_path: Path
) -> None:
    out = tmp_path / "audit.jsonl"
    write_export(demo_store, settings_of(demo), out, *EVER)
    header = lines(out)[0]
    assert header["type"] == "header" and header["format"] == 1
    assert header["installation"] == demo_store.installation_id
    assert header["key_id"] == keys.key_id(keys.public_key(settings_of(demo)))
    assert header["public_key"].startswith("-----BEGIN PUBLIC KEY-----")
    assert (header["since"], header["until"]) == ("2000-01-01T00:00:00Z", "2100-01-01T00:00:00Z")
    assert "sha256" in header["hash"] and "Ed25519" in header["signature"]


def test_a_window_is_widened_to_the_whole_checkpoints_holding_it(
    demo: Path, demo_store: Store, tmp_path: Path
) -> None:
    """A window starting and ending inside checkpoints exports from the first one's start to
    the last one's end, anchored on the checkpoint before it: still verified."""
    with demo_store.session() as s:
        cps = s.execute(sa.select(AuditCheckpoint).order_by(AuditCheckpoint.seq_from)).scalars()
        second = list(cps)[1]
        inside = s.execute(
            sa.select(AuditEvent.at).where(AuditEvent.seq == second.seq_from + 1)
        ).scalar_one()
    out = tmp_path / "audit.jsonl"
    summary = write_export(
        demo_store, settings_of(demo), out, inside, inside + dt.timedelta(microseconds=1)
    )
    docs = lines(out)
    assert docs[1]["type"] == "anchor" and docs[1]["seq_to"] == second.seq_from - 1
    seqs = [d["seq"] for d in docs if d["type"] == "event"]
    assert seqs == list(range(second.seq_from, second.seq_to + 1))
    assert docs[-1]["type"] == "checkpoint" and docs[-1]["seq_to"] == second.seq_to
    assert summary.anchored
    done = verify_tool(out)
    assert done.returncode == 0, done.stdout
    assert "anchored on the signed checkpoint" in done.stdout
    assert "read from the export itself" in done.stdout


def _edit_event(docs: list[dict[str, Any]]) -> int:
    i = next(i for i, d in enumerate(docs) if d.get("kind") == "delivery.delivered")
    docs[i]["payload"]["rows"] += 1
    return i


def _remove_event(docs: list[dict[str, Any]]) -> int:
    i = next(i for i, d in enumerate(docs) if d["type"] == "event" and d["seq"] == 3)
    del docs[i]
    return i  # the next line now holds the gap


def _alter_checkpoint(docs: list[dict[str, Any]]) -> int:
    i = next(i for i, d in enumerate(docs) if d["type"] == "checkpoint")
    docs[i]["at"] = "2020-01-01T00:00:00Z"
    return i


def _remove_checkpoint(docs: list[dict[str, Any]]) -> int:
    i = next(i for i, d in enumerate(docs) if d["type"] == "checkpoint")
    del docs[i]
    # The next checkpoint then starts where the removed one did not end.
    return next(j for j, d in enumerate(docs) if d["type"] == "checkpoint" and j >= i)


def _rechain_edit(docs: list[dict[str, Any]]) -> int:
    """Edit an event and recompute every later hash (what someone with the store could do):
    the links hold, the signed head hash does not."""
    import hashlib

    i = _edit_event(docs)
    prev = docs[i]["prev_hash"]
    for d in docs[i:]:
        if d["type"] == "event":
            canonical = json.dumps(
                {k: d[k] for k in ("at", "actor", "kind", "subject", "payload")},
                sort_keys=True, ensure_ascii=False, separators=(",", ":"),
            )  # fmt: skip
            d["prev_hash"] = prev
            d["hash"] = prev = hashlib.sha256((prev + canonical).encode()).hexdigest()
    return next(j for j, d in enumerate(docs) if d["type"] == "checkpoint" and j > i)


def _remove_first_event(docs: list[dict[str, Any]]) -> int:
    del docs[1]
    return 1


def _remove_last_line(docs: list[dict[str, Any]]) -> int:
    del docs[-1]
    return len(docs) - 1


@pytest.mark.parametrize(
    ("tamper", "says"),
    [
        (_edit_event, "does not match its hash"),
        (_remove_event, "follows seq 2"),
        (_alter_checkpoint, "signature does not verify"),
        (_remove_checkpoint, "should start at seq 1"),
        (_rechain_edit, "head_hash is not the hash"),
        (_remove_last_line, "marked sealed but no checkpoint follows"),
        (_remove_first_event, "the header announces seq 1"),
    ],
    ids=[
        "edited-event",
        "removed-event",
        "altered-checkpoint",
        "removed-checkpoint",
        "rechained",
        "removed-last-checkpoint",
        "removed-first-event",
    ],
)
def test_a_tampered_export_fails_naming_the_line(
    demo: Path, demo_store: Store, tmp_path: Path, tamper: Any, says: str
) -> None:
    out = tmp_path / "audit.jsonl"
    write_export(demo_store, settings_of(demo), out, *EVER)
    docs = lines(out)
    index = tamper(docs)
    rewrite(out, docs)
    done = verify_tool(out)
    assert done.returncode == 1, done.stdout
    assert done.stdout.startswith("FAILED"), done.stdout
    assert says in done.stdout
    assert f"line {index + 1}:" in done.stdout


def test_a_strangers_key_fails_the_export(demo: Path, demo_store: Store, tmp_path: Path) -> None:
    """The key the operator hands over is not the one in the header: refused at line 1."""
    out = tmp_path / "audit.jsonl"
    write_export(demo_store, settings_of(demo), out, *EVER)
    other = tmp_path / "other.pub"
    other.write_bytes(
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    done = verify_tool(out, "--public-key", str(other))
    assert done.returncode == 1
    assert "line 1: the header's public key" in done.stdout


def test_a_header_key_swapped_with_resigned_checkpoints_is_caught_by_the_operators_key(
    demo: Path, demo_store: Store, tmp_path: Path
) -> None:
    """Someone who re-signs every checkpoint with a key of their own and puts it in the
    header passes the self-check, never the check with the installation's key."""
    import base64

    out = tmp_path / "audit.jsonl"
    write_export(demo_store, settings_of(demo), out, *EVER)
    docs = lines(out)
    forged = Ed25519PrivateKey.generate()
    kid = keys.key_id(forged.public_key())
    docs[0]["public_key"] = (
        forged.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    docs[0]["key_id"] = kid
    prev = ""
    for d in docs:
        if d["type"] == "checkpoint":
            d["key_id"], d["prev_signature"] = kid, prev
            doc = {k: v for k, v in d.items() if k not in ("type", "signature")}
            raw = json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
            d["signature"] = prev = base64.b64encode(forged.sign(raw.encode())).decode()
    rewrite(out, docs)
    assert verify_tool(out).returncode == 0  # consistent with itself
    pub = keys.public_path(settings_of(demo).key_file)
    done = verify_tool(out, "--public-key", str(pub))
    assert done.returncode == 1
    assert "line 1: the header's public key" in done.stdout


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A migrated metadata store sealed with a key and witness of the test's own."""
    url = (
        f"sqlite:///{tmp_path / 'm.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_database")
    )
    st = Store(url)
    configure(st, cfg_in(tmp_path))
    yield st
    st.close()


def cfg_in(tmp_path: Path, every: int = 4) -> AuditSettings:
    return AuditSettings(
        key_file=tmp_path / "k" / "audit.key",
        witness=tmp_path / "w" / "witness.jsonl",
        checkpoint_events=every,
        checkpoint_seconds=3600,
    )


def append_events(st: Store, n: int, start: int = 0) -> None:
    """Deliveries and gateway calls appended as the engine does, each in its own transaction
    (the sealer chains them, checkpointing every four)."""
    for i in range(start, start + n):
        with st.session() as s:
            if i % 2:
                audit.append(s, "delivery.delivered", f"subscription:{i % 3 + 1}",
                             {"run": f"r{i}", "rows": i * 10, "note": "企业登记 ✓"})  # fmt: skip
            else:
                audit.append_many(s, [audit.Event("gateway.call", "/R/op",
                                                  {"status": 200, "bytes": 1.5 * i})])  # fmt: skip
    assert audit.settle(st)  # commits in quick succession: sealed by the timer thread


def test_the_engines_log_exports_and_verifies_on_each_store(store: Store, tmp_path: Path) -> None:
    append_events(store, 10)
    seal(store, force=True)
    out = tmp_path / "audit.jsonl"
    summary = write_export(store, cfg_in(tmp_path), out, *EVER)
    assert (summary.events, summary.unsealed) == (10, 0)
    assert summary.checkpoints >= 3
    done = verify_tool(out, "--public-key", str(keys.public_path(cfg_in(tmp_path).key_file)))
    assert done.returncode == 0, done.stdout


def test_events_after_the_last_checkpoint_are_exported_unsealed(
    store: Store, tmp_path: Path
) -> None:
    """Two events past the last checkpoint (of four) are exported marked ``"sealed": false``:
    their links verify, and the tool says no signature proves them yet."""
    append_events(store, 10)
    out = tmp_path / "audit.jsonl"
    summary = write_export(store, cfg_in(tmp_path), out, *EVER)
    docs = lines(out)
    tail = [d for d in docs if d["type"] == "event" and d["sealed"] is False]
    assert [d["seq"] for d in tail] == [9, 10]
    assert summary.unsealed == 2 and docs[0]["unsealed"] == 2
    done = verify_tool(out)
    assert done.returncode == 0, done.stdout
    assert "2 events after the last checkpoint are NOT sealed" in done.stdout
    docs[-1]["sealed"] = True  # claiming a seal no checkpoint gives
    rewrite(out, docs)
    assert verify_tool(out).returncode == 1


def test_a_window_after_the_last_checkpoint_is_anchored_on_it(store: Store, tmp_path: Path) -> None:
    """Only unsealed events in the window: the export starts right after the last checkpoint,
    which anchors its first link."""
    append_events(store, 10)
    with store.session() as s:
        at = s.execute(sa.select(AuditEvent.at).where(AuditEvent.seq == 10)).scalar_one()
    out = tmp_path / "audit.jsonl"
    write_export(store, cfg_in(tmp_path), out, at, at + dt.timedelta(seconds=1))
    docs = lines(out)
    assert docs[1]["type"] == "anchor" and docs[1]["seq_to"] == 8
    assert [d["seq"] for d in docs if d["type"] == "event"] == [9, 10]
    assert verify_tool(out).returncode == 0


def test_an_empty_window_exports_only_the_header(store: Store, tmp_path: Path) -> None:
    append_events(store, 3)
    out = tmp_path / "audit.jsonl"
    summary = write_export(store, cfg_in(tmp_path), out, EVER[0], EVER[0] + dt.timedelta(days=1))
    assert summary.events == 0 and len(lines(out)) == 1
    done = verify_tool(out)
    assert done.returncode == 0 and "0 events (no events)" in done.stdout


def test_the_export_reads_the_chain_a_page_at_a_time(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages smaller than a checkpoint (memory stays flat) still give every event once."""
    monkeypatch.setattr(export_module, "_PAGE", 3)
    append_events(store, 25)
    seal(store, force=True)
    out = tmp_path / "audit.jsonl"
    write_export(store, cfg_in(tmp_path), out, *EVER)
    assert [d["seq"] for d in lines(out) if d["type"] == "event"] == list(range(1, 26))
    assert verify_tool(out).returncode == 0


def test_exchange_audit_export_writes_the_file_the_tool_verifies(
    demo: Path, tmp_path: Path
) -> None:
    """``exchange audit export --since DATE --until DATE --out FILE``: dates in Asia/Shanghai,
    ``--until``'s day included; what it wrote is said on stderr."""
    out = tmp_path / "export.jsonl"
    env = {"EXCHANGE_HOME": str(demo / "home"),
           "EXCHANGE_DB_URL": f"sqlite:///{demo / 'home' / 'exchange.db'}",
           "EXCHANGE_AUDIT_KEY_FILE": str(settings_of(demo).key_file),
           "EXCHANGE_AUDIT_WITNESS": str(settings_of(demo).witness)}  # fmt: skip
    from exchange.kernel.clock import today

    day = today().isoformat()
    result = CliRunner().invoke(
        cli, ["audit", "export", "--since", day, "--until", day, "--out", str(out)], env=env
    )
    assert result.exit_code == 0, result.output
    assert "exported" in result.output and "checkpoints" in result.output
    assert not out.with_name(out.name + ".part").exists()
    docs = lines(out)
    assert docs[0]["type"] == "header" and len(docs) > 10
    assert verify_tool(out).returncode == 0


def test_exchange_audit_export_refuses_a_window_the_wrong_way_round(demo: Path) -> None:
    env = {"EXCHANGE_HOME": str(demo / "home"),
           "EXCHANGE_DB_URL": f"sqlite:///{demo / 'home' / 'exchange.db'}",
           "EXCHANGE_AUDIT_KEY_FILE": str(settings_of(demo).key_file)}  # fmt: skip
    result = CliRunner().invoke(
        cli, ["audit", "export", "--since", "2026-12-02", "--until", "2026-12-01"], env=env
    )
    assert isinstance(result.exception, BadInput)  # exit 2 from the console entry point
    assert "--since 2026-12-02 is not before --until 2026-12-01" in str(result.exception)
