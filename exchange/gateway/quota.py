"""Quotas of API subscriptions, counted in Redis: calls per Asia/Shanghai day and per second.

Each call is one Lua script (EVALSHA) over two counters of the subscription (all its codes
share them): the day's, ``{ns}:q:s{subscription_id}:d:{YYYYMMDD}`` (the Shanghai date of the
call), which expires an hour after that day ends, and the second's,
``{ns}:q:s{subscription_id}:s:{unix second}``, which expires after 2 s. The script checks both
limits and increments both only when both allow, atomically, so however many gateway processes
share the Redis, a subscription is admitted exactly ``limit`` times a day and never more than
``per_second`` times in one second. Refused calls are not counted. ``{ns}`` is
``counter_namespace``: the configured namespace and the store's installation id.

The time is the caller's (``exchange.kernel.clock.now()`` in the gateway). Redis unreachable
or too slow is ``QuotaUnavailable``: the gateway then refuses the call (503), it never admits
one it could not count. The script is sent once and never retried: Redis may have run it
before its answer was lost or late, and a second run would count the call twice. (A call whose
answer is lost is then counted once yet refused: the error is on the side of admitting less.)
Calls wait for a free connection of the pool (up to ``max_connections``, sized for the calls
one gateway process has in flight) rather than failing when all are busy.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio as aredis
from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.retry import Retry

from exchange.kernel.clock import SHANGHAI, in_shanghai
from exchange.kernel.errors import ExchangeError

DEFAULT_URL = "redis://127.0.0.1:6379/0"
DAY_KEY_SLACK_S = 3600  # the day's counter outlives its day by an hour (clocks a little apart)
SECOND_KEY_TTL_S = 2
#: Connections of one process's pool. A process has more calls in flight than that (its
#: upstream clients allow 200 per node), but a take holds its connection for well under a
#: millisecond and Redis runs one script at a time, so the others wait their turn (up to
#: ``timeout_s``) at no cost; what a larger pool adds is a storm of connection handshakes at
#: a cold start's burst, slow enough on a loaded host to time out (measured: 300 takes at
#: once answered in 0.3 s with 128 connections, some refused with 200 or more).
MAX_CONNECTIONS = 128

# KEYS: the day's counter, the second's counter. ARGV: the daily limit, the per-second limit,
# the day counter's TTL, the second counter's TTL. Returns {allowed, day count, which}, which
# being 0 (allowed), 1 (the day's limit) or 2 (the rate).
TAKE_LUA = """
local day = tonumber(redis.call('GET', KEYS[1]) or '0')
if day >= tonumber(ARGV[1]) then return {0, day, 1} end
local sec = tonumber(redis.call('GET', KEYS[2]) or '0')
if sec >= tonumber(ARGV[2]) then return {0, day, 2} end
day = redis.call('INCR', KEYS[1])
if day == 1 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
if redis.call('INCR', KEYS[2]) == 1 then redis.call('EXPIRE', KEYS[2], ARGV[4]) end
if KEYS[3] then redis.call('SET', KEYS[3], '1', 'EX', ARGV[5]) end
return {1, day, 0}
"""
_WHICH = {0: None, 1: "daily", 2: "rate"}


@dataclass(frozen=True)
class Limits:
    """A code's quota: calls per Shanghai day and per second."""

    daily: int
    per_second: int


@dataclass(frozen=True)
class Decision:
    """Whether one call is admitted, and the day's window as the response headers tell it."""

    allowed: bool
    limit: int  # the daily limit
    remaining: int  # calls left today after this one
    reset_s: int  # seconds to the next 00:00 Asia/Shanghai
    retry_after_s: int  # 0 when allowed; 1 for the rate; reset_s for the day
    which: str | None  # None (allowed) | "daily" | "rate"


class QuotaUnavailable(ExchangeError):
    """Redis could not be reached or did not answer in time: the call cannot be counted, so
    the gateway refuses it (503). The message names the Redis by host and port only."""


def _aware(now: dt.datetime) -> dt.datetime:
    """``now`` aware: a naive time is naive UTC, as the store keeps times."""
    return now if now.tzinfo is not None else now.replace(tzinfo=dt.UTC)


def seconds_to_midnight(now: dt.datetime) -> int:
    """Whole seconds (rounded up, at least 1) from ``now`` to the next 00:00 Asia/Shanghai."""
    local = in_shanghai(_aware(now))
    midnight = dt.datetime.combine(local.date() + dt.timedelta(days=1), dt.time(0), SHANGHAI)
    return max(1, math.ceil((midnight - local).total_seconds()))


def counter_namespace(namespace: str, installation: str) -> str:
    """The keys of one installation's counters: ``EXCHANGE_REDIS_NAMESPACE`` and the metadata
    store's installation id, so two stores sharing a Redis never count each other's calls
    (subscription ids repeat across stores)."""
    return f"{namespace}:{installation}"


# The counters are the subscription's, not a code's: a rotated or re-issued code continues
# the day's count instead of starting a fresh one.
def day_key(namespace: str, subscription_id: int, now: dt.datetime) -> str:
    return f"{namespace}:q:s{subscription_id}:d:{in_shanghai(_aware(now)):%Y%m%d}"


def second_key(namespace: str, subscription_id: int, now: dt.datetime) -> str:
    return f"{namespace}:q:s{subscription_id}:s:{math.floor(_aware(now).timestamp())}"


#: How long an admitted call's mark lasts: a dead process's spool is adopted within seconds
#: (at the next start, or by a live process every 10 s), so an hour is plenty.
CALL_MARK_TTL_S = 3600


def call_key(namespace: str, call_id: str) -> str:
    return f"{namespace}:q:call:{call_id}"


