"""The REST API under load: 8 concurrent clients reading from a server on a PostgreSQL store.

    python -m bench.api_load [--clients 8] [--seconds 10] [--subscriptions 500] [--workers 1]
                             [--client wrk|httpx]

The server is ``exchange serve`` started as a process, the way a user runs it, on a fresh
PostgreSQL metadata store seeded with the small city of the tests and ``--subscriptions``
applications of one requester. Each client loops over the authenticated reads (``/me``, a
page of ``/subscriptions``, one subscription, the catalog, a deadline); every one of them is
audited (an ``api.call`` event on the hash chain). The baseline, run first in the same way, is
the cheapest thing the server answers: ``/docs/oauth2-redirect``, a static page with no token,
no store and no audit. Prints requests/s and latency percentiles, each as a ratio to the
baseline; the target is >= 300 reads/s with p99 <= 100 ms.

The load generator shares the machine's cores with the server, so it should cost little:
``wrk`` (Debian/Ubuntu: ``apt-get install wrk``; macOS: ``brew install wrk``) when it is on
the PATH — one C process, ``--clients`` keep-alive connections, latencies from its own
histogram — else httpx, one thread and one keep-alive connection per client, in this process
(it takes several times wrk's CPU per request, which the server then lacks). Each run also
prints the CPU time the server's processes spent per request (user + system, read with psutil
before and after): unlike the wall-clock figures, it does not depend on what else the machine
is doing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import psycopg

ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
READS = (
    "/me",
    "/subscriptions?limit=50",
    "/subscriptions/{sid}",
    "/catalog/resources",
    "/calendar/deadline?start=2026-09-30T10:00&working_days=5",
)
BASELINE = ("/docs/oauth2-redirect",)


@dataclass
class Result:
    name: str
    seconds: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    server_cpu: float = 0.0  # seconds of the server's processes during the run
    requests: int = 0  # wrk: its count (latencies holds only the percentiles then)
    percentiles: dict[float, float] = field(default_factory=dict)  # wrk: p -> ms

    @property
    def count(self) -> int:
        return self.requests or len(self.latencies)

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    def pct(self, p: float) -> float:
        if self.percentiles:
            return self.percentiles[p]
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] * 1000

    def mean_ms(self) -> float:
        return self.percentiles[0] if self.percentiles else statistics.fmean(self.latencies) * 1000

    @property
    def cpu_ms_per_request(self) -> float:
        return self.server_cpu / max(1, self.count) * 1000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def seed(home: Path, url: str, subscriptions: int) -> str:
    """The tests' small city on ``url``, ``subscriptions`` applications by tax; tax's token."""
    from exchange.workflow import service as svc
    from exchange.workflow.users import principal_of
    from tests.workflow_setup import add_people, form, open_city, tokens

    ws = open_city(home, url)
    add_people(ws)
    with ws.store.session() as s:
        tax = principal_of(s, "tax")
    for i in range(subscriptions):
        svc.apply(ws, tax, form("OPEN" if i % 2 else "COND", target_table=f"t{i}"))
    token = tokens(ws)["tax"]
    ws.close()
    return token


def serve(home: Path, url: str, port: int, workers: int = 1) -> subprocess.Popen[bytes]:
    env = {**os.environ, "EXCHANGE_DB_URL": url, "EXCHANGE_HOME": str(home)}
    exe = Path(sys.executable).with_name("exchange")
    cmd = [str(exe), "serve", "--port", str(port), "--catalog", str(home / "catalog.yaml"),
           "--workers", str(workers)]  # fmt: skip
    # its log (an access line a call) to a file: a pipe nobody reads would stall the server
    log = open(home / "serve.log", "wb")  # noqa: SIM115  (the server's lifetime)
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("exchange serve did not start")


def cpu_seconds(proc: subprocess.Popen[bytes]) -> float:
    """User + system CPU of the server process and its workers so far."""
    root = psutil.Process(proc.pid)
    total = 0.0
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def measured(proc: subprocess.Popen[bytes], run: Callable[[], Result]) -> Result:
    before = cpu_seconds(proc)
    result = run()
    result.server_cpu = cpu_seconds(proc) - before
    return result


# wrk: each connection cycles over the paths (a counter per thread); the summary as one line.
WRK_SCRIPT = """
local paths = {%(paths)s}
local token = %(token)s
local i = 0
request = function()
  i = i + 1
  local path = paths[(i %% #paths) + 1]:gsub("{sid}", tostring(1 + i %% 50))
  local headers = {}
  if token ~= "" then headers["Authorization"] = "Bearer " .. token end
  return wrk.format("GET", path, headers)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests": %%d, "errors": %%d, "mean": %%f, "p50": %%f, "p99": %%f}\\n',
    summary.requests, e.connect + e.read + e.write + e.status + e.timeout,
    latency.mean / 1000, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


def lua_string(s: str) -> str:
    return json.dumps(s)  # a JSON string of ASCII is a Lua string literal


def load_wrk(name: str, base: str, token: str | None, paths: tuple[str, ...], clients: int,
             seconds: float) -> Result:  # fmt: skip
    """``clients`` keep-alive connections of one wrk process (two threads), over ``paths``."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_SCRIPT % {"paths": ", ".join(map(lua_string, paths)),
                              "token": lua_string(token or "")})  # fmt: skip
    try:
        out = subprocess.run(
            ["wrk", "-t", str(min(2, clients)), "-c", str(clients), "-d", f"{seconds:g}s",
             "--timeout", "30s", "-s", f.name, base],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    finally:
        os.unlink(f.name)
    found = re.search(r"^RESULT (.*)$", out.stdout, re.M)
    if found is None:
        raise SystemExit(f"wrk printed no result:\n{out.stdout}{out.stderr}")
    r = json.loads(found.group(1))
    return Result(name, seconds, errors=r["errors"], requests=r["requests"],
                  percentiles={0: r["mean"], 50: r["p50"], 99: r["p99"]})  # fmt: skip


def load(name: str, base: str, token: str | None, paths: tuple[str, ...], clients: int,
         seconds: float) -> Result:  # fmt: skip
    """``clients`` threads, each with its own connection, looping over ``paths``."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    result = Result(name, seconds)
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(k: int) -> None:
        mine: list[float] = []
        errors = 0
        with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
            i = k
            while time.monotonic() < stop:
                path = paths[i % len(paths)].format(sid=1 + i % 50)
                t0 = time.perf_counter()
                r = http.get(path)
                mine.append(time.perf_counter() - t0)
                errors += r.status_code != 200
                i += 1
        with lock:
            result.latencies += mine
            result.errors += errors

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--subscriptions", type=int, default=500)
    ap.add_argument("--workers", type=int, default=1, help="exchange serve --workers")
    ap.add_argument("--client", choices=("wrk", "httpx"),
                    default="wrk" if shutil.which("wrk") else "httpx",
                    help="load generator (default: wrk when it is installed)")  # fmt: skip
    args = ap.parse_args()
    run = load_wrk if args.client == "wrk" else load

    name = f"exchange_bench_api_{secrets.token_hex(3)}"
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp)
            url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
            token = seed(home, url, args.subscriptions)
            port = free_port()
            proc = serve(home, url, port, args.workers)
            base = f"http://127.0.0.1:{port}"
            try:
                run("warm-up", base, token, READS, args.clients, 2)
                floor = measured(proc, lambda: run("baseline", base, None, BASELINE,
                                                   args.clients, args.seconds))  # fmt: skip
                reads = measured(proc, lambda: run("reads", base, token, READS,
                                                   args.clients, args.seconds))  # fmt: skip
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    report(floor, reads, args)


def report(floor: Result, reads: Result, args: argparse.Namespace) -> None:
    print(
        f"{args.clients} clients, {args.seconds:g} s each, {args.subscriptions} subscriptions, "
        f"{args.workers} server process(es), load from {args.client}"
    )
    print(f"{'':10}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'server CPU ms/req':>19}")
    for r in (floor, reads):
        print(
            f"{r.name:10}{r.rate:9.0f}{r.pct(50):9.1f}{r.pct(99):9.1f}{r.errors:8}"
            f"{r.cpu_ms_per_request:19.2f}"
        )
    print(
        f"reads / baseline: {reads.rate / floor.rate:.2f}x the rate, "
        f"{reads.pct(50) / floor.pct(50):.1f}x the p50, "
        f"{reads.pct(99) / floor.pct(99):.1f}x the p99, "
        f"{reads.cpu_ms_per_request / floor.cpu_ms_per_request:.1f}x the server CPU a request"
    )
    print(f"mean read latency {reads.mean_ms():.1f} ms")
    ok = reads.rate >= 300 and reads.pct(99) <= 100 and reads.errors == 0
    print("target (>= 300 reads/s, p99 <= 100 ms, no error): " + ("met" if ok else "NOT met"))


if __name__ == "__main__":
    main()
