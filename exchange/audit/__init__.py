"""The audit log: every state change, delivery and API call appends one event to a hash chain,
sealed in signed checkpoints that a witness outside the store keeps too.

``chain``: appending and linking events; ``seal``: chaining what was appended once it has
committed (its hook is registered on import of this package) and checkpointing; ``keys``,
``checkpoints``, ``witness``, ``settings``: the signing key, the signed document, the file
outside the store and where they are. Verification and export are imported where used.
"""

from typing import Any

from exchange.audit.chain import (
    GENESIS,
    SUBJECT_MAX,
    ChainCheck,
    Event,
    append,
    append_many,
    bounded_subject,
    canonical_event,
    check_chain,
    link,
)
from exchange.audit.checkpoints import Checkpoint, verify_signature
from exchange.audit.seal import SealResult, configure, seal, settle
from exchange.audit.settings import AuditSettings
from exchange.store.models import AuditEvent  # callers of the former module read it here


def __getattr__(name: str) -> Any:
    """``keygen`` on first use: the keys module loads cryptography, which appending and
    reading events never need."""
    if name == "keygen":
        from exchange.audit.keys import keygen

        return keygen
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "GENESIS",
    "SUBJECT_MAX",
    "AuditEvent",
    "AuditSettings",
    "ChainCheck",
    "Checkpoint",
    "Event",
    "SealResult",
    "append",
    "append_many",
    "bounded_subject",
    "canonical_event",
    "check_chain",
    "configure",
    "keygen",
    "link",
    "seal",
    "settle",
    "verify_signature",
]
