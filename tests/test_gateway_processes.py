"""``exchange gateway --workers 4`` as it runs in production: real processes under uvicorn's
supervisor, sixteen concurrent clients, the running Redis, a real upstream.

- A daily quota is exact across processes: as many calls answered as the limit, the rest 429.
- Neither the upstream credential nor the authorization code appears in any answer (body or
  header), in the gateway's output, in an audit event or in a usage row.
- A worker SIGKILLed mid-load loses nothing: once the gateway has been restarted, the calls
  Redis counted as admitted, the usage rows of admitted calls and the ``gateway.call``
  events of admitted calls are the same number (the killed worker's unanswered calls are
  ``interrupted``).
- The flusher process beside the workers is the only writer of usage rows and events; one
  SIGKILLed mid-load is started again and loses nothing, counts nothing twice.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest
import sqlalchemy as sa

from exchange import audit
from exchange.gateway.models import ApiCall
from exchange.gateway.quota import Quota, counter_namespace
from exchange.kernel.settings import Settings
from exchange.store.models import AuditEvent
from exchange.workspace import Workspace
from tests.servers.upstream import upstream_server
from tests.test_gateway_app import (
    OP,
    REDIS_URL,
    RESOURCE,
    ROUTES,
    TOKEN_ENV,
    USCC,
    clear_redis,
    subscribe,
    write_catalog,
)
from tests.test_gateway_app import _redis_or_skip as redis_or_skip

REPO = Path(__file__).resolve().parents[1]
CLIENTS = 16
#: Outcomes of calls the quota admitted (counted in Redis).
ADMITTED = ("ok", "upstream", "interrupted")


@dataclass
class Gateway:
    """A running ``exchange gateway`` process tree."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def children(self) -> list[psutil.Process]:
        """The live child processes but the supervisor's resource tracker (not a zombie)."""
        live = []
        for child in psutil.Process(self.proc.pid).children():
            try:
                if "resource_tracker" not in " ".join(child.cmdline()):
                    live.append(child)
            except (psutil.ZombieProcess, psutil.NoSuchProcess):
                continue
        return live

    def flushers(self) -> list[psutil.Process]:
        """The flusher process (it holds the spool directory's ``flusher.lock``)."""
        found = []
        for child in self.children():
            try:
                if any(f.path.endswith("/flusher.lock") for f in child.open_files()):
                    found.append(child)
            except (psutil.ZombieProcess, psutil.NoSuchProcess):
                continue
        return found

    def workers(self) -> list[psutil.Process]:
        """The live worker processes (not the flusher process)."""
        flushers = {p.pid for p in self.flushers()}
        return [p for p in self.children() if p.pid not in flushers]

    def busiest(self) -> psutil.Process:
        """The worker serving the most connections now (the listening socket is shared: the
        kernel hands connections to whichever worker accepts first, not round robin)."""
        port = int(self.url.rsplit(":", 1)[1])

        def served(p: psutil.Process) -> int:
            return sum(
                1 for c in p.net_connections("tcp")
                if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port
            )  # fmt: skip

        return max(self.workers(), key=served)


@dataclass
class City:
    home: Path
    ws: Workspace
    env: dict[str, str]
    code: str
    code_id: int
    token: str
    namespace: str
    subscription_id: int = 0
    logs: list[Path] = field(default_factory=list)

    def admitted_today(self) -> int:
        """The calls the quota counted today: the subscription's, in this installation's keys."""
        quota = Quota(REDIS_URL, counter_namespace(self.namespace, self.ws.installation_id))
        return quota.used_today(self.subscription_id, dt.datetime.now(dt.UTC))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def city(tmp_path: Path, upstream_url: str, token: str, *, daily: int) -> Iterator[City]:
    namespace = f"gwproc{secrets.token_hex(4)}"
    catalog = write_catalog(tmp_path, upstream_url, daily=daily, per_second=100_000, timeout_s=5)
    db_url = f"sqlite:///{tmp_path / 'exchange.db'}"
    env = {
        **os.environ,
        "EXCHANGE_HOME": str(tmp_path),
        "EXCHANGE_DB_URL": db_url,
        "EXCHANGE_REDIS_URL": REDIS_URL,
        "EXCHANGE_REDIS_NAMESPACE": namespace,
        TOKEN_ENV: token,
    }
    os.environ[TOKEN_ENV] = token
    try:
        with Workspace.open(catalog, Settings(home=tmp_path, db_url=db_url)) as ws:
            issued = subscribe(ws)
            yield City(
                tmp_path, ws, env, issued.code, issued.code_id, token, namespace,
                issued.subscription_id,
            )  # fmt: skip
    finally:
        os.environ.pop(TOKEN_ENV, None)
        clear_redis(namespace)


