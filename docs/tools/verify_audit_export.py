#!/usr/bin/env python3
"""Verify an export of the city-exchange audit log without the engine's code.

    python3 verify_audit_export.py EXPORT.jsonl [--public-key KEY.pub]

Needs Python 3.9+ and the ``cryptography`` package, nothing else. It reads the export line by
line (memory stays flat however long it is) and checks:

- every event's hash: sha256 hex of (prev_hash + the event's canonical JSON);
- every link: each event's prev_hash is the previous event's hash, from the first exported
  event's prev_hash (the anchor checkpoint's head hash, or 64 zeros at the start of the log);
- sequence numbers follow each other without a gap;
- every checkpoint: its Ed25519 signature (over the canonical JSON of its document), its
  range (it starts right after the previous one and covers the events just before it), its
  count, its head hash (the hash of its last event), its installation and key id, and its
  prev_signature (the signature of the checkpoint before it);
- that every event marked sealed is covered by a checkpoint, and every event after the last
  checkpoint is marked ``"sealed": false``.

It prints what it checked, or the first problem with its line number; exit 0 or 1. The format
is described in docs/audit.md ("The export format").

Without ``--public-key`` the key is taken from the export's own header, which proves only that
the export is consistent with itself: an auditor gets the installation's public key from its
operator by another channel and passes it here.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
from collections.abc import Iterator
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_public_key,
)

GENESIS = "0" * 64
FORMAT = 1
EVENT_FIELDS = ("seq", "id", "at", "actor", "kind", "subject", "payload", "prev_hash", "hash")


class Problem(Exception):
    """What is wrong with the export, and on which line."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


