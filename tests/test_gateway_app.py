"""The gateway as a department calls it: a real uvicorn (uvloop, httptools) serving the app in
this process, a real upstream (tests/servers/upstream.py, checking the tif signature), the
running Redis for the quotas and a SQLite store. A proxied call returns only the granted
fields, signed for the upstream with the city's credential; every refusal has its status and
its reason; every call, refused or not, becomes a usage row and a ``gateway.call`` event.

The helpers here (``write_catalog``, ``subscribe``) also serve tests/test_gateway_processes.py.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
import sqlalchemy as sa
import uvicorn

from exchange import audit
from exchange.gateway import codes
from exchange.gateway.app import Gateway, create_app
from exchange.gateway.models import ApiCall
from exchange.gateway.settings import GatewaySettings
from exchange.kernel.settings import Settings
from exchange.store.models import AuditEvent, Subscription
from exchange.workflow.users import Principal, create_user, principal_of
from exchange.workspace import Workspace
from tests.servers.upstream import DEFAULT_ROUTES, UpstreamServer, upstream_server

RESOURCE = "410000-SCJG-API-0001"
OTHER = "410000-SCJG-API-0002"
OP = "by_uscc"
USCC = "91410100MA4F000001"
GRANTED = ["uscc", "ent_name"]
TOKEN_ENV = "GW_TEST_TIF_TOKEN"
REDIS_URL = "redis://127.0.0.1:6379/0"

CATALOG = """\
version: 1
departments: {{SCJG: 市场监管局, CITY: 市政务服务和大数据管理局, TAX: 市税务局}}
nodes:
  - name: prov_gw
    kind: http
    department: CITY
    base_url: {upstream}
    timeout_s: {timeout_s}
    auth: {{scheme: tif, paasid: city-exchange, credential: {{env: {env}}}}}
resources:
  - code: {resource}
    name: 企业基本信息查询
    kind: api
    provider: prov_gw
    share: conditional
    operations:
      - name: by_uscc
        method: GET
        path: /ent/{{uscc}}
        params:
          - {{name: uscc, in: path, type: string, pattern: "^[0-9A-Z]{{18}}$"}}
          - {{name: page, in: query, type: integer, required: false}}
      - name: search
        method: POST
        path: /ent/{{uscc}}
        params:
          - {{name: uscc, in: path, type: string, pattern: "^[0-9A-Z]{{18}}$"}}
    fields:
      - {{name: uscc, type: varchar, path: data.uscc}}
      - {{name: ent_name, type: varchar, path: data.name}}
      - {{name: legal_person, type: varchar, path: data.legal_person}}
      - {{name: shareholders, type: varchar, path: "data.shareholders[].name"}}
    quota: {{daily: {daily}, per_second: {per_second}, lowered_daily: 1}}
  - code: {other}
    name: 企业年报查询
    kind: api
    provider: prov_gw
    share: conditional
    operations:
      - {{name: by_uscc, method: GET, path: "/ent/{{uscc}}",
         params: [{{name: uscc, in: path, pattern: "^[0-9A-Z]{{18}}$"}}]}}
    fields:
      - {{name: uscc, type: varchar, path: data.uscc}}
