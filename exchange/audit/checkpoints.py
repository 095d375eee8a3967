"""Checkpoints: signed seals over consecutive ranges of the audit chain.

A checkpoint's document names the installation, the range ``seq_from..seq_to``, its ``count``,
the hash of its last event (``head_hash``), when it was made (ISO-8601 UTC, ``Z``), the previous
checkpoint's signature ('' for the first) and the signing key's id. The signed bytes are the
document as compact JSON with sorted keys; the signature is Ed25519 over them, base64
(standard, padded). The witness keeps each one as a JSON line: the document plus "signature".
An auditor needs nothing of this code to check one: the format is the whole specification.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

if TYPE_CHECKING:  # cryptography is imported where a key is used: most commands never sign
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

from exchange.kernel.errors import BadInput
from exchange.store.models import AuditCheckpoint

FORMAT = 1


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint as signed. ``at`` is naive UTC, like every time in the store."""

    installation: str
    seq_from: int
    seq_to: int
    count: int
    head_hash: str
    at: dt.datetime
    prev_signature: str
    key_id: str
    signature: str = ""

    def document(self) -> dict[str, Any]:
        """What is signed (everything but the signature)."""
        return {
            "format": FORMAT,
            "installation": self.installation,
            "seq_from": self.seq_from,
            "seq_to": self.seq_to,
            "count": self.count,
            "head_hash": self.head_hash,
            "at": iso_z(self.at),
            "prev_signature": self.prev_signature,
            "key_id": self.key_id,
        }

    def signed_bytes(self) -> bytes:
        return json.dumps(
            self.document(), sort_keys=True, ensure_ascii=False, separators=(",", ":")
        ).encode()

    def line(self) -> dict[str, Any]:
        """The witness line's object: the document and its signature."""
        return {**self.document(), "signature": self.signature}

    @classmethod
    def from_line(cls, doc: dict[str, Any]) -> Checkpoint:
        """A checkpoint from a witness line (or an export's record); refused, naming the
        field, when one is missing or of the wrong type."""
        try:
            if doc["format"] != FORMAT:
                raise BadInput(f"checkpoint format {doc['format']!r} is not {FORMAT}")
            return cls(
                installation=_typed(doc, "installation", str),
                seq_from=_typed(doc, "seq_from", int),
                seq_to=_typed(doc, "seq_to", int),
                count=_typed(doc, "count", int),
                head_hash=_typed(doc, "head_hash", str),
                at=parse_iso_z(_typed(doc, "at", str)),
                prev_signature=_typed(doc, "prev_signature", str),
                key_id=_typed(doc, "key_id", str),
                signature=_typed(doc, "signature", str),
            )
        except KeyError as missing:
            raise BadInput(f"checkpoint has no field {missing}") from None

    @classmethod
    def from_row(cls, row: AuditCheckpoint | sa.Row[Any], installation: str) -> Checkpoint:
        """A stored checkpoint (an ORM row or a Core one: its ``count`` is the tuple method,
        so a Core row is read by its mapping); a row does not repeat its installation."""
        get = row._mapping.__getitem__ if isinstance(row, sa.Row) else partial(getattr, row)
        return cls(installation=installation, **{name: get(name) for name in _STORED})


#: The checkpoint's fields as the store keeps them (all but the installation).
_STORED = (
    "seq_from", "seq_to", "count", "head_hash", "at", "prev_signature", "key_id", "signature",
)  # fmt: skip


def _typed(doc: dict[str, Any], field: str, kind: type) -> Any:
    value = doc[field]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BadInput(f"checkpoint field {field!r} is not {kind.__name__}: {value!r}")
    return value


def iso_z(at: dt.datetime) -> str:
    """Naive UTC as ISO-8601 with a "Z"."""
    return at.replace(tzinfo=None).isoformat() + "Z"


def parse_iso_z(text: str) -> dt.datetime:
    if not text.endswith("Z"):
        raise BadInput(f"checkpoint time {text!r} does not end in Z (UTC)")
    return dt.datetime.fromisoformat(text[:-1])


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """A key's id: the first 16 hex digits of sha256 of its raw 32-byte public key."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign(cp: Checkpoint, private: Ed25519PrivateKey) -> Checkpoint:
    """``cp`` with its signature."""
    raw = private.sign(cp.signed_bytes())
    return Checkpoint(**{**_fields(cp), "signature": base64.b64encode(raw).decode("ascii")})


def verify_signature(cp: Checkpoint, public_key: Ed25519PublicKey) -> bool:
    """Whether ``cp.signature`` is ``public_key``'s over ``cp``'s document."""
    from cryptography.exceptions import InvalidSignature

    try:
        raw = base64.b64decode(cp.signature, validate=True)
        public_key.verify(raw, cp.signed_bytes())
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def _fields(cp: Checkpoint) -> dict[str, Any]:
    return {f: getattr(cp, f) for f in cp.__dataclass_fields__}
