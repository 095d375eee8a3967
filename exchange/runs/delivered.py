"""What a table subscription already holds near its watermark, so that it is not sent again.

An incremental extract reads from each watermark inclusively (``>=``: rows tying on the
boundary are never lost) and, with a ``cursor_lag``, a look-back window below it (rows a long
transaction committed late are not lost either). Both bring back rows the subscriber already
has. The store keeps, per subscription, the hash of the granted fields of every row it holds
whose cursor lies in the window of its watermark (``delivered_rows``); a delivery drops the rows
whose hash is there (``RowMemory.sift``), so "rows delivered" counts real changes.

Bounded: only the window's rows are kept, and each delivery replaces them with the window of
its new watermark (computed from this run's valid rows, which cover it: the extract starts at
or below every window). Crash safe: the new set is written by ``record_delivery`` in the
transaction that records the delivery and moves the watermark; until then the old set stands,
so a re-run (a merge redone, or a delivery the target had already committed) sifts and
remembers exactly the same rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.orm import Session

from exchange.runs.rowhash import HASH_TYPE, row_hashes
from exchange.store.models import DeliveredRow
from exchange.workspace import Workspace

CHUNK = 5_000


def held_rows(ws: Workspace, subscription_id: int) -> pa.Array:
    """The hashes of the rows the subscription holds in its watermark's window."""
    with ws.store.session() as s:
        found = s.execute(
            sa.select(DeliveredRow.row_hash).where(DeliveredRow.subscription_id == subscription_id)
        ).scalars()
        return pa.array([bytes(h) for h in found], HASH_TYPE)


class RowMemory:
    """One delivery's view of the memory: the rows held before (to drop them from the
    projection) and the rows held after (the new watermark's window, to remember)."""

    def __init__(
        self,
        subscription_id: int,
        fields: list[str],
        cursor: str,
        held: pa.Array,
        old_mark: Any,
        floor: Any,
        drop: bool = True,
    ):
        self.subscription_id = subscription_id
        self.fields = fields
        self.cursor = cursor
        self.held = held
        self.old_mark = old_mark  # rows above it cannot be held (None: nothing is)
        self.floor = floor  # the new window starts here (None: nothing to remember)
        self.drop = drop  # False: a reconciling load stages every row (only remember)
        self.kept: list[pa.Array] = []
        self.skipped = 0

    def sift(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """``batch`` without the rows the subscriber holds unchanged; remember the rows of
        the new window. Only rows that may be held or must be remembered are hashed."""
        if not batch.num_rows:
            return batch
        col = batch.column(self.cursor)
        may_hold = self.drop and len(self.held) > 0 and self.old_mark is not None
        need = pa.array(np.zeros(batch.num_rows, dtype=bool))
        if may_hold:
            bound = pa.scalar(self.old_mark, type=col.type)
            need = pc.or_(need, pc.fill_null(pc.less_equal(col, bound), False))
        window = None
        if self.floor is not None:
            window = pc.fill_null(
                pc.greater_equal(col, pa.scalar(self.floor, type=col.type)), False
            )
            need = pc.or_(need, window)
        if not pc.any(need).as_py():
            return batch
        some = batch.filter(need)
        hashes = row_hashes(some, self.fields)
        if window is not None:
            self.kept.append(hashes.filter(window.filter(need)))
        if not may_hold:
            return batch
        held_now = pc.is_in(hashes, value_set=self.held)
        if not pc.any(held_now).as_py():
            return batch
        keep = np.ones(batch.num_rows, dtype=bool)
        keep[need.to_numpy(zero_copy_only=False)] = ~held_now.to_numpy(zero_copy_only=False)
        self.skipped += int(batch.num_rows - keep.sum())
        return batch.filter(pa.array(keep))

    def after(self) -> pa.Array:
        """The hashes the subscription holds in its new window, once delivered."""
        if not self.kept:
            return pa.array([], HASH_TYPE)
        return pc.unique(pa.concat_arrays(self.kept))


def remember(s: Session, subscription_id: int, after: pa.Array) -> None:
    """Replace the subscription's remembered rows with ``after`` (in the caller's
    transaction): only the difference is written."""
    before = pa.array(
        [
            bytes(h)
            for h in s.execute(
                sa.select(DeliveredRow.row_hash).where(
                    DeliveredRow.subscription_id == subscription_id
                )
            ).scalars()
        ],
        HASH_TYPE,
    )
    gone = before.filter(pc.invert(pc.is_in(before, value_set=after))).to_pylist()
    new = after.filter(pc.invert(pc.is_in(after, value_set=before))).to_pylist()
    for start in range(0, len(gone), CHUNK):
        s.execute(
            sa.delete(DeliveredRow).where(
                DeliveredRow.subscription_id == subscription_id,
                DeliveredRow.row_hash.in_(gone[start : start + CHUNK]),
            )
        )
    for start in range(0, len(new), CHUNK):
        s.execute(
            sa.insert(DeliveredRow),
            [
                {"subscription_id": subscription_id, "row_hash": h}
                for h in new[start : start + CHUNK]
            ],
        )
