"""HTTP load generators for bench/gateway.py, each run as a process of its own.

    python -m bench.loadgen open   --url URL [--url URL ...] --rate 500 --seconds 60
                                   [--header 'Name: value' ...] [--cpu 1]
    python -m bench.loadgen closed --url URL [...] --connections 16 --seconds 20 [...]

Prints one JSON line (or writes it to ``--out``): counts, errors by kind, latency percentiles
in milliseconds.

``open`` is an open-loop generator: request i is due at start + i / rate whatever became of
the earlier ones, and its latency is measured from that due time, not from when it was sent,
so a server that stalls is charged for the requests that queued behind the stall (no
coordinated omission). A request is sent on a fresh connection when every open one is busy.
The due times are kept to a few tens of microseconds by sleeping to within a millisecond of
each and spinning the rest (the event loop's timers round to whole milliseconds): that costs
up to a core, which is why the process pins itself to ``--cpu``. ``lag`` in the output is how
late the sends left (sent minus due), so a generator that cannot keep up shows it.

``closed`` keeps ``--connections`` keep-alive connections each sending its next request when
the last one was answered (what wrk does; used when wrk is not installed).

The client is aiohttp on uvloop; its own cost per request (about 0.1-0.2 ms) is in every
latency, direct or not, so compare a target with the direct run of the same generator.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import uvloop

SPIN_S = 0.0012  # sleep until this close to a due time, then spin


@dataclass
class Tally:
    """What one run saw."""

    latencies: list[float] = field(default_factory=list)  # seconds, answered requests
    lags: list[float] = field(default_factory=list)  # seconds a send left after its due time
    statuses: Counter[int] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)  # exception class -> count
    bytes: int = 0

    def record(self, latency: float, status: int, size: int) -> None:
        self.latencies.append(latency)
        self.statuses[status] += 1
        self.bytes += size


def percentile(sorted_xs: Sequence[float], p: float) -> float:
    if not sorted_xs:
        return float("nan")
    return sorted_xs[min(len(sorted_xs) - 1, int(p / 100 * len(sorted_xs)))]


def summary(tally: Tally, seconds: float, sent: int, raw: bool = False) -> dict[str, object]:
    xs = sorted(tally.latencies)
    lags = sorted(tally.lags)
    ok = tally.statuses.get(200, 0)
    extra: dict[str, object] = {}
    if raw:  # for a caller that pools several runs (in ms, to the microsecond)
        extra = {"latencies_ms": [round(x * 1000, 3) for x in xs],
                 "lags_ms": [round(x * 1000, 3) for x in lags]}  # fmt: skip
    return extra | {
        "sent": sent,
        "answered": len(xs),
        "ok": ok,
        "errors": sent - ok,
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "failures": dict(tally.failures),
        "seconds": seconds,
        "rate": len(xs) / seconds if seconds else 0.0,
        "bytes_per_answer": tally.bytes / max(1, len(xs)),
        "ms": {str(p): percentile(xs, p) * 1000 for p in (50, 90, 95, 99, 99.9, 100)},
        "mean_ms": sum(xs) / max(1, len(xs)) * 1000,
        "lag_ms": {str(p): percentile(lags, p) * 1000 for p in (50, 99, 100)},
    }


async def _one(
    http: aiohttp.ClientSession, url: str, due: float, tally: Tally, timeout_s: float
) -> None:
    tally.lags.append(time.perf_counter() - due)
    try:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as r:
            body = await r.read()
            tally.record(time.perf_counter() - due, r.status, len(body))
    except (aiohttp.ClientError, TimeoutError) as exc:
        tally.failures[type(exc).__name__] += 1


async def open_loop(
    urls: Sequence[str],
    headers: dict[str, str],
    rate: float,
    seconds: float,
    timeout_s: float,
    raw: bool = False,
) -> dict[str, object]:
    """``rate`` requests a second for ``seconds``, cycling over ``urls``."""
    tally = Tally()
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=None)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as http:
        # a few connections opened before the clock starts: the first sends are not charged
        # for the handshakes a long-running client would have made long ago
        await asyncio.gather(
            *(_one(http, urls[0], time.perf_counter(), Tally(), 5) for _ in range(8))
        )
        n = int(rate * seconds)
        interval = 1 / rate
        start = time.perf_counter() + 0.05
        tasks: list[asyncio.Task[None]] = []
        for i in range(n):
            due = start + i * interval
            wait = due - time.perf_counter()
            if wait > SPIN_S:
                await asyncio.sleep(wait - SPIN_S)
            while time.perf_counter() < due:
                await asyncio.sleep(0)  # the loop keeps reading answers while we spin
            tasks.append(
                asyncio.create_task(_one(http, urls[i % len(urls)], due, tally, timeout_s))
            )
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    return summary(tally, min(elapsed, seconds) or seconds, n, raw)


async def closed_loop(
    urls: Sequence[str],
    headers: dict[str, str],
    connections: int,
    seconds: float,
    timeout_s: float,
    raw: bool = False,
) -> dict[str, object]:
    """``connections`` clients, each sending its next request once the last was answered."""
    tally = Tally()
    sent = 0
    connector = aiohttp.TCPConnector(limit=connections, ttl_dns_cache=None)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as http:
        start = time.perf_counter()
        stop = start + seconds

        async def client(k: int) -> None:
            nonlocal sent
            i = k
            while time.perf_counter() < stop:
                sent += 1
                await _one(http, urls[i % len(urls)], time.perf_counter(), tally, timeout_s)
                i += 1

        await asyncio.gather(*(client(k) for k in range(connections)))
        elapsed = time.perf_counter() - start
    return summary(tally, elapsed, sent, raw)


def parse_headers(items: Sequence[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition(":")
        if not sep:
            raise SystemExit(f"--header {item!r}: expected 'Name: value'")
        headers[name.strip()] = value.strip()
    return headers


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=("open", "closed"))
    ap.add_argument("--url", action="append", required=True, help="cycled over; repeatable")
    ap.add_argument("--header", action="append", default=[], help="'Name: value'; repeatable")
    ap.add_argument("--rate", type=float, default=500, help="open: requests a second")
    ap.add_argument("--connections", type=int, default=16, help="closed: connections")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--timeout", type=float, default=10, help="seconds before a request fails")
    ap.add_argument("--cpu", type=int, action="append", help="pin to this CPU; repeatable")
    ap.add_argument("--raw", action="store_true", help="every latency and lag in the output")
    ap.add_argument("--out", help="write the JSON line to this file instead of stdout")
    args = ap.parse_args(argv)
    if args.cpu:
        os.sched_setaffinity(0, set(args.cpu))
    headers = parse_headers(args.header)
    if args.mode == "open":
        run = open_loop(args.url, headers, args.rate, args.seconds, args.timeout, args.raw)
    else:
        run = closed_loop(args.url, headers, args.connections, args.seconds, args.timeout, args.raw)
    result = uvloop.run(run)
    result["cpu"] = sorted(os.sched_getaffinity(0))
    result["loadgen_cpu_s"] = time.process_time()
    text = json.dumps(result) + "\n"
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        os.set_blocking(sys.stdout.fileno(), True)  # the event loop may have left it non-blocking
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