def canonical_event(event: dict[str, Any]) -> str:
    """The text an event's hash covers: its time as stored, actor, kind, subject, payload."""
    doc = {k: event[k] for k in ("at", "actor", "kind", "subject", "payload")}
    return json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def link(prev_hash: str, canonical: str) -> str:
    return hashlib.sha256((prev_hash + canonical).encode("utf-8")).hexdigest()


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def signed_bytes(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def key_id(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_key(pem: str, where: str) -> Ed25519PublicKey:
    try:
        key = load_pem_public_key(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise SystemExit(f"{where}: not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SystemExit(f"{where}: not an Ed25519 public key")
    return key


def read_lines(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    with open(path, encoding="utf-8") as f:
        for n, text in enumerate(f, start=1):
            if not text.strip():
                raise Problem(n, "an empty line (every line of an export is one JSON object)")
            try:
                doc = json.loads(text)
            except ValueError as exc:
                raise Problem(n, f"not JSON ({exc})") from None
            if not isinstance(doc, dict) or "type" not in doc:
                raise Problem(n, "not a JSON object with a 'type'")
            yield n, doc


class Verifier:
    """The state carried from line to line: the last hash, sequence and checkpoint."""

    def __init__(
        self, key: Ed25519PublicKey | None, installation: str, first_seq: Any = None
    ) -> None:
        self.key = key
        self.announced_first = first_seq  # the header's first_seq
        self.key_id = key_id(key) if key is not None else None
        self.installation = installation
        self.prev_hash: str | None = None  # set by the anchor or the first event
        self.last_seq: int | None = None
        self.range_start: int | None = None  # first seq not yet covered by a checkpoint
        self.prev_signature: str | None = None  # the last checkpoint's signature
        self.anchored = False
        self.events = 0
        self.checkpoints = 0
        self.unsealed = 0
        self.first_seq: int | None = None

    def anchor(self, n: int, line: dict[str, Any]) -> None:
        if self.events or self.checkpoints or self.anchored:
            raise Problem(n, "an anchor checkpoint must come before every event and checkpoint")
        doc = self._signed(n, line, "the anchor checkpoint")
        self.prev_hash = doc["head_hash"]
        self.last_seq = doc["seq_to"]
        self.range_start = doc["seq_to"] + 1
        self.prev_signature = line["signature"]
        self.anchored = True

    def event(self, n: int, line: dict[str, Any]) -> None:
        missing = [k for k in EVENT_FIELDS if k not in line]
        if missing:
            raise Problem(n, f"event lacks {', '.join(missing)}")
        seq = line["seq"]
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise Problem(n, f"event seq {seq!r} is not an integer")
        if self.events == 0 and self.announced_first not in (None, seq):
            raise Problem(n, f"the first event is seq {seq}, the header announces seq "
                          f"{self.announced_first} (lines removed before it)")  # fmt: skip
        if self.first_seq is None:
            self.first_seq = seq  # after an anchor too: the export's first event
        if self.last_seq is None:
            if line["prev_hash"] != GENESIS and seq == 1:
                raise Problem(n, "the log's first event (seq 1) does not start from 64 zeros")
            self.prev_hash = line["prev_hash"]
            self.range_start = seq
        elif seq != self.last_seq + 1:
            raise Problem(n, f"event seq {seq} follows seq {self.last_seq}: events are missing "
                          "or out of order")  # fmt: skip
        if line["prev_hash"] != self.prev_hash:
            raise Problem(n, f"event seq {seq}: its prev_hash is not the previous event's hash "
                          "(an event removed, reordered or edited before it)")  # fmt: skip
        expected = link(line["prev_hash"], canonical_event(line))
        if line["hash"] != expected:
            raise Problem(n, f"event seq {seq}: its content does not match its hash (edited)")
        if line.get("sealed", True) is False:
            self.unsealed += 1
        elif self.unsealed:
            raise Problem(n, f"event seq {seq} is marked sealed after an unsealed event")
        self.prev_hash = line["hash"]
        self.last_seq = seq
        self.events += 1

    def checkpoint(self, n: int, line: dict[str, Any]) -> None:
        doc = self._signed(n, line, "checkpoint")
        where = f"checkpoint {doc['seq_from']}-{doc['seq_to']}"
        if self.last_seq is None or self.range_start is None:
            raise Problem(n, f"{where} comes before any event it covers")
        if self.unsealed:
            raise Problem(n, f"{where} covers events marked unsealed")
        if doc["seq_from"] != self.range_start:
            raise Problem(n, f"{where} should start at seq {self.range_start}, right after "
                          "the previous checkpoint")  # fmt: skip
        if doc["seq_to"] != self.last_seq:
            raise Problem(n, f"{where} should end at seq {self.last_seq}, the event just "
                          "before it")  # fmt: skip
        if doc["count"] != doc["seq_to"] - doc["seq_from"] + 1:
            raise Problem(n, f"{where}: count {doc['count']} does not match its range")
        if doc["head_hash"] != self.prev_hash:
            raise Problem(n, f"{where}: head_hash is not the hash of event seq {self.last_seq}")
        if self.prev_signature is not None and doc["prev_signature"] != self.prev_signature:
            raise Problem(n, f"{where}: prev_signature is not the previous checkpoint's "
                          "signature")  # fmt: skip
        if doc["seq_from"] == 1 and doc["prev_signature"] != "":
            raise Problem(n, f"{where} is the log's first but names a previous signature")
        self.prev_signature = line["signature"]
        self.range_start = doc["seq_to"] + 1
        self.checkpoints += 1

    def _signed(self, n: int, line: dict[str, Any], what: str) -> dict[str, Any]:
        """The checkpoint's document once its signature, installation and key id check out."""
        doc = {k: v for k, v in line.items() if k not in ("type", "signature")}
        for k in ("seq_from", "seq_to", "count", "head_hash", "prev_signature", "key_id"):
            if k not in doc:
                raise Problem(n, f"{what} lacks {k}")
        if not isinstance(line.get("signature"), str):
            raise Problem(n, f"{what} lacks its signature")
        if doc.get("format") != FORMAT:
            raise Problem(n, f"{what}: format {doc.get('format')!r}, this tool knows {FORMAT}")
        if doc.get("installation") != self.installation:
            raise Problem(n, f"{what} is of installation {doc.get('installation')!r}, the "
                          f"export's is {self.installation!r}")  # fmt: skip
        if self.key is None:
            raise Problem(n, f"{what}: the export's header has no public key to check it with "
                          "(give --public-key)")  # fmt: skip
        if doc["key_id"] != self.key_id:
            raise Problem(n, f"{what} was signed by key {doc['key_id']}, not {self.key_id}")
        try:
            signature = base64.b64decode(line["signature"], validate=True)
            self.key.verify(signature, signed_bytes(doc))
        except (InvalidSignature, ValueError):
            raise Problem(n, f"{what} {doc['seq_from']}-{doc['seq_to']}: its signature does "
                          "not verify (the checkpoint was altered or not signed by this key)"
                          ) from None  # fmt: skip
        return doc


def verify(path: str, public_key: str | None) -> tuple[Verifier, dict[str, Any], bool]:
    """Check the whole export; raise ``Problem`` at the first thing wrong."""
    lines = read_lines(path)
    try:
        n, header = next(lines)
    except StopIteration:
        raise Problem(1, "the export is empty (no header)") from None
    if header.get("type") != "header":
        raise Problem(n, "the first line is not the header")
    if header.get("format") != FORMAT:
        raise Problem(n, f"export format {header.get('format')!r}, this tool knows {FORMAT}")
    # None: the log had no checkpoint yet when it was exported (no key signed anything).
    pem = header.get("public_key")
    header_key = None if pem is None else load_key(str(pem), f"{path} line 1 (public_key)")
    if header_key is not None and header.get("key_id") != key_id(header_key):
        raise Problem(n, f"header key_id {header.get('key_id')!r} is not the id of its key")
    key = header_key
    if public_key is not None:
        with open(public_key, encoding="ascii") as f:
            key = load_key(f.read(), public_key)
        if header_key is not None and key_id(key) != key_id(header_key):
            raise Problem(n, f"the header's public key ({key_id(header_key)}) is not the "
                          f"key given ({key_id(key)})")  # fmt: skip
    own = public_key is None
    v = Verifier(key, str(header.get("installation")), header.get("first_seq"))
    for n, line in lines:
        kind = line["type"]
        if kind == "anchor":
            v.anchor(n, line)
        elif kind == "event":
            v.event(n, line)
        elif kind == "checkpoint":
            v.checkpoint(n, line)
        else:
            raise Problem(n, f"unknown line type {kind!r}")
    if v.last_seq is not None and v.range_start is not None and v.range_start <= v.last_seq:
        sealed_tail = v.last_seq - v.range_start + 1 - v.unsealed
        if sealed_tail:
            raise Problem(n, f"{plural(sealed_tail, 'event')} before the end marked sealed "
                          "but no checkpoint follows (a checkpoint removed?)")  # fmt: skip
    for k in ("events", "checkpoints"):
        want = header.get(k)
        got = v.events if k == "events" else v.checkpoints
        if want is not None and want != got:
            raise Problem(n, f"the header announces {want} {k}, the export holds {got} "
                          "(lines removed or added)")  # fmt: skip
    return v, header, own


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export", help="the export (JSON lines) to verify")
    parser.add_argument(
        "--public-key", help="the installation's public key (PEM), obtained from its operator"
    )
    args = parser.parse_args(argv)
    try:
        v, header, own = verify(args.export, args.public_key)
    except Problem as problem:
        print(f"FAILED {args.export} {problem}")
        return 1
    except OSError as exc:
        print(f"FAILED cannot read {exc.filename}: {exc.strerror}")
        return 1
    if v.first_seq is None:
        span = "no events"
    elif v.first_seq == v.last_seq:
        span = f"seq {v.first_seq}"
    else:
        span = f"seq {v.first_seq}-{v.last_seq}"
    print(f"OK {args.export}: installation {header.get('installation')}, key {v.key_id or '-'}")
    print(f"  {plural(v.events, 'event')} ({span}): every hash and link recomputed")
    print(f"  {plural(v.checkpoints, 'checkpoint')}: signature, range, count, head hash and "
          "prev_signature checked")  # fmt: skip
    if v.anchored:
        print("  anchored on the signed checkpoint before the first event")
    if v.unsealed:
        verb = "is" if v.unsealed == 1 else "are"
        print(f"  {plural(v.unsealed, 'event')} after the last checkpoint {verb} NOT sealed: "
              "their chain is consistent but no signature proves them yet")  # fmt: skip
    if own:
        print("  the public key was read from the export itself: pass --public-key with the "
              "key the installation's operator gave you to prove who signed it")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
