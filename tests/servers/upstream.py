"""A real upstream HTTP API on loopback (aiohttp.web in a thread with its own event loop).

    with upstream_server(token="t0ken") as up:
        up.url                              # http://127.0.0.1:PORT
        GET {up.url}/ent/91410100MA4F000001  -> {"code": 0, "data": {...}}  (~1.6 KB)
        up.requests()                       # [RecordedRequest(method, path, query, headers, ...)]
        up.set(delay_s=2)                   # every answer waits 2 s (timeouts)
        up.set(status=500)                  # 500 {"code": 500, "message": "internal error"}
        up.set(status=404)                  # 404 whose body echoes the request's headers
        up.set(body=b"<html>", content_type="text/html")   # a 200 that is not JSON
        up.set(drop=True)                   # the connection is closed without an answer
        up.set(status=500, times=1)         # a mode for the next request only
        up.set(status=429, headers={"Retry-After": "30"})  # extra headers on the answer
        up.reset()                          # back to normal answers

With ``token`` the server stands for a platform that checks its caller: a request passes
when it carries a valid tif signature (x-tif-timestamp within 5 minutes, a nonce never seen
before, x-tif-signature = SHA-256 upper-case hex of timestamp + token + nonce + timestamp)
or a header whose value is the token, bare or after a prefix ("Bearer t0ken"); any other
request gets 401. Every request is recorded before the check, so a test sees what was sent.

``routes`` add to (or replace) the default one: keys are ``"/path/{param}"`` (GET and POST)
or ``"POST /path"``; values are a JSON document (any msgspec-encodable value), raw ``bytes``
served as application/json, or a function of the request (``RecordedRequest``) returning one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import msgspec
from aiohttp import web

TIF_SKEW_S = 300


@dataclasses.dataclass(frozen=True)
class RecordedRequest:
    """One request as the upstream received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    match: dict[str, str]  # the route's path parameters
    authorized: bool


@dataclasses.dataclass
class _Mode:
    delay_s: float = 0.0
    status: int | None = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    body: bytes | None = None
    content_type: str = "application/json"
    drop: bool = False
    times: int | None = None  # None: until reset