"""


#: The upstream's API under a base path, as a platform's gateway has it (prov.example/api).
BASE = "/api"
ROUTES = {f"{BASE}/ent/{{uscc}}": DEFAULT_ROUTES["/ent/{uscc}"]}


def write_catalog(
    home: Path, upstream: str, *, daily: int = 10_000, per_second: int = 10_000,
    timeout_s: float = 1.0,
) -> Path:  # fmt: skip
    """The catalog of an http node at ``upstream`` (tif, credential in ``$GW_TEST_TIF_TOKEN``)
    and two api resources of it."""
    path = home / "catalog.yaml"
    path.write_text(
        CATALOG.format(
            upstream=upstream + BASE, timeout_s=timeout_s, env=TOKEN_ENV, resource=RESOURCE,
            other=OTHER, daily=daily, per_second=per_second,
        ),
        encoding="utf-8",
    )  # fmt: skip
    return path


def admin_of(ws: Workspace) -> Principal:
    with ws.store.session() as s:
        try:
            return principal_of(s, "admin")
        except Exception:
            pass
    with ws.store.session() as s:
        create_user(s, "admin", "admin", None, "test")
    with ws.store.session() as s:
        return principal_of(s, "admin")


def subscribe(
    ws: Workspace, resource: str = RESOURCE, fields: list[str] = GRANTED, department: str = "TAX"
) -> codes.IssuedCode:
    """An api subscription of ``department`` in implementation, as the workflow leaves an
    approved one, and its authorization code issued by exchange.gateway.codes."""
    with ws.store.session() as s:
        sub = Subscription(
            resource_code=resource, subscriber_node="", target_table="", fields=fields,
            requested_fields=fields, status="implementation", share="conditional",
            valid_until=dt.date.today() + dt.timedelta(days=60), department_code=department,
            department_name=ws.catalog.department_name(department), applicant="tax",
        )  # fmt: skip
        s.add(sub)
        s.flush()
        sid = sub.id
    return codes.issue(ws, admin_of(ws), sid)


def free_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


@dataclass
class Served:
    """A gateway served by uvicorn in a thread of this process, and what it stands on."""

    ws: Workspace
    app: Gateway
    url: str
    upstream: UpstreamServer
    issued: codes.IssuedCode
    token: str  # the upstream credential
    namespace: str

    def call(
        self, params: dict[str, str] | None = None, code: str | None = None,
        path: str = f"/{RESOURCE}/{OP}", headers: dict[str, str] | None = None,
        method: str = "GET",
    ) -> httpx.Response:  # fmt: skip
        sent = (
            {"Authorization": f"Bearer {code or self.issued.code}"} if headers is None else headers
        )
        query = {"uscc": USCC} if params is None else params
        return httpx.request(method, self.url + path, params=query, headers=sent, timeout=10)

    def usage(self) -> list[ApiCall]:
        self.app.flush()
        with self.ws.store.session() as s:
            return list(s.execute(sa.select(ApiCall).order_by(ApiCall.id)).scalars())

    def events(self) -> list[AuditEvent]:
        self.app.flush()
        with self.ws.store.session() as s:
            query = sa.select(AuditEvent).where(AuditEvent.kind == "gateway.call")
            return list(s.execute(query.order_by(AuditEvent.id)).scalars())


def clear_redis(namespace: str) -> None:
    r = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(r.scan_iter(f"{namespace}:*"))
        if keys:
            r.delete(*keys)
    finally:
        r.close()


@contextmanager
def served(
    home: Path, *, daily: int = 10_000, per_second: int = 10_000, timeout_s: float = 1.0,
    redis_url: str = REDIS_URL,
) -> Iterator[Served]:  # fmt: skip
    """A city with one TAX subscription and its code, and the gateway over it."""
    token = "tif-" + secrets.token_hex(16)
    namespace = f"gwtest{secrets.token_hex(4)}"
    old = os.environ.get(TOKEN_ENV)
    os.environ[TOKEN_ENV] = token
    try:
        with upstream_server(ROUTES, token=token) as up:
            catalog = write_catalog(home, up.url, daily=daily, per_second=per_second,
                                    timeout_s=timeout_s)  # fmt: skip
            settings = Settings(home=home, db_url=f"sqlite:///{home / 'exchange.db'}")
            with Workspace.open(catalog, settings) as ws:
                issued = subscribe(ws)
                gs = GatewaySettings(
                    spool_dir=home / "gateway" / "spool", redis_url=redis_url, cache_s=0.0,
                    namespace=namespace,
                )  # fmt: skip
                app = create_app(ws, gs)
                sock = free_socket()
                config = uvicorn.Config(app, loop="uvloop", http="httptools", lifespan="on",
                                        access_log=False, log_level="warning")  # fmt: skip
                server = uvicorn.Server(config)
                thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]})
                thread.start()
                deadline = time.monotonic() + 20
                while not server.started:
                    assert thread.is_alive() and time.monotonic() < deadline, "no gateway"
                    time.sleep(0.02)
                url = f"http://127.0.0.1:{sock.getsockname()[1]}"
                try:
                    yield Served(ws, app, url, up, issued, token, namespace)
                finally:
                    server.should_exit = True
                    thread.join(30)
                    sock.close()
    finally:
        clear_redis(namespace)
        if old is None:
            os.environ.pop(TOKEN_ENV, None)
        else:
            os.environ[TOKEN_ENV] = old


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Served]:
    with served(tmp_path) as it:
        yield it


def _redis_or_skip() -> None:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis is not reachable on 127.0.0.1: {exc}")
        pytest.skip(f"Redis is not reachable on 127.0.0.1: {exc}")


@pytest.fixture(autouse=True)
def _needs_redis() -> None:
    _redis_or_skip()


# -- a proxied call ---------------------------------------------------------------------------


def test_the_first_proxied_call_returns_only_the_granted_fields(gw: Served) -> None:
    answer = gw.call()
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"data": {"uscc": USCC, "name": answer.json()["data"]["name"]}}
    assert answer.json()["data"]["name"]
    assert "legal_person" not in answer.text and "shareholders" not in answer.text
    assert answer.headers["x-ratelimit-limit"] == "10000"
    assert answer.headers["x-ratelimit-remaining"] == "9999"
    assert int(answer.headers["x-ratelimit-reset"]) > 0
    # the upstream got the city's signature, and never the department's code
    (sent,) = gw.upstream.requests()
    assert sent.authorized and sent.path == f"{BASE}/ent/{USCC}"
    assert sent.headers["x-tif-paasid"] == "city-exchange"
    assert not any(gw.issued.code in v for v in sent.headers.values())


def test_query_params_are_passed_on_and_path_values_are_quoted(gw: Served) -> None:
    assert gw.call({"uscc": USCC, "page": "2"}).status_code == 200
    (sent,) = gw.upstream.requests()
    assert sent.query == {"page": "2"}


def test_an_answered_call_is_one_usage_row_and_one_audit_event(gw: Served) -> None:
    gw.call()
    (row,) = gw.usage()
    assert (row.status, row.outcome, row.resource_code, row.operation) == (200, "ok", RESOURCE, OP)
    assert (row.code_id, row.subscription_id, row.department_code) == (
        gw.issued.code_id, gw.issued.subscription_id, "TAX",
    )  # fmt: skip
    assert row.latency_ms > 0 and row.bytes > 0
    (event,) = gw.events()
    assert event.payload["call_id"] == row.call_id
    assert event.payload["outcome"] == "ok" and event.payload["code_id"] == gw.issued.code_id
    with gw.ws.store.session() as s:
        assert audit.check_chain(s).broken_id is None


# -- refusals ---------------------------------------------------------------------------------


def _refused(answer: httpx.Response, status: int, reason: str) -> dict[str, str]:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["error"] == reason, body
    assert set(body) == {"error", "message"}
    return dict(body)


def test_params_are_checked_after_the_code_and_named(gw: Served) -> None:
    _refused(gw.call({"uscc": USCC, "pgae": "1"}, code="nonsense"), 401, "unknown")
    body = _refused(gw.call({"uscc": USCC, "pgae": "1"}), 400, "bad_params")
    assert "'pgae'" in body["message"] and "uscc, page" in body["message"]
    body = _refused(gw.call({"uscc": "not-a-uscc"}), 400, "bad_params")
    assert "'uscc' does not match" in body["message"]
    assert "not-a-uscc" not in body["message"]  # a value is never echoed
    _refused(gw.call({}), 400, "bad_params")
    _refused(gw.call({"uscc": USCC, "page": "two"}), 400, "bad_params")
    body = _refused(gw.call({"uscc": USCC, gw.issued.code: ""}), 400, "bad_params")
    assert gw.issued.code not in body["message"]
    assert gw.upstream.requests() == []
    # the department's malformed calls are its own: its subscription, not anonymous
    refused = [r for r in gw.usage() if r.status == 400]
    assert len(refused) == 5
    assert {(r.subscription_id, r.department_code) for r in refused} == {
        (gw.issued.subscription_id, "TAX")
    }


def test_unknown_resources_operations_and_methods_are_refused(gw: Served) -> None:
    _refused(gw.call(path="/410000-NOPE-API-0001/by_uscc"), 404, "not_found")
    _refused(gw.call(path=f"/{RESOURCE}/by_name"), 404, "not_found")
    _refused(gw.call(path="/"), 404, "not_found")
    answer = gw.call(method="POST")
    _refused(answer, 405, "method_not_allowed")
    assert answer.headers["allow"] == "GET"


def test_a_missing_unknown_or_revoked_code_is_401(gw: Served) -> None:
    answer = gw.call(headers={})
    _refused(answer, 401, "missing")
    assert answer.headers["www-authenticate"] == "Bearer"
    _refused(gw.call(code="cx_000000000000_" + "x" * 43), 401, "unknown")
    # the code may come in X-Auth-Code as well
    assert gw.call(headers={"X-Auth-Code": gw.issued.code}).status_code == 200
    codes.revoke(gw.ws, admin_of(gw.ws), gw.issued.subscription_id, "leaked")
    _refused(gw.call(), 401, "revoked")


def test_a_code_for_another_resource_an_expired_or_suspended_subscription_is_403(
    gw: Served,
) -> None:
    _refused(gw.call(path=f"/{OTHER}/{OP}"), 403, "not_deliverable")
    with gw.ws.store.session() as s:
        sub = s.get(Subscription, gw.issued.subscription_id)
        assert sub is not None
        sub.valid_until = dt.date.today() - dt.timedelta(days=2)
    _refused(gw.call(), 403, "expired")
    with gw.ws.store.session() as s:
        sub = s.get(Subscription, gw.issued.subscription_id)
        assert sub is not None
        sub.valid_until, sub.status = dt.date.today() + dt.timedelta(days=9), "suspended"
    _refused(gw.call(), 403, "suspended")


def test_the_daily_quota_answers_429_with_retry_after(tmp_path: Path) -> None:
    with served(tmp_path, daily=2) as gw:
        assert [gw.call().status_code for _ in range(2)] == [200, 200]
        answer = gw.call()
        _refused(answer, 429, "quota")
        assert answer.headers["x-ratelimit-limit"] == "2"
        assert answer.headers["x-ratelimit-remaining"] == "0"
        assert int(answer.headers["retry-after"]) == int(answer.headers["x-ratelimit-reset"]) > 0
        assert len(gw.upstream.requests()) == 2
        assert [r.outcome for r in gw.usage()] == ["ok", "ok", "quota"]


def test_redis_down_is_503_and_no_call_goes_upstream(tmp_path: Path) -> None:
    with served(tmp_path, redis_url="redis://127.0.0.1:1/0") as gw:
        answer = gw.call()
        _refused(answer, 503, "unavailable")
        assert answer.headers["retry-after"]
        assert gw.upstream.requests() == []
        assert [r.outcome for r in gw.usage()] == ["unavailable"]


def test_an_upstream_timeout_is_504_and_a_5xx_is_502(tmp_path: Path) -> None:
    with served(tmp_path, timeout_s=0.3) as gw:
        gw.upstream.set(delay_s=1.0, times=1)
        _refused(gw.call(), 504, "upstream_timeout")
        gw.upstream.set(status=500, times=1)
        _refused(gw.call(), 502, "upstream_failed")
        gw.upstream.set(body=b"<html>oops</html>", content_type="text/html", times=1)
        _refused(gw.call(), 502, "upstream_bad_body")
        gw.upstream.set(status=404, times=1)
        body = _refused(gw.call(), 404, "upstream_status")
        assert gw.token not in str(body)
        assert gw.call().status_code == 200
        assert [(r.status, r.outcome) for r in gw.usage()] == [
            (504, "upstream"), (502, "upstream"), (502, "upstream"), (404, "upstream"),
            (200, "ok"),
        ]  # fmt: skip


def test_an_upstream_throttling_the_city_is_503_with_its_retry_after(tmp_path: Path) -> None:
    """The upstream's 429 is not the department's quota (our own 429): it is answered 503
    upstream_busy, with the upstream's Retry-After when it gives seconds, else a minute."""
    with served(tmp_path) as gw:
        gw.upstream.set(status=429, headers={"Retry-After": "30"}, times=1)
        answer = gw.call()
        _refused(answer, 503, "upstream_busy")
        assert answer.headers["retry-after"] == "30"
        gw.upstream.set(
            status=429, headers={"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}, times=1
        )
        assert gw.call().headers["retry-after"] == "60"
        gw.upstream.set(status=429, times=1)
        assert gw.call().headers["retry-after"] == "60"
        assert gw.call().status_code == 200
        assert [(r.status, r.outcome) for r in gw.usage()] == [
            (503, "upstream"), (503, "upstream"), (503, "upstream"), (200, "ok"),
        ]  # fmt: skip


def test_every_answer_from_the_quota_step_on_carries_the_rate_limit_headers(
    tmp_path: Path,
) -> None:
    with served(tmp_path, daily=10, timeout_s=0.3) as gw:
        gw.upstream.set(delay_s=1.0, times=1)
        timed_out = gw.call()
        gw.upstream.set(status=500, times=1)
        failed = gw.call()
        gw.upstream.set(status=404, times=1)
        passed_on = gw.call()
        ok = gw.call()
        assert [a.status_code for a in (timed_out, failed, passed_on, ok)] == [504, 502, 404, 200]
        assert [a.headers["x-ratelimit-remaining"] for a in (timed_out, failed, passed_on, ok)] == [
            "9", "8", "7", "6",
        ]  # fmt: skip
        for answer in (timed_out, failed, passed_on):
            assert answer.headers["x-ratelimit-limit"] == "10"
            assert int(answer.headers["x-ratelimit-reset"]) > 0


def test_a_post_body_that_is_not_json_is_refused_and_not_forwarded(gw: Served) -> None:
    path = f"/{RESOURCE}/search"
    headers = {"Authorization": f"Bearer {gw.issued.code}", "Content-Type": "application/json"}
    answer = httpx.post(gw.url + path, params={"uscc": USCC}, content=b"not json at all",
                        headers=headers, timeout=10)  # fmt: skip
    _refused(answer, 400, "bad_request")
    assert gw.upstream.requests() == []
    sent = httpx.post(gw.url + path, params={"uscc": USCC}, content=b'{"q": "x"}',
                      headers=headers, timeout=10)  # fmt: skip
    assert sent.status_code == 200, sent.text
    assert [r.method for r in gw.upstream.requests()] == ["POST"]
    assert [(r.status, r.outcome) for r in gw.usage()] == [(400, "refused"), (200, "ok")]


def test_a_body_that_is_not_utf8_is_the_callers_400_or_the_upstreams_502_never_a_500(
    gw: Served,
) -> None:
    gbk = '{"q": "中文"}'.encode("gbk")
    headers = {"Authorization": f"Bearer {gw.issued.code}", "Content-Type": "application/json"}
    posted = httpx.post(gw.url + f"/{RESOURCE}/search", params={"uscc": USCC}, content=gbk,
                        headers=headers, timeout=10)  # fmt: skip
    _refused(posted, 400, "bad_request")

    gw.upstream.set(body='{"data": {"uscc": "中文"}}'.encode("gbk"), times=1)
    _refused(gw.call(), 502, "upstream_bad_body")


def test_an_upstream_204_is_passed_on_as_204_with_no_body(gw: Served) -> None:
    gw.upstream.set(status=204, body=b"", times=1)
    answer = gw.call()
    assert answer.status_code == 204 and answer.content == b""
    assert "content-length" not in answer.headers and answer.headers["x-call-id"]
    assert answer.headers["x-ratelimit-limit"]
    assert [(r.status, r.outcome, r.bytes) for r in gw.usage()] == [(204, "ok", 0)]


def test_every_refusal_is_a_usage_row_and_an_audit_event(gw: Served) -> None:
    gw.call({"uscc": "bad"})
    gw.call(headers={})
    gw.call(path=f"/{OTHER}/{OP}")
    gw.call()
    rows = gw.usage()
    assert [(r.status, r.outcome) for r in rows] == [
        (400, "refused"), (401, "refused"), (403, "refused"), (200, "ok"),
    ]  # fmt: skip
    assert rows[0].code_id == gw.issued.code_id  # malformed, but the department's call
    assert rows[1].code_id is None
    assert [e.payload["call_id"] for e in gw.events()] == [r.call_id for r in rows]


def test_neither_the_credential_nor_the_code_is_in_an_answer_or_a_record(gw: Served) -> None:
    answers = [gw.call(), gw.call({"uscc": "bad"}), gw.call(code=gw.issued.code + "x")]
    gw.upstream.set(status=404, times=1)
    answers.append(gw.call())
    secrets_ = (gw.token, gw.issued.code)
    for a in answers:
        text = a.text + repr(dict(a.headers))
        assert not any(s in text for s in secrets_), text
    records = repr([vars(r) for r in gw.usage()]) + repr([e.payload for e in gw.events()])
    assert not any(s in records for s in secrets_)
    spool = b"".join(p.read_bytes() for p in (gw.ws.settings.home / "gateway").rglob("*.jsonl"))
    assert not any(s.encode() in spool for s in secrets_)


def test_the_health_path_needs_no_code_and_is_not_recorded(gw: Served) -> None:
    assert httpx.get(gw.url + "/-/health").json() == {"status": "ok"}
    assert gw.usage() == []


def test_mounted_under_a_prefix_it_opens_itself_from_the_environment_at_its_first_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As in the Airflow api-server, where the plugin mounts it under /gateway."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    token = "tif-" + secrets.token_hex(16)
    namespace = f"gwtest{secrets.token_hex(4)}"
    db_url = f"sqlite:///{tmp_path / 'exchange.db'}"
    with upstream_server(ROUTES, token=token) as up:
        catalog = write_catalog(tmp_path, up.url)
        with Workspace.open(catalog, Settings(home=tmp_path, db_url=db_url)) as ws:
            issued = subscribe(ws)
        for name, value in {
            TOKEN_ENV: token, "EXCHANGE_CATALOG": str(catalog), "EXCHANGE_HOME": str(tmp_path),
            "EXCHANGE_DB_URL": db_url, "EXCHANGE_REDIS_NAMESPACE": namespace,
        }.items():  # fmt: skip
            monkeypatch.setenv(name, value)
        host = FastAPI()
        gateway = create_app()
        host.mount("/gateway", gateway)
        try:
            with TestClient(host) as client:
                answer = client.get(
                    f"/gateway/{RESOURCE}/{OP}", params={"uscc": USCC},
                    headers={"Authorization": f"Bearer {issued.code}"},
                )  # fmt: skip
                assert answer.status_code == 200, answer.text
                assert set(answer.json()["data"]) == {"uscc", "name"}
                assert gateway.flush() == 1
                assert client.portal is not None
                client.portal.call(gateway.shutdown)  # a mounted app gets no lifespan
        finally:
            clear_redis(namespace)