def _where(url: str) -> str:
    """``host:port/db`` of a Redis URL, without its user or password."""
    parts = urlsplit(url)
    return f"{parts.hostname or '127.0.0.1'}:{parts.port or 6379}{parts.path or ''}"


class Quota:
    """The quota counters of one Redis (``EXCHANGE_REDIS_URL``) under ``namespace``.

    ``take`` runs on the caller's event loop; a Quota used from another loop (a test's next
    ``asyncio.run``) opens a client of its own there. ``connect_timeout_s`` and ``timeout_s``
    bound how long a call waits for an unreachable or silent Redis before it is refused, and
    ``timeout_s`` also how long it waits for a free connection when all ``max_connections``
    are busy.
    """

    def __init__(
        self,
        redis_url: str = DEFAULT_URL,
        namespace: str = "exchange",
        *,
        connect_timeout_s: float = 0.5,
        timeout_s: float = 0.5,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.redis_url, self.namespace = redis_url, namespace
        self._options: dict[str, Any] = {
            "socket_connect_timeout": connect_timeout_s,
            "socket_timeout": timeout_s,
        }
        self._pool_wait_s, self._max_connections = timeout_s, max_connections
        # The longest a take may last: waiting for a connection, connecting, the answer.
        self._timeout_s = timeout_s + connect_timeout_s + timeout_s
        self._client: aredis.Redis | None = None
        self._script: AsyncScript | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sync: redis.Redis | None = None

    def _async_client(self) -> tuple[aredis.Redis, AsyncScript]:
        loop = asyncio.get_running_loop()
        if self._client is None or self._script is None or self._loop is not loop:
            # No retry at all: a timeout or a reset may come after Redis ran the script, and
            # running it again would count the call twice (see the module's docstring). A
            # connection Redis closed while idle (a restart) is replaced before it is used by
            # the pool's check, which redis-py skips under RESP3 (its maintenance
            # notifications): hence RESP2, whose answers to the script are the same.
            pool = BlockingConnectionPool.from_url(
                self.redis_url,
                max_connections=self._max_connections,
                timeout=self._pool_wait_s,
                retry=AsyncRetry(NoBackoff(), 0),
                protocol=2,
                **self._options,
            )
            self._client = aredis.Redis.from_pool(pool)  # closed with the client
            self._script = self._client.register_script(TAKE_LUA)
            self._loop = loop
        return self._client, self._script

    def _unavailable(self, exc: BaseException) -> QuotaUnavailable:
        return QuotaUnavailable(
            f"the quota store (Redis at {_where(self.redis_url)}) did not answer "
            f"({type(exc).__name__}): calls cannot be counted, so none is admitted"
        )

    async def take(
        self, subscription_id: int, limits: Limits, now: dt.datetime, call_id: str | None = None
    ) -> Decision:
        """Count one call of ``subscription_id`` at ``now`` if both windows allow it (one atomic
        script); raises ``QuotaUnavailable`` when Redis does not answer."""
        client, script = self._async_client()
        reset = seconds_to_midnight(now)
        keys = [
            day_key(self.namespace, subscription_id, now),
            second_key(self.namespace, subscription_id, now),
        ]
        args = [limits.daily, limits.per_second, reset + DAY_KEY_SLACK_S, SECOND_KEY_TTL_S]
        if call_id is not None:  # marked in the same script: which calls were counted
            keys.append(call_key(self.namespace, call_id))
            args.append(CALL_MARK_TTL_S)
        try:
            async with asyncio.timeout(self._timeout_s + 0.5):
                allowed, count, which = await script(keys=keys, args=args, client=client)
        except (redis.RedisError, OSError, TimeoutError) as exc:
            raise self._unavailable(exc) from None
        reason = _WHICH[int(which)]
        retry_after = 0 if reason is None else 1 if reason == "rate" else reset
        return Decision(
            allowed=bool(allowed),
            limit=limits.daily,
            remaining=max(0, limits.daily - int(count)),
            reset_s=reset,
            retry_after_s=retry_after,
            which=reason,
        )

    def used_today(self, subscription_id: int, now: dt.datetime) -> int:
        """How many calls of ``subscription_id`` were admitted on the Shanghai day of ``now``."""
        if self._sync is None:
            retry = Retry(NoBackoff(), 1)  # a read: retrying it counts nothing
            self._sync = redis.Redis.from_url(self.redis_url, retry=retry, **self._options)
        try:
            value = self._sync.get(day_key(self.namespace, subscription_id, now))
        except (redis.RedisError, OSError) as exc:
            raise self._unavailable(exc) from None
        return int(value) if value is not None else 0

    def admitted(self, call_ids: list[str]) -> set[str]:
        """Which of ``call_ids`` (given to ``take``) were admitted, within the last
        ``CALL_MARK_TTL_S``: the gateway asks for the calls a dead process had asked the quota
        for and had not yet recorded as admitted."""
        if self._sync is None:
            retry = Retry(NoBackoff(), 1)  # a read: retrying it counts nothing
            self._sync = redis.Redis.from_url(self.redis_url, retry=retry, **self._options)
        try:
            found = self._sync.mget([call_key(self.namespace, c) for c in call_ids])
        except (redis.RedisError, OSError) as exc:
            raise self._unavailable(exc) from None
        return {c for c, v in zip(call_ids, found, strict=True) if v is not None}

    async def close(self) -> None:
        """Close the connections of the current loop's client (and the synchronous one)."""
        if self._client is not None:
            await self._client.aclose()
            self._client = self._script = self._loop = None
        if self._sync is not None:
            self._sync.close()
            self._sync = None
