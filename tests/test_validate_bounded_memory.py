"""Whole-run rules in bounded memory: ``unique`` and the duplicate-key check spill their 64-bit
hashes to partition files by the hashes' top bits, and find the same duplicates as when every
hash is held in memory, wherever the duplicates fall (other batches, other partitions); a hash
collision still never quarantines a row whose value is unique; the files go when done."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from exchange.demo.registry import COLUMNS
from exchange.flow import run_resource
from exchange.runs.handle import RunHandle
from exchange.runs.rundir import RunDir
from exchange.tables import validate as validate_step
from exchange.workflow.grants import add_subscription
from exchange.workspace import Workspace
from quality import key_hash
from quality.key_hash import PARTITION_BITS, key_hashes, repeated_hashes
from quality.rules import DuplicateKey, Unique
from tests.conftest import catalog_yaml
from tests.sources import create_source, registry
from tests.test_quality_flow import GRANT_A, SQLITE_NODES, resource_yaml

FAR = dt.date.today() + dt.timedelta(days=300)


@pytest.fixture
def tiny_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Spill after 7 hashes: every run of these tests goes through the partition files."""
    monkeypatch.setattr(key_hash, "SPILL_ROWS", 7)


def flagged(rule: DuplicateKey | Unique, batches: list[pa.RecordBatch]) -> list[int]:
    masks = [rule.violations(b).to_numpy(zero_copy_only=False) for b in batches]
    return np.flatnonzero(np.concatenate(masks)).tolist()


@pytest.mark.usefixtures("tiny_memory")
def test_duplicate_keys_in_other_batches_and_partitions_are_all_found_when_spilled(
    tmp_path: Path,
) -> None:
    ids = np.arange(1000)
    ids[999], ids[500], ids[3] = 0, 777, 777  # 0 twice, 777 three times
    batches = pa.table({"id": pa.array(ids)}).to_batches(max_chunksize=64)
    partitions = key_hashes(pa.table({"id": [0, 777]}), ["id"]) >> np.uint64(64 - PARTITION_BITS)
    assert len(set(partitions.tolist())) == 2  # the two duplicated keys: two partitions

    spilled = DuplicateKey(field="id").over(lambda: batches, spill=tmp_path / "spill")
    in_memory = DuplicateKey(field="id").over(lambda: batches)

    assert spilled.duplicates is not None
    assert sorted(spilled.duplicates.column("id").to_pylist()) == [0, 777]
    assert flagged(spilled, batches) == flagged(in_memory, batches) == [0, 3, 500, 777, 999]
    assert list((tmp_path / "spill").iterdir()) == []  # the partition files are gone


@pytest.mark.usefixtures("tiny_memory")
def test_composite_keys_with_a_null_part_are_left_to_null_key_when_spilled(
    tmp_path: Path,
) -> None:
    batches = [
        pa.record_batch({"region": ["410402", None, "410403"], "id": [1, 1, 1]}),
        pa.record_batch({"region": [None, "410402", "410404"], "id": [1, 1, 2]}),
        pa.record_batch({"region": ["410404", "410404"], "id": [3, 2]}),
    ]
    rule = DuplicateKey(field="region", keys=("region", "id")).over(lambda: batches, spill=tmp_path)
    assert flagged(rule, batches) == [0, 4, 5, 7]  # 410402|1 and 410404|2, never the nulls


@pytest.mark.usefixtures("tiny_memory")
def test_unique_values_repeated_across_batches_are_found_when_spilled(tmp_path: Path) -> None:
    values = [f"91410400MA{i:08d}" for i in range(300)]
    values[250] = values[2]
    values[120] = None  # type: ignore[call-overload]
    values[121] = None  # type: ignore[call-overload]  # nulls are never duplicates
    batches = pa.table({"uscc": values}).to_batches(max_chunksize=40)

    spilled = Unique(field="uscc").over_run(lambda: batches, spill=tmp_path)
    whole = Unique(field="uscc").over(pa.chunked_array([b.column(0) for b in batches]))

    assert spilled.duplicates is not None and spilled.duplicates.to_pylist() == [values[2]]
    assert flagged(spilled, batches) == flagged(whole, batches) == [2, 250]
    none = Unique(field="uscc").over_run(lambda: batches[:1], spill=tmp_path)
    assert none.duplicates is not None and none.duplicates.type == pa.string()
    assert flagged(none, batches[:1]) == []


