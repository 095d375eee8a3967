"""Quotas in the real Redis on 127.0.0.1:6379: exactly ``limit`` calls a day across processes,
the Asia/Shanghai day as the window (and Retry-After to its end), the per-second rate, and a
Redis that cannot be reached refusing the call rather than admitting it uncounted."""

from __future__ import annotations

import asyncio
import datetime as dt
import multiprocessing
import secrets
import socket
import time
from collections.abc import Iterator

import pytest
import redis

from exchange.gateway.quota import (
    Decision,
    Limits,
    Quota,
    QuotaUnavailable,
    day_key,
    seconds_to_midnight,
)
from exchange.kernel.clock import SHANGHAI

URL = "redis://127.0.0.1:6379/0"
NOON = dt.datetime(2026, 12, 1, 12, 0, 0, tzinfo=SHANGHAI)
OPEN = Limits(daily=1_000_000, per_second=1_000_000)


@pytest.fixture
def namespace() -> Iterator[str]:
    """A namespace of this test's own in the real Redis; its keys are deleted afterwards."""
    client = redis.Redis.from_url(URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.skip(f"Redis is not reachable on 127.0.0.1:6379: {exc}")
    ns = f"test-quota-{secrets.token_hex(6)}"
    yield ns
    keys = list(client.scan_iter(f"{ns}:*"))
    if keys:
        client.delete(*keys)
    client.close()


async def take_all(
    q: Quota, code_id: int, limits: Limits, times: list[dt.datetime]
) -> list[Decision]:
    try:
        return [await q.take(code_id, limits, t) for t in times]
    finally:
        await q.close()


def run(q: Quota, code_id: int, limits: Limits, *times: dt.datetime) -> list[Decision]:
    return asyncio.run(take_all(q, code_id, limits, list(times)))


def _hammer(namespace: str, limit: int, tasks: int, attempts: int) -> int:
    """One process: ``tasks`` concurrent asyncio tasks taking ``attempts`` calls each; how
    many were admitted."""

    async def main() -> int:
        # Exactness across processes is pinned here, not latency: a machine starved of CPU
        # must not turn this into a timeout (the production half-second is tested elsewhere).
        q = Quota(URL, namespace, connect_timeout_s=10.0, timeout_s=10.0)
        limits = Limits(daily=limit, per_second=1_000_000)

        async def task() -> int:
            got = 0
            for _ in range(attempts):
                got += (await q.take(7, limits, NOON)).allowed
            return got

        try:
            return sum(await asyncio.gather(*(task() for _ in range(tasks))))
        finally:
            await q.close()

    return asyncio.run(main())


def test_exactly_the_daily_limit_is_admitted_across_four_processes(namespace: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        # 4 processes x 16 tasks x 10 attempts = 640 attempts against a limit of 500
        admitted = pool.starmap(_hammer, [(namespace, 500, 16, 10)] * 4)
    assert sum(admitted) == 500
    assert all(n > 0 for n in admitted), admitted  # every process took part
    assert Quota(URL, namespace).used_today(7, NOON) == 500


def test_the_day_is_the_shanghai_day_and_retry_after_runs_to_its_midnight(
    namespace: str,
) -> None:
    q = Quota(URL, namespace)
    limits = Limits(daily=2, per_second=100)
    last_second = dt.datetime(2026, 12, 1, 23, 59, 59, tzinfo=SHANGHAI)
    first, second, third = run(q, 1, limits, last_second, last_second, last_second)
    assert (first.allowed, first.remaining, first.reset_s) == (True, 1, 1)
    assert (second.allowed, second.remaining) == (True, 0)
    assert third == Decision(
        allowed=False, limit=2, remaining=0, reset_s=1, retry_after_s=1, which="daily"
    )
    midnight = dt.datetime(2026, 12, 2, 0, 0, 0, tzinfo=SHANGHAI)
    (fresh,) = run(q, 1, limits, midnight)
    assert (fresh.allowed, fresh.remaining, fresh.reset_s) == (True, 1, 86_400)
    assert q.used_today(1, last_second) == 2 and q.used_today(1, midnight) == 1
    # The day's counter lives until an hour after its day ends (the caller's clock).
    ttl = redis.Redis.from_url(URL).ttl(day_key(namespace, 1, midnight))
    assert 86_400 + 3_600 - 5 <= ttl <= 86_400 + 3_600
    # Naive times are UTC, as the store keeps them: 16:00 UTC is Shanghai's midnight.
    assert day_key(namespace, 1, dt.datetime(2026, 12, 1, 16, 0)).endswith(":d:20261202")
    afternoon = dt.datetime(2026, 12, 1, 15, 30, 0, 500_000, tzinfo=SHANGHAI)
    assert seconds_to_midnight(afternoon) == 8 * 3600 + 30 * 60  # rounded up


def test_the_per_second_rate_refuses_for_one_second_and_counts_nothing(namespace: str) -> None:
    q = Quota(URL, namespace)
    limits = Limits(daily=100, per_second=3)
    t = dt.datetime(2026, 12, 1, 9, 0, 0, 250_000, tzinfo=SHANGHAI)
    decisions = run(q, 2, limits, t, t, t, t + dt.timedelta(milliseconds=500), t)
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    refused = decisions[3]
    assert (refused.which, refused.retry_after_s, refused.remaining) == ("rate", 1, 97)
    assert q.used_today(2, t) == 3  # refused calls are not counted
    (next_second,) = run(q, 2, limits, t + dt.timedelta(seconds=1))
    assert next_second.allowed and next_second.remaining == 96


def test_the_daily_limit_is_reported_before_the_rate(namespace: str) -> None:
    q = Quota(URL, namespace)
    (one, two) = run(q, 3, Limits(daily=1, per_second=1), NOON, NOON)
    assert one.allowed and (two.which, two.retry_after_s) == ("daily", two.reset_s)
    assert run(q, 4, Limits(daily=0, per_second=10), NOON)[0].which == "daily"


def test_codes_are_counted_apart(namespace: str) -> None:
    q = Quota(URL, namespace)
    limits = Limits(daily=1, per_second=10)
    assert [d.allowed for d in run(q, 5, limits, NOON, NOON)] == [True, False]
    assert run(q, 6, limits, NOON)[0].allowed


def test_one_quota_serves_one_event_loop_after_another(namespace: str) -> None:
    q = Quota(URL, namespace)

    async def one() -> bool:
        return (await q.take(8, OPEN, NOON)).allowed

    assert asyncio.run(one()) and asyncio.run(one())  # a new loop gets its own client
    assert q.used_today(8, NOON) == 2


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_redis_refuses_the_call_quickly() -> None:
    url = f"redis://:s3cret@127.0.0.1:{_closed_port()}/0"
    q = Quota(url, "unused")
    start = time.monotonic()
    with pytest.raises(QuotaUnavailable) as caught:
        run(q, 1, OPEN, NOON)
    assert time.monotonic() - start < 2
    assert "127.0.0.1" in str(caught.value) and "s3cret" not in str(caught.value)
    with pytest.raises(QuotaUnavailable):
        q.used_today(1, NOON)


def test_a_redis_that_accepts_but_never_answers_refuses_the_call_within_the_timeout() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # connections are accepted by the kernel, never answered
        port = silent.getsockname()[1]
        q = Quota(f"redis://127.0.0.1:{port}/0", "unused", timeout_s=0.3)
        start = time.monotonic()
        with pytest.raises(QuotaUnavailable, match="did not answer"):
            run(q, 1, OPEN, NOON)
        assert time.monotonic() - start < 2.5


def test_three_hundred_calls_in_flight_in_one_process_all_get_an_answer(namespace: str) -> None:
    """More calls at once than redis-py's default pool (100) holds: none is refused for want
    of a connection, and exactly the limit is admitted. (The timeouts are generous: what is
    pinned down is the pool's capacity, not how fast a loaded CI host opens 128 sockets.)"""

    async def main() -> list[Decision]:
        q = Quota(URL, namespace, connect_timeout_s=10, timeout_s=10)
        try:
            limits = Limits(daily=200, per_second=1_000_000)
            return list(await asyncio.gather(*(q.take(9, limits, NOON) for _ in range(300))))
        finally:
            await q.close()

    decisions = asyncio.run(main())  # a QuotaUnavailable would fail the test here
    assert sum(d.allowed for d in decisions) == 200
    assert Quota(URL, namespace).used_today(9, NOON) == 200


def test_calls_beyond_the_pool_wait_for_a_free_connection(namespace: str) -> None:
    async def main() -> list[Decision]:
        q = Quota(URL, namespace, max_connections=4)
        try:
            return list(await asyncio.gather(*(q.take(10, OPEN, NOON) for _ in range(120))))
        finally:
            await q.close()

    assert all(d.allowed for d in asyncio.run(main()))
    assert Quota(URL, namespace).used_today(10, NOON) == 120


async def _late_redis(delay_s: float) -> asyncio.Server:
    """A proxy to the real Redis that holds back each answer to a script call by
    ``delay_s``: Redis has run the script, its answer comes too late."""

    async def pipe(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, late: list[bool], up: bool
    ) -> None:
        try:
            while data := await reader.read(65_536):
                if up and b"EVALSHA" in data.upper():
                    late.append(True)
                elif not up and late:
                    late.pop()
                    await asyncio.sleep(delay_s)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        redis_r, redis_w = await asyncio.open_connection("127.0.0.1", 6379)
        late: list[bool] = []
        await asyncio.gather(
            pipe(client_r, redis_w, late, True), pipe(redis_r, client_w, late, False)
        )

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def test_a_late_answer_refuses_the_call_and_the_script_is_never_run_twice(
    namespace: str,
) -> None:
    """A reply later than the timeout is not retried: a retry would run the script again and
    count the call twice (or admit one call counted as two)."""
    from exchange.gateway.quota import TAKE_LUA

    redis.Redis.from_url(URL).script_load(TAKE_LUA)  # so that the first EVALSHA runs it

    async def main() -> None:
        proxy = await _late_redis(0.7)
        port = proxy.sockets[0].getsockname()[1]
        q = Quota(f"redis://127.0.0.1:{port}/0", namespace, timeout_s=0.3)
        try:
            with pytest.raises(QuotaUnavailable, match="did not answer"):
                await q.take(11, OPEN, NOON)
            await asyncio.sleep(0.8)  # the late answer arrives, and nothing is sent again
        finally:
            await q.close()
            proxy.close()

    asyncio.run(main())
    assert Quota(URL, namespace).used_today(11, NOON) == 1


def test_a_connection_redis_closed_between_calls_is_replaced_before_the_next_one(
    namespace: str,
) -> None:
    """Without a retry, what stands for the old "one retry on a fresh connection" is the
    pool's check of an idle connection: one closed by Redis (a restart) is not used."""

    async def main() -> list[Decision]:
        open_ends: list[asyncio.StreamWriter] = []

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65_536):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
            redis_r, redis_w = await asyncio.open_connection("127.0.0.1", 6379)
            open_ends.append(client_w)
            await asyncio.gather(pipe(client_r, redis_w), pipe(redis_r, client_w))

        proxy = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = proxy.sockets[0].getsockname()[1]
        q = Quota(f"redis://127.0.0.1:{port}/0", namespace)
        try:
            first = await q.take(12, OPEN, NOON)
            for end in open_ends:  # "Redis restarted": every connection it had is closed
                end.close()
            await asyncio.sleep(0.2)
            return [first, await q.take(12, OPEN, NOON)]
        finally:
            await q.close()
            proxy.close()

    assert [d.allowed for d in asyncio.run(main())] == [True, True]
    assert Quota(URL, namespace).used_today(12, NOON) == 2
