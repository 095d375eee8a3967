"""The gateway's settings, read from the environment once per process: where Redis is
(``EXCHANGE_REDIS_URL``), how long a checked authorization code is trusted from memory
(``EXCHANGE_GATEWAY_CACHE_S``), where the spool files live and how often they are flushed, and
who flushes them (``EXCHANGE_GATEWAY_FLUSHER``: ``thread``, each process its own; ``process``,
the flusher process ``exchange gateway`` starts beside its workers, which sets it), and past
what size (``EXCHANGE_GATEWAY_SPOOL_MB``) or age (``EXCHANGE_GATEWAY_SPOOL_S``) a process starts
a new spool file.
The gateway key's file (``EXCHANGE_GATEWAY_KEY_FILE``) is read by ``exchange.gateway.keys``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from exchange.kernel.errors import BadInput
from exchange.kernel.settings import Settings

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_CACHE_S = 1.0
#: The longest a revoked code may keep working in a process that checked it before.
MAX_CACHE_S = 60.0
FLUSHERS = ("thread", "process")
DEFAULT_SPOOL_MB = 64
MAX_SPOOL_MB = 4096
DEFAULT_SPOOL_S = 3600.0
MAX_SPOOL_S = 7 * 24 * 3600.0


def _seconds(name: str, default: float, high: float) -> float:
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise BadInput(f"{name}: {text!r} is not a number of seconds") from None
    if not 0 <= value <= high:
        raise BadInput(f"{name}: {text!r} is not between 0 and {high:g} seconds")
    return value


@dataclass(frozen=True)
class GatewaySettings:
    """What one gateway process needs besides the workspace."""

    spool_dir: Path
    redis_url: str = DEFAULT_REDIS_URL
    cache_s: float = DEFAULT_CACHE_S
    #: The flusher writes the spool into the store this often, or at once past ``flush_lines``.
    flush_s: float = 0.2
    flush_lines: int = 500
    #: Redis keys are ``<namespace>:...`` (tests give each their own).
    namespace: str = "exchange"
    #: ``thread``: this process stores its own spool (a mounted app); ``process``: it only
    #: appends, and the flusher process of ``exchange gateway`` stores it.
    flusher: str = "thread"
    #: A live process starts a new spool file past this size or age (``EXCHANGE_GATEWAY_SPOOL_MB``,
    #: ``EXCHANGE_GATEWAY_SPOOL_S``): the old one is stored and deleted, the disk stays bounded.
    spool_bytes: int = DEFAULT_SPOOL_MB * 1024 * 1024
    spool_s: float = DEFAULT_SPOOL_S

    @classmethod
    def from_env(cls, settings: Settings) -> GatewaySettings:
        return cls(
            spool_dir=settings.home / "gateway" / "spool",
            redis_url=os.environ.get("EXCHANGE_REDIS_URL") or DEFAULT_REDIS_URL,
            cache_s=_seconds("EXCHANGE_GATEWAY_CACHE_S", DEFAULT_CACHE_S, MAX_CACHE_S),
            namespace=os.environ.get("EXCHANGE_REDIS_NAMESPACE") or "exchange",
            flusher=_flusher(),
            spool_bytes=_spool_bytes(),
            spool_s=_seconds("EXCHANGE_GATEWAY_SPOOL_S", DEFAULT_SPOOL_S, MAX_SPOOL_S),
        )


def _flusher() -> str:
    text = os.environ.get("EXCHANGE_GATEWAY_FLUSHER") or "thread"
    if text not in FLUSHERS:
        raise BadInput(f"EXCHANGE_GATEWAY_FLUSHER: {text!r} is not one of {', '.join(FLUSHERS)}")
    return text


def _spool_bytes() -> int:
    text = os.environ.get("EXCHANGE_GATEWAY_SPOOL_MB")
    if not text:
        return DEFAULT_SPOOL_MB * 1024 * 1024
    try:
        value = float(text)
    except ValueError:
        raise BadInput(f"EXCHANGE_GATEWAY_SPOOL_MB: {text!r} is not a number of MiB") from None
    if not 0 < value <= MAX_SPOOL_MB:
        raise BadInput(
            f"EXCHANGE_GATEWAY_SPOOL_MB: {text!r} is not above 0 and at most {MAX_SPOOL_MB}"
        )
    return max(1, int(value * 1024 * 1024))
