"""Where the audit log's signing key and witness are, and how often it is checkpointed.

Read from the environment next to the engine's own settings (``$EXCHANGE_HOME``):
``EXCHANGE_AUDIT_KEY_ENV`` names a variable holding the private key (PEM), else
``EXCHANGE_AUDIT_KEY_FILE`` (default ``$EXCHANGE_HOME/audit-signing.key``);
``EXCHANGE_AUDIT_WITNESS`` (default ``$EXCHANGE_HOME/audit-witness.jsonl``); a checkpoint every
``EXCHANGE_AUDIT_CHECKPOINT_EVENTS`` events (1000) or ``EXCHANGE_AUDIT_CHECKPOINT_SECONDS``
seconds (60), and at the end of every run; ``EXCHANGE_AUDIT_MAX_LATENESS_S`` (900): how much
earlier than the events before it an event may be dated before verify reports it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from exchange.kernel.errors import BadInput
from exchange.kernel.settings import Settings

KEY_ENV = "EXCHANGE_AUDIT_KEY_ENV"
KEY_FILE_ENV = "EXCHANGE_AUDIT_KEY_FILE"
WITNESS_ENV = "EXCHANGE_AUDIT_WITNESS"
EVENTS_ENV = "EXCHANGE_AUDIT_CHECKPOINT_EVENTS"
SECONDS_ENV = "EXCHANGE_AUDIT_CHECKPOINT_SECONDS"
LATENESS_ENV = "EXCHANGE_AUDIT_MAX_LATENESS_S"
KEY_FILE = "audit-signing.key"
WITNESS_FILE = "audit-witness.jsonl"
DEFAULT_EVENTS = 1000
DEFAULT_SECONDS = 60.0
DEFAULT_LATENESS_S = 900.0


@dataclass(frozen=True)
class AuditSettings:
    """The audit log's key, witness and checkpoint interval.

    ``key_env`` is the NAME of the variable that holds the private key (never its value);
    when set it wins over ``key_file``."""

    key_file: Path
    witness: Path
    key_env: str | None = None
    checkpoint_events: int = DEFAULT_EVENTS
    checkpoint_seconds: float = DEFAULT_SECONDS

    @classmethod
    def from_env(cls, settings: Settings) -> AuditSettings:
        key_file = os.environ.get(KEY_FILE_ENV)
        witness = os.environ.get(WITNESS_ENV)
        return cls(
            key_file=_path(key_file) if key_file else settings.home / KEY_FILE,
            witness=_path(witness) if witness else settings.home / WITNESS_FILE,
            key_env=os.environ.get(KEY_ENV) or None,
            checkpoint_events=int(_positive(EVENTS_ENV, DEFAULT_EVENTS)),
            checkpoint_seconds=_positive(SECONDS_ENV, DEFAULT_SECONDS),
        )


def _path(text: str) -> Path:
    return Path(text).expanduser().resolve()


def max_lateness_s() -> float:
    """``$EXCHANGE_AUDIT_MAX_LATENESS_S``, read when verify needs it (a sealer never does: a
    typo in it must not stop the log being sealed)."""
    return _number(LATENESS_ENV, DEFAULT_LATENESS_S, zero=True)


def _positive(name: str, default: float) -> float:
    return _number(name, default, whole=name == EVENTS_ENV)


def _number(name: str, default: float, *, whole: bool = False, zero: bool = False) -> float:
    """``$name`` as a number greater than 0 (``zero``: or 0), a whole one if ``whole``;
    ``default`` when unset, ``BadInput`` naming it when it is anything else."""
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value >= 0 if zero else value > 0) or (whole and value != int(value)):
        if zero:
            raise BadInput(f"{name}={text!r}: give a number of seconds, 0 or more")
        kind = "a whole number" if whole else "a number"
        raise BadInput(f"{name}={text!r}: give {kind} greater than 0")
    return value