@pytest.mark.usefixtures("tiny_memory")
def test_a_forced_hash_collision_never_quarantines_a_unique_value_when_spilled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every value hashes to 0: every row is a candidate, the comparison by value decides.
    monkeypatch.setattr(
        "quality.rules.key_hashes", lambda b, keys: np.zeros(b.num_rows, dtype=np.uint64)
    )
    monkeypatch.setattr("quality.rules.column_hash", lambda c: np.zeros(len(c), dtype=np.uint64))
    distinct = [
        pa.record_batch({"id": [1, 2, 3], "code": ["a", "b", "c"]}),
        pa.record_batch({"id": [4, 5], "code": ["d", "e"]}),
    ]

    keys = DuplicateKey(field="id").over(lambda: distinct, spill=tmp_path)
    codes = Unique(field="code").over_run(lambda: distinct, spill=tmp_path)

    assert flagged(keys, distinct) == [] and flagged(codes, distinct) == []
    repeated = [*distinct, pa.record_batch({"id": [2], "code": ["e"]})]
    keys = DuplicateKey(field="id").over(lambda: repeated, spill=tmp_path)
    codes = Unique(field="code").over_run(lambda: repeated, spill=tmp_path)
    assert flagged(keys, repeated) == [1, 5] and flagged(codes, repeated) == [4, 5]


@pytest.mark.usefixtures("tiny_memory")
def test_partition_files_are_removed_when_reading_the_run_fails(tmp_path: Path) -> None:
    def broken() -> Iterator[np.ndarray]:
        yield np.arange(20, dtype=np.uint64)  # past SPILL_ROWS: partition files written
        raise OSError("staged file unreadable")

    with pytest.raises(OSError, match="staged file unreadable"):
        repeated_hashes(broken(), tmp_path)
    assert list(tmp_path.iterdir()) == []
    # And without failing: the hashes seen twice, from whichever partitions.
    twice = np.array([5, 2**63 + 5, 9], dtype=np.uint64)
    found = repeated_hashes([np.arange(20, dtype=np.uint64), twice, twice[:2]], tmp_path)
    assert found.tolist() == [5, 9, 2**63 + 5]


@pytest.mark.usefixtures("tiny_memory")
def test_the_validate_step_quarantines_every_row_of_a_repeated_value_across_batches(
    tmp_path: Path, make_workspace: Callable[[str], Workspace]
) -> None:
    rows = registry(range(1, 501))  # batches of 150: the repeats sit in the first and last
    at = COLUMNS.index("uscc")
    rows[479] = rows[479][:at] + (rows[9][at],) + rows[479][at + 1 :]
    create_source(f"sqlite:///{tmp_path / 'src.db'}", rows)
    unique = resource_yaml().replace(
        "rules: {validator: uscc}", "rules: {validator: uscc, unique: true}"
    )
    ws = make_workspace(catalog_yaml(SQLITE_NODES, unique))
    add_subscription(ws, "ENT", "a", GRANT_A, FAR, target_table="ent")

    summary = run_resource(ws, "ENT")

    rd = RunHandle.open(ws, summary.run_id).dir
    bad = pq.read_table(rd.part("quarantine"))
    assert bad.column("id").to_pylist() == [10, 480]
    shown = str(rows[9][at])[:16]
    assert bad.column("_reasons").to_pylist() == [f"unique:uscc={shown}…"] * 2
    assert summary.quarantined == 2 and not (rd.path / "spill").exists()


def test_partition_files_a_killed_validate_left_are_cleared_when_it_runs_again(
    tmp_path: Path, make_workspace: Callable[[str], Workspace], monkeypatch: pytest.MonkeyPatch
) -> None:
    create_source(f"sqlite:///{tmp_path / 'src.db'}", registry(range(1, 301)))
    ws = make_workspace(catalog_yaml(SQLITE_NODES, resource_yaml()))
    add_subscription(ws, "ENT", "a", GRANT_A, FAR, target_table="ent")
    left: list[Path] = []

    def killed(rules: object, rd: RunDir, standing: object) -> None:
        # What a SIGKILL in the middle of spilling leaves: a partition directory with files.
        (rd.path / "spill" / "hashes-x").mkdir(parents=True)
        (rd.path / "spill" / "hashes-x" / "00").write_bytes(b"\0" * 8)
        left.append(rd.path / "spill")
        raise RuntimeError("killed while spilling")

    monkeypatch.setattr(validate_step, "_bound_to_run", killed)
    with pytest.raises(RuntimeError, match="killed while spilling"):
        run_resource(ws, "ENT")
    assert left[0].exists()
    monkeypatch.undo()

    again = run_resource(ws, "ENT")

    assert again.status == "succeeded" and left[0].parent.name == again.run_id
    assert again.extracted == 300 and again.quarantined == 0
    assert not left[0].exists()
