"""After validation: the quarantine index, the run's quality statistics, the resource-level
findings (hold-back threshold, row count, freshness) and the provider's quality ticket.

All of it is written in one transaction and is idempotent per run, so a validate step that
crashed after this and before its done-file can simply be redone.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.orm import Session

from exchange.catalog.model import Resource
from exchange.kernel.errors import BadInput
from exchange.quality.models import (
    ErrorReport,
    ErrorReportDelivery,
    QualityRunStat,
    QualityTicket,
    QuarantineEntry,
    QuarantineKeyCheck,
)
from exchange.quality.tickets import note_run
from exchange.runs import watermark
from exchange.runs.rowhash import HASH_TYPE, row_hashes
from exchange.runs.rundir import RunDir
from exchange.workspace import Workspace
from quality.evaluate import REASONS_COLUMN
from quality.mask import MASK_OF_VALIDATOR, STARS, mask_values
from quality.resource_checks import (
    bad_ratio_hold,
    freshness_allowance,
    row_count_hold,
    staleness,
)

KEY_SEPARATOR = "|"
INDEX_CHUNK = 5_000
KEY_FILE = "quarantine.key"  # in $EXCHANGE_HOME, 0600: the secret of the key digests
KEY_BYTES = 32
KEY_CHECK_TEXT = b"city-exchange quarantine key check"  # its HMAC is the key's check value


def row_keys(batch: pa.RecordBatch | pa.Table, primary_key: Sequence[str]) -> pa.Array:
    """Each row's primary key as text (composite keys joined with '|'), vectorised; a NUL in
    a text key shown as '␀' (such a row is quarantined, and a store may not hold a NUL)."""
    parts = [pc.cast(batch.column(k), pa.string()) for k in primary_key]
    if len(parts) == 1:
        out = parts[0]
    else:
        out = pc.binary_join_element_wise(*parts, KEY_SEPARATOR)
    out = pc.replace_substring(out, "\x00", "␀")
    return out.combine_chunks() if isinstance(out, pa.ChunkedArray) else out


def key_masks(resource: Resource) -> dict[str, str]:
    """The key fields whose values are ID or phone numbers (a ``resident_id``, ``mobile`` or
    ``phone`` validator), and how each is masked."""
    masks = {}
    for name in resource.primary_key:
        kind = MASK_OF_VALIDATOR.get(resource.field(name).rules.validator or "")
        if kind is not None:
            masks[name] = kind
    return masks


def shown_keys(batch: pa.RecordBatch | pa.Table, resource: Resource) -> pa.Array:
    """Each row's key as it may be shown and kept: ``row_keys`` with its ID and phone number
    parts masked as in the reasons (410****3X, 138****5678)."""
    masks = key_masks(resource)
    if not masks:
        return row_keys(batch, resource.primary_key)
    columns = {k: pc.cast(batch.column(k), pa.string()) for k in resource.primary_key}
    masked = {k: mask_values(v, masks.get(k)) if k in masks else v for k, v in columns.items()}
    return row_keys(pa.table(masked), resource.primary_key)


def mask_key_text(resource: Resource, keys: Sequence[str]) -> list[str]:
    """Keys written as quarantine writes them (a requester's ``--keys``), each masked as
    ``shown_keys`` masks a row's: its ID and phone number parts. A key of the wrong shape is
    masked whole, as the first such part would be. A part already masked stays as it is
    (masking twice would cut it further)."""
    masks = key_masks(resource)
    if not masks:
        return list(keys)
    pk = list(resource.primary_key)
    out = []
    for key in keys:
        parts = key.split(KEY_SEPARATOR) if len(pk) > 1 else [key]
        kinds: list[str | None] = [masks.get(c) for c in pk]
        if len(parts) != len(pk):
            parts, kinds = [key], [next(iter(masks.values()))]
        shown = [
            part if kind is None or STARS in part else str(mask_values(pa.array([part]), kind)[0])
            for part, kind in zip(parts, kinds, strict=True)
        ]
        out.append(KEY_SEPARATOR.join(shown))
    return out


def _check_value(secret: bytes) -> bytes:
    return hmac.new(secret, KEY_CHECK_TEXT, hashlib.sha256).digest()


def _store_is_keyed(s: Session) -> bool:
    """Whether the store holds digests made with some key (even one recorded before the
    check value was)."""
    in_index = sa.select(QuarantineEntry.id).where(QuarantineEntry.key_digest.is_not(None))
    in_reports = sa.select(ErrorReport.id).where(ErrorReport.key_digests.is_not(None))
    return any(s.execute(q.limit(1)).first() is not None for q in (in_index, in_reports))


def _restore(path: Path, what: str) -> BadInput:
    return BadInput(
        f"the quarantine key {path} {what}: restore that file from a backup of "
        "$EXCHANGE_HOME (every worker and the CLI must share one home). The masked row keys "
        "in the metadata store were made with it, and a new key would never match them: "
        "quarantined rows would never be released and error reports never reached"
    )


def _make_key(path: Path) -> None:
    """Write a new 32-byte key, durably, unless another process has just made one: the first
    one made wins and every process then reads it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(KEY_BYTES)
    tmp = path.with_name(f"{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
        f.flush()
        os.fsync(f.fileno())  # never a linked name over a key not yet on disk
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    except OSError:
        # A file system without hard links: create the name exclusively instead.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(key)
                f.flush()
                os.fsync(f.fileno())
    finally:
        tmp.unlink()


def _read_key(path: Path) -> bytes:
    secret = path.read_bytes()
    if len(secret) != KEY_BYTES:
        raise _restore(path, f"holds {len(secret)} bytes, not {KEY_BYTES}")
    return secret


def key_secret(ws: Workspace) -> bytes:
    """The key of the key digests, made once per home directory (shared by every worker, as
    the run directories are) and kept apart from the store: a store alone cannot be searched
    for a given ID number. The store keeps the key's check value: a key file that is lost
    or replaced is refused (``BadInput``), never silently made anew."""
    path = ws.settings.home / KEY_FILE
    with ws.store.session() as s:
        found = s.get(QuarantineKeyCheck, 1)
        expected = None if found is None else bytes(found.check_value)
        keyed = expected is not None or _store_is_keyed(s)
    if not path.exists():
        if keyed:
            raise _restore(path, "is missing")
        _make_key(path)
    secret = _read_key(path)
    mine = _check_value(secret)
    if expected is None:
        try:
            with ws.store.session() as s:
                s.add(QuarantineKeyCheck(id=1, check_value=mine))
        except sa.exc.IntegrityError:  # another process recorded it first
            with ws.store.session() as s:
                expected = bytes(s.get_one(QuarantineKeyCheck, 1).check_value)
    if expected is not None and not hmac.compare_digest(expected, mine):
        raise _restore(path, "is not the key the metadata store's masked row keys were made with")
    return secret


def key_digests(secret: bytes, keys: Sequence[str | None]) -> list[bytes | None]:
    """A keyed hash (HMAC-SHA256, 16 bytes) of each raw key, to match a masked entry by."""
    return [
        None if k is None else hmac.new(secret, k.encode(), hashlib.sha256).digest()[:16]
        for k in keys
    ]


def backfill_masked(ws: Workspace, resource: Resource, secret: bytes) -> int:
    """Mask what was written before keys were masked (migrations 0009, 0010): quarantine
    entries and error reports whose keys are raw and have no digest get the masked text and
    the digest of the raw key, and the resource's tickets their sample keys masked. Done
    once: a backfilled entry has its digest. Returns how many entries and reports."""
    with ws.store.session() as s:
        old = s.execute(
            sa.select(QuarantineEntry.id, QuarantineEntry.row_key).where(
                QuarantineEntry.resource_code == resource.code,
                QuarantineEntry.key_digest.is_(None),
            )
        ).all()
        reports = list(
            s.execute(
                sa.select(ErrorReport).where(
                    ErrorReport.resource_code == resource.code, ErrorReport.key_digests.is_(None)
                )
            ).scalars()
        )
        if not old and not reports:
            return 0
        raw = [k for _, k in old]
        for start in range(0, len(old), INDEX_CHUNK):
            part = slice(start, start + INDEX_CHUNK)
            s.execute(
                sa.update(QuarantineEntry),
                [
                    {"id": i, "row_key": m, "key_digest": d}
                    for (i, _), m, d in zip(
                        old[part],
                        mask_key_text(resource, raw[part]),
                        key_digests(secret, raw[part]),
                        strict=True,
                    )
                ],
            )
        for report in reports:
            report.key_digests = hex_digests(secret, report.row_keys)
            report.row_keys = mask_key_text(resource, report.row_keys)
            for d in s.execute(
                sa.select(ErrorReportDelivery).where(ErrorReportDelivery.report_id == report.id)
            ).scalars():
                d.key_digests = hex_digests(secret, d.keys)
                d.keys = mask_key_text(resource, d.keys)
        for ticket in s.execute(
            sa.select(QualityTicket).where(QualityTicket.resource_code == resource.code)
        ).scalars():
            shown = mask_key_text(resource, ticket.sample_keys)
            if shown != ticket.sample_keys:
                ticket.sample_keys = shown
        return len(old) + len(reports)


def hex_digests(secret: bytes, keys: Sequence[str]) -> list[str]:
    """``key_digests`` as text, as an error report keeps them."""
    return [d.hex() for d in key_digests(secret, keys) if d is not None]


def masked_secret(ws: Workspace, resource: Resource) -> bytes | None:
    """The digest key when ``resource`` has masked key fields (after backfilling what was
    written before), else ``None``: a resource without them needs no key file."""
    if not key_masks(resource):
        return None
    secret = key_secret(ws)
    backfill_masked(ws, resource, secret)
    return secret


@dataclass(frozen=True)
class Outcome:
    """The run-level verdict: ``held`` stops every delivery of the run; ``stale`` only flags."""

    held: str | None
    stale: str | None
    newest: str | None


def _newest(ws: Workspace, resource: Resource, high: str | None) -> str | None:
    """The newest cursor value at the source: this extract's, or the last run's if this one
    brought nothing new."""
    if high is not None or resource.cursor is None:
        return high
    with ws.store.session() as s:
        return s.execute(
            sa.select(QualityRunStat.newest_cursor)
            .where(
                QualityRunStat.resource_code == resource.code,
                QualityRunStat.newest_cursor.is_not(None),
            )
            .order_by(QualityRunStat.at.desc())
            .limit(1)
        ).scalar()


def judge_run(
    ws: Workspace,
    resource: Resource,
    extracted: int,
    quarantined: int,
    full_extract: bool,
    high: str | None,
    now: dt.datetime,
    repeats: int = 0,
) -> Outcome:
    """Resource-level rules on the run's counts and newest cursor value. ``repeats`` of the
    quarantined rows were quarantined unchanged by an earlier run: the bad-row ratio is of
    the other rows (``already_quarantined``)."""
    spec = resource.quality
    held = bad_ratio_hold(extracted - repeats, quarantined - repeats, spec) or row_count_hold(
        extracted, full_extract, spec
    )
    newest = _newest(ws, resource, high)
    allowance = freshness_allowance(spec, resource.update_cycle)
    stale = None
    if allowance is not None and resource.cursor is not None:
        value = watermark.decode(newest, resource.field(resource.cursor))
        stale = staleness(value, now, allowance)
    return Outcome(held, stale, newest)


def _repeats(
    secret: bytes | None, s: Session, run_id: str, resource: Resource, batch: pa.RecordBatch
) -> tuple[pa.Array, pa.Array, pa.Array]:
    """Each quarantined row's key, the hash of its values, and whether an earlier run's
    unreleased entry holds that very row (same key, same values). A key masked in the index
    is looked up by its digest (``secret`` is the digest key when the resource masks keys)."""
    keys = row_keys(batch, resource.primary_key)
    hashes = row_hashes(batch, resource.field_names)
    unique: list[str] = [k for k in pc.unique(keys).to_pylist() if k is not None]
    wanted: Sequence[object] = unique
    column: Any = QuarantineEntry.row_key
    if secret is not None:
        wanted, column = key_digests(secret, unique), QuarantineEntry.key_digest
    known: list[bytes] = []
    for start in range(0, len(wanted), INDEX_CHUNK):
        known += [
            bytes(h or b"")
            for h in s.execute(
                sa.select(QuarantineEntry.row_hash).where(
                    QuarantineEntry.resource_code == resource.code,
                    QuarantineEntry.released_run_id.is_(None),
                    QuarantineEntry.run_id != run_id,
                    QuarantineEntry.row_hash.is_not(None),
                    column.in_(wanted[start : start + INDEX_CHUNK]),
                )
            ).scalars()
        ]
    repeated = pc.is_in(hashes, value_set=pa.array(known, HASH_TYPE))
    return keys, hashes, repeated


def already_quarantined(ws: Workspace, run_id: str, resource: Resource, rd: RunDir) -> int:
    """How many of the run's quarantined rows an earlier run quarantined unchanged (a row at
    or near the watermark comes back in every incremental extract): they are judged once, so
    they count neither toward ``max_bad_ratio`` again nor in the quarantine list twice."""
    n = 0
    secret = masked_secret(ws, resource)
    with ws.store.session() as s:
        for batch in rd.batches("quarantine", columns=list(resource.field_names)):
            n += pc.sum(_repeats(secret, s, run_id, resource, batch)[2]).as_py() or 0
    return n


def record_validation(
    ws: Workspace,
    run_id: str,
    rd: RunDir,
    resource: Resource,
    counts: dict[str, int],
    by_dimension: dict[str, int],
    extracted: int,
    valid: int,
    quarantined: int,
    outcome: Outcome,
) -> None:
    """Write the quarantine index and the run's statistics; open or update the ticket."""
    samples: list[str] = []
    new_rows = 0  # not already quarantined unchanged by an earlier run
    # Read (and checked against the store) before the session: the check may be recorded.
    secret = masked_secret(ws, resource)
    masked = secret is not None
    with ws.store.session() as s:
        s.execute(sa.delete(QuarantineEntry).where(QuarantineEntry.run_id == run_id))
        for batch in rd.batches(
            "quarantine", columns=[*resource.field_names, REASONS_COLUMN], batch_size=INDEX_CHUNK
        ):
            keys_arr, hashes_arr, repeated = _repeats(secret, s, run_id, resource, batch)
            fresh = pc.invert(repeated)
            raw = keys_arr.filter(fresh).to_pylist()
            # ID and phone numbers in a key are kept and shown masked; the digest matches them
            keys = shown_keys(batch.filter(fresh), resource).to_pylist() if masked else raw
            digests = key_digests(secret, raw) if secret is not None else [None] * len(raw)
            hashes = hashes_arr.filter(fresh).to_pylist()
            reasons = batch.column(REASONS_COLUMN).filter(fresh).to_pylist()
            new_rows += len(keys)
            if len(samples) < 10:
                samples += [k for k in keys[: 10 - len(samples)] if k is not None]
            if not keys:
                continue
            s.execute(
                sa.insert(QuarantineEntry),
                [
                    {
                        "run_id": run_id,
                        "resource_code": resource.code,
                        "row_key": (k or "(no key)")[:500],
                        "reasons": r,
                        "row_hash": h,
                        "key_digest": d,
                    }
                    for k, r, h, d in zip(keys, reasons, hashes, digests, strict=True)
                ],
            )
        stat = s.get(QualityRunStat, run_id) or QualityRunStat(run_id=run_id)
        stat.resource_code = resource.code
        stat.extracted, stat.valid, stat.quarantined = extracted, valid, quarantined
        stat.by_rule, stat.by_dimension = dict(counts), dict(by_dimension)
        stat.newest_cursor, stat.stale, stat.held = outcome.newest, outcome.stale, outcome.held
        s.add(stat)
        findings = [f for f in (outcome.held and f"held back: {outcome.held}", outcome.stale) if f]
        if new_rows or findings:
            note_run(s, resource, run_id, counts, new_rows, samples, findings)


def release_fixed(ws: Workspace, run_id: str, resource: Resource, rd: RunDir) -> int:
    """Mark earlier quarantined rows whose keys this run delivered as released (the provider
    fixed them at the source); return how many. A masked key is matched by its digest."""
    secret = masked_secret(ws, resource)
    masked = secret is not None
    column: Any = QuarantineEntry.key_digest if masked else QuarantineEntry.row_key
    with ws.store.session() as s:
        held_keys = list(
            s.execute(
                sa.select(column)
                .where(
                    QuarantineEntry.resource_code == resource.code,
                    QuarantineEntry.released_run_id.is_(None),
                    QuarantineEntry.run_id != run_id,
                )
                .distinct()
            ).scalars()
        )
        if not held_keys:
            return 0
        kind = pa.binary() if masked else pa.string()
        wanted = pa.array([k for k in held_keys if k is not None], kind)
        found: list[Any] = []
        for batch in rd.batches("valid", columns=list(resource.primary_key)):
            keys = row_keys(batch, resource.primary_key)
            if secret is not None:
                keys = pa.array(key_digests(secret, keys.to_pylist()), pa.binary())
            found += keys.filter(pc.is_in(keys, value_set=wanted)).to_pylist()
        for start in range(0, len(found), INDEX_CHUNK):
            s.execute(
                sa.update(QuarantineEntry)
                .where(
                    QuarantineEntry.resource_code == resource.code,
                    QuarantineEntry.released_run_id.is_(None),
                    QuarantineEntry.run_id != run_id,
                    column.in_(found[start : start + INDEX_CHUNK]),
                )
                .values(released_run_id=run_id)
            )
        return len(found)


@dataclass(frozen=True)
class QuarantinedRow:
    run_id: str
    row_key: str
    reasons: str
    created_at: dt.datetime
    released_run_id: str | None


def list_quarantine(
    ws: Workspace, resource_code: str, *, include_released: bool = False, limit: int = 200
) -> tuple[int, list[QuarantinedRow]]:
    """How many rows of a resource are held, and the newest ``limit`` of them. An entry
    written before keys were masked, and not yet backfilled by a run, is shown masked."""
    resource = ws.catalog.resource(resource_code)  # NotFound for an unknown code
    masked = bool(key_masks(resource))
    where = [QuarantineEntry.resource_code == resource_code]
    if not include_released:
        where.append(QuarantineEntry.released_run_id.is_(None))
    with ws.store.session() as s:
        total = s.execute(sa.select(sa.func.count(QuarantineEntry.id)).where(*where)).scalar_one()
        rows = s.execute(
            sa.select(QuarantineEntry)
            .where(*where)
            .order_by(QuarantineEntry.id.desc())
            .limit(limit)
        ).scalars()
        return int(total), [
            QuarantinedRow(
                r.run_id,
                mask_key_text(resource, [r.row_key])[0] if masked else r.row_key,
                r.reasons,
                r.created_at,
                r.released_run_id,
            )
            for r in rows
        ]