@contextmanager
def gateway(c: City, workers: int) -> Iterator[Gateway]:
    port = free_port()
    log = c.home / f"gateway-{len(c.logs)}.log"
    c.logs.append(log)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "exchange", "gateway", "--catalog", str(c.home / "catalog.yaml"),
             "--port", str(port), "--workers", str(workers)],
            cwd=REPO, env=c.env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    gw = Gateway(proc, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the gateway did not start:\n" + log.read_text()
            try:
                if httpx.get(gw.url + "/-/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        while not gw.flushers() and time.monotonic() < deadline:
            time.sleep(0.1)
        while workers > 1 and len(gw.workers()) < workers and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # every worker past its startup (they adopt dead spools there)
        yield gw
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise AssertionError(
                    "the gateway did not stop on SIGINT:\n" + log.read_text()
                ) from None


@dataclass
class Load:
    answers: list[httpx.Response] = field(default_factory=list)
    failures: int = 0  # connections a killed worker dropped
    lock: threading.Lock = field(default_factory=threading.Lock)


def load(gw: Gateway, code: str, per_client: int) -> Load:
    """``CLIENTS`` threads, each ``per_client`` calls on its own keep-alive connection."""
    got = Load()

    def client() -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {code}"}, timeout=30) as http:
            for _ in range(per_client):
                try:
                    a = http.get(f"{gw.url}/{RESOURCE}/{OP}", params={"uscc": USCC})
                    a.read()
                except httpx.HTTPError:
                    with got.lock:
                        got.failures += 1
                    continue
                with got.lock:
                    got.answers.append(a)

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return got


def usage_rows(c: City) -> list[ApiCall]:
    with c.ws.store.session() as s:
        return list(s.execute(sa.select(ApiCall)).scalars())


def call_events(c: City) -> list[AuditEvent]:
    with c.ws.store.session() as s:
        query = sa.select(AuditEvent).where(AuditEvent.kind == "gateway.call")
        return list(s.execute(query.order_by(AuditEvent.id)).scalars())


@pytest.fixture(autouse=True)
def _needs_redis() -> None:
    redis_or_skip()


def test_a_daily_quota_is_exact_across_four_workers_and_secrets_appear_nowhere(
    tmp_path: Path,
) -> None:
    token = "tif-" + secrets.token_hex(16)
    limit = 40
    with (
        upstream_server(ROUTES, token=token) as up,
        city(tmp_path, up.url, token, daily=limit) as c,
    ):
        with gateway(c, workers=4) as gw:
            assert len(gw.workers()) == 4
            got = load(gw, c.code, per_client=13)
        statuses = [a.status_code for a in got.answers]
        assert got.failures == 0
        assert statuses.count(200) == limit, statuses
        assert statuses.count(429) == CLIENTS * 13 - limit
        assert c.admitted_today() == limit
        assert len([r for r in up.requests() if r.authorized]) == limit
        rows = usage_rows(c)
        assert sorted(r.outcome for r in rows) == ["ok"] * limit + ["quota"] * (
            CLIENTS * 13 - limit
        )
        assert len(call_events(c)) == len(rows)
        # every answer, header, output line, audit event and usage row: no secret in any
        seen = [a.text + repr(a.headers.multi_items()) for a in got.answers]
        seen += [p.read_text(errors="replace") for p in c.logs]
        with c.ws.store.session() as s:
            seen += [repr(row) for row in s.execute(sa.text("SELECT * FROM audit_events"))]
            seen += [repr(row) for row in s.execute(sa.text("SELECT * FROM api_usage"))]
        for secret in (token, c.code):
            assert sum(secret in text for text in seen) == 0
        assert list((tmp_path / "gateway" / "spool").glob("*.jsonl")) == []


def test_a_worker_killed_mid_load_loses_no_admitted_call(tmp_path: Path) -> None:
    token = "tif-" + secrets.token_hex(16)
    # each call waits 0.2 s upstream: a killed worker has calls admitted and not yet answered
    with (
        upstream_server(ROUTES, token=token, delay_s=0.2) as up,
        city(tmp_path, up.url, token, daily=100_000) as c,
    ):
        with gateway(c, workers=4) as gw:
            killed: list[psutil.Process] = []

            def kill() -> None:
                victim = gw.busiest()
                victim.send_signal(signal.SIGKILL)
                killed.append(victim)

            killer = threading.Timer(1.0, kill)
            killer.start()
            got = load(gw, c.code, per_client=25)
            killer.join()
            assert killed and killed[0].pid not in [w.pid for w in gw.workers()]
        with gateway(c, workers=1):
            pass  # started (adopting every dead process's spool) and stopped
        admitted = c.admitted_today()
        rows = usage_rows(c)
        events = call_events(c)
        assert admitted == len([r for r in rows if r.outcome in ADMITTED])
        assert admitted == len([e for e in events if e.payload["outcome"] in ADMITTED])
        assert len({r.call_id for r in rows}) == len(rows) == len(events)
        interrupted = [r for r in rows if r.outcome == "interrupted"]
        assert got.failures >= 1 and len(interrupted) >= 1
        assert len([a for a in got.answers if a.status_code == 200]) == len(
            [r for r in rows if r.outcome == "ok"]
        )
        assert list((tmp_path / "gateway" / "spool").glob("*.jsonl")) == []


@pytest.mark.parametrize("workers", [1, 2])
def test_a_gateway_stopped_by_sigterm_has_stored_every_call_when_it_exits(
    tmp_path: Path, workers: int
) -> None:
    token = "tif-" + secrets.token_hex(16)
    with (
        upstream_server(ROUTES, token=token) as up,
        city(tmp_path, up.url, token, daily=100_000) as c,
        gateway(c, workers=workers) as gw,
    ):
        got = load(gw, c.code, per_client=40)
        flushers = gw.flushers()
        gw.proc.send_signal(signal.SIGTERM)
        status = gw.proc.wait(60)

        # 143 from one worker (uvicorn raises the signal again), 0 from its supervisor
        assert status in (0, 128 + signal.SIGTERM), gw.log.read_text()
        assert flushers and not any(f.is_running() for f in flushers)  # it waited for it
        answered = [a for a in got.answers if a.status_code == 200]
        assert len(answered) == CLIENTS * 40
        assert len(usage_rows(c)) == len(answered) == len(call_events(c))


def test_the_flusher_process_killed_mid_load_is_restarted_and_loses_nothing(
    tmp_path: Path,
) -> None:
    token = "tif-" + secrets.token_hex(16)
    with (
        upstream_server(ROUTES, token=token) as up,
        city(tmp_path, up.url, token, daily=100_000) as c,
    ):
        with gateway(c, workers=2) as gw:
            assert len(gw.flushers()) == 1 and len(gw.workers()) == 2
            first = gw.flushers()[0]
            killed: list[int] = []

            def kill() -> None:
                first.send_signal(signal.SIGKILL)
                killed.append(first.pid)

            killer = threading.Timer(1.0, kill)
            killer.start()
            got = load(gw, c.code, per_client=40)
            killer.join()
            assert killed
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                now = [p.pid for p in gw.flushers()]
                if now and now[0] != killed[0]:
                    break
                time.sleep(0.1)
            assert [p.pid for p in gw.flushers()] != killed
        admitted = c.admitted_today()
        rows = usage_rows(c)
        events = call_events(c)
        assert got.failures == 0
        assert admitted == len(got.answers) == CLIENTS * 40
        assert admitted == len([r for r in rows if r.outcome == "ok"])
        assert len({r.call_id for r in rows}) == len(rows) == len(events) == admitted
        with c.ws.store.session() as s:
            assert audit.check_chain(s).broken_id is None
        assert list((tmp_path / "gateway" / "spool").glob("*.jsonl")) == []


def test_the_gateway_refuses_to_start_without_its_upstream_credential(tmp_path: Path) -> None:
    token = "tif-" + secrets.token_hex(16)
    with upstream_server(ROUTES, token=token) as up, city(tmp_path, up.url, token, daily=10) as c:
        env = {k: v for k, v in c.env.items() if k != TOKEN_ENV}
        done = subprocess.run(
            [sys.executable, "-m", "exchange", "gateway", "--catalog", str(c.home / "catalog.yaml"),
             "--port", str(free_port())],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"node 'prov_gw': environment variable {TOKEN_ENV} is not set" in done.stderr
    assert token not in done.stdout + done.stderr


def test_the_gateway_says_it_is_on_only_once_a_call_is_answered(tmp_path: Path) -> None:
    token = "tif-" + secrets.token_hex(16)
    with upstream_server(ROUTES, token=token) as up, city(tmp_path, up.url, token, daily=10) as c:
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "exchange", "gateway", "--catalog", str(c.home / "catalog.yaml"),
             "--port", str(port), "--workers", "2"],
            cwd=REPO, env={**c.env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            lines: list[str] = []
            while not (lines and lines[-1].startswith("gateway on")):
                line = proc.stdout.readline()
                assert line, "the gateway ended:\n" + "".join(lines)
                lines.append(line)
            assert lines[-1].strip() == (
                f"gateway on http://127.0.0.1:{port}: 2 api resources, 2 workers"
            )
            assert any(line.startswith("gateway starting") for line in lines[:-1])
            # at once, no retry: the port accepts and a worker answers
            answer = httpx.get(
                f"http://127.0.0.1:{port}/{RESOURCE}/{OP}", params={"uscc": USCC},
                headers={"Authorization": f"Bearer {c.code}"}, timeout=10,
            )  # fmt: skip
            assert answer.status_code == 200, answer.text
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