def enterprise(uscc: str) -> dict[str, Any]:
    """The enterprise record of ``uscc`` (deterministic; ~1.6 KB as UTF-8 JSON)."""
    seed = int(hashlib.sha256(uscc.encode()).hexdigest()[:8], 16)
    surnames = "王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗"
    given = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚"
    shareholders = [
        {
            "name": surnames[(seed + i) % 20] + given[(seed // 7 + i * 3) % 20] + given[i % 20],
            "id_no": f"4101{(seed + i * 7919) % 10**14:014d}",
            "share": round(100 / 6, 2),
            "contribution": f"{(seed % 90 + 10) * (i + 1)}万元人民币",
            "paid_at": f"20{10 + i}-0{1 + i % 9}-1{i % 10}",
        }
        for i in range(6)
    ]
    return {
        "uscc": uscc,
        "name": f"郑州市{surnames[seed % 20]}氏{given[seed % 20]}达商贸有限公司",
        "legal_person": surnames[seed % 20] + given[(seed // 3) % 20] + given[(seed // 5) % 20],
        "reg_capital": f"{seed % 9000 + 1000}万元人民币",
        "ent_type": "有限责任公司(自然人投资或控股)",
        "status": "存续(在营、开业、在册)",
        "established": "2016-03-18",
        "business_term": "2016-03-18至长期",
        "phone": f"0371-{seed % 9000 + 1000}{seed % 8000 + 1000}",
        "annual_report": {"year": 2025, "employees": seed % 200 + 5, "submitted": "2026-04-20"},
        "reg_authority": "郑州市市场监督管理局",
        "scope": "日用百货、服装鞋帽、五金交电、建筑材料、电子产品的销售;"
        "企业管理咨询;会议及展览服务。(依法须经批准的项目,经相关部门批准后方可开展经营活动)",
        "address": {
            "province": "河南省",
            "city": "郑州市",
            "district": "金水区",
            "street": f"花园路{seed % 300 + 1}号{seed % 30 + 1}层",
        },
        "shareholders": shareholders,
    }


def _default_document(request: RecordedRequest) -> dict[str, Any]:
    return {"code": 0, "message": "ok", "data": enterprise(request.match.get("uscc", ""))}


DEFAULT_ROUTES: dict[str, Any] = {"/ent/{uscc}": _default_document}


def tif_signature(timestamp: str, token: str, nonce: str) -> str:
    """The tif scheme's signature (what a correct client sends as x-tif-signature)."""
    return hashlib.sha256(f"{timestamp}{token}{nonce}{timestamp}".encode()).hexdigest().upper()


class UpstreamServer:
    """The running server: its URL, its request log, its modes."""

    def __init__(self, routes: Mapping[str, Any], token: str | None, delay_s: float):
        self.routes = dict(routes)
        self.token = token
        self._lock = threading.Lock()
        self._log: list[RecordedRequest] = []
        self._nonces: set[str] = set()
        self._mode = _Mode(delay_s=delay_s)
        self._base_delay = delay_s
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._started = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="upstream-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, oldest first."""
        with self._lock:
            return list(self._log)

    def clear(self) -> None:
        with self._lock:
            self._log.clear()

    def set(
        self,
        *,
        delay_s: float | None = None,
        status: int | None = None,
        body: bytes | None = None,
        content_type: str = "application/json",
        drop: bool = False,
        times: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Change how the next answers are made (see the module docstring)."""
        with self._lock:
            self._mode = _Mode(
                delay_s=self._base_delay if delay_s is None else delay_s,
                status=status,
                body=body,
                content_type=content_type,
                drop=drop,
                times=times,
                headers=dict(headers or {}),
            )

    def reset(self) -> None:
        """Normal answers again, with the delay the server was started with."""
        with self._lock:
            self._mode = _Mode(delay_s=self._base_delay)

    # -- server side -------------------------------------------------------------------

    def _take_mode(self) -> _Mode:
        with self._lock:
            mode = self._mode
            if mode.times is not None:
                mode.times -= 1
                if mode.times <= 0:
                    self._mode = _Mode(delay_s=self._base_delay)
            return dataclasses.replace(mode)

    def _authorized(self, headers: Mapping[str, str]) -> bool:
        token = self.token
        if token is None:
            return True
        ts, nonce, sig = (
            headers.get(f"x-tif-{k}", "") for k in ("timestamp", "nonce", "signature")
        )
        if ts and nonce and sig:
            fresh = ts.isdigit() and abs(time.time() - int(ts)) <= TIF_SKEW_S
            good = hmac.compare_digest(sig.encode(), tif_signature(ts, token, nonce).encode())
            with self._lock:
                replay = nonce in self._nonces
                self._nonces.add(nonce)
            return fresh and good and not replay
        # bare or after a prefix ("Bearer "): compared on the value's tail, in constant time
        return any(
            hmac.compare_digest(value[-len(token) :].encode(), token.encode())
            for value in headers.values()
            if len(value) >= len(token)
        )

    async def _handle(self, request: web.Request, document: Any) -> web.StreamResponse:
        headers = {k.lower(): v for k, v in request.headers.items()}
        recorded = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=headers,
            body=await request.read(),
            match=dict(request.match_info),
            authorized=self._authorized(headers),
        )
        with self._lock:
            self._log.append(recorded)
        mode = self._take_mode()
        if mode.delay_s:
            await asyncio.sleep(mode.delay_s)
        if mode.drop:
            if request.transport is not None:
                request.transport.abort()
            return web.Response()  # written to a closed transport: nothing is sent
        if not recorded.authorized:
            return _json(401, {"code": 401, "message": "invalid credential"})
        if mode.status == 404:
            return _json(404, {"code": 404, "message": "not found", "request_headers": headers})
        if mode.status is not None and mode.status >= 400:
            message = "internal error" if mode.status >= 500 else "refused"
            answer = _json(mode.status, {"code": mode.status, "message": message})
            answer.headers.update(mode.headers)
            return answer
        if mode.body is not None:
            return web.Response(
                status=mode.status or 200, body=mode.body, content_type=mode.content_type
            )
        if callable(document):
            document = document(recorded)
        if isinstance(document, bytes):
            return web.Response(body=document, content_type="application/json")
        return _json(200, document)

    def _app(self) -> web.Application:
        app = web.Application()
        for key, document in self.routes.items():
            method, _, path = key.rpartition(" ")
            methods = [method.upper()] if method else ["GET", "POST"]

            async def handler(request: web.Request, _doc: Any = document) -> web.StreamResponse:
                return await self._handle(request, _doc)

            for m in methods:
                app.router.add_route(m, path, handler)
        return app

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._runner = web.AppRunner(
                self._app(), access_log=None, handle_signals=False, shutdown_timeout=0.2
            )
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            self._loop.run_until_complete(site.start())
            self.port = int(self._runner.addresses[0][1])
        except BaseException as exc:  # reported to the starting thread
            self._failure = exc
            self._started.set()
            return
        self._started.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        # handlers still sleeping in a slow mode: cancelled, so that the loop closes quietly
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.close()

    def start(self) -> None:
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("upstream test server did not start within 10 s")
        if self._failure is not None:
            raise RuntimeError(f"upstream test server failed to start: {self._failure}")

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


def _json(status: int, document: Any) -> web.Response:
    return web.Response(
        status=status, body=msgspec.json.encode(document), content_type="application/json"
    )


@contextmanager
def upstream_server(
    routes: Mapping[str, Any] | None = None,
    *,
    token: str | None = None,
    delay_s: float = 0,
) -> Iterator[UpstreamServer]:
    """A started upstream server; stopped when the block ends."""
    merged: dict[str, Any] = dict(DEFAULT_ROUTES)
    merged.update(routes or {})
    server = UpstreamServer(merged, token, delay_s)
    server.start()
    try:
        yield server
    finally:
        server.stop()
