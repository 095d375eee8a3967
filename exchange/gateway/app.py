"""The gateway: a plain ASGI app that proxies ``GET|POST /{resource_code}/{operation}`` to the
upstream platform with the city's credential, for a department holding an authorization code.

One call, in order: the route (404 unknown resource or operation, 405 wrong method), the
code (``CodeCache``: 401; 410 a resource taken offline; 403 the subscription), the params
against the operation's declaration (400 naming them), the quota (``Quota.take``: 429 with
Retry-After; Redis down: 503, fail closed), an ``admitted`` spool line, the upstream call
(``UpstreamClient``: 504 timeout, 502 failure, 503 its throttling), the response filtered to
the granted fields (``FieldFilter``), a ``done`` spool line, the answer. Every answer is
JSON; refusals are ``{"error": reason, "message": ...}``. Every call, refused ones too, is one
spool line and so one usage row and one ``gateway.call`` event.

No framework on the path of a call: each microsecond of it is paid on every call (the
gateway adds at most 1 ms at p50 at 500 calls/s). Built once per process; the clients, the
Redis connection and the spool are opened at startup (the ASGI lifespan, or the first call
where the host sends no lifespan, as a mounted app in the Airflow api-server). Under
``exchange gateway`` a process only appends to its spool and the flusher process beside the
workers stores it; mounted elsewhere, a flusher thread of the process does
(``exchange.gateway.spool``).

Neither the upstream credential nor the caller's code is ever in an answer, a log line or a
spool line: codes are named by their prefix, calls by code and subscription ids.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import logging
import math
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import msgspec

from connectors.http.client import UpstreamClient, UpstreamError, build_path, path_value_problem
from connectors.http.registry import scheme
from connectors.resolve import resolve_secret
from exchange.catalog import Catalog, Resource
from exchange.catalog.model import ApiOperation, ApiParam
from exchange.gateway.codes import CODE_PREFIX, CodeCache, Grant, Refused
from exchange.gateway.filter import FieldFilter
from exchange.gateway.keys import gateway_key
from exchange.gateway.quota import Limits, Quota, QuotaUnavailable, counter_namespace
from exchange.gateway.settings import GatewaySettings
from exchange.gateway.spool import (
    ADMITTED,
    ASKED,
    DONE,
    Flusher,
    Line,
    Spool,
    SpoolBroken,
    adopt,
)
from exchange.kernel.errors import BadInput, ExchangeError
from exchange.workspace import Workspace

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

HEALTH = "/-/health"  # answered without a code, never recorded (load balancers, tests)
MAX_BODY = 1024 * 1024  # a POST's body, at most
MAX_PARAMS = 64
UNROUTED = "-"  # what a usage row names for a resource or operation no route has
NO_CONTENT = 204  # an upstream's answer with no body: passed on as it is
_JSON = (b"content-type", b"application/json")
_NO_STORE = (b"cache-control", b"no-store")
_encode = msgspec.json.Encoder().encode
_INTEGER = re.compile(r"^[+-]?[0-9]+$")
_BOOLEAN = frozenset({"true", "false"})

#: The outcome of each refusal status in the usage rows (``ApiCall.outcome``).
_OUTCOME = {429: "quota", 503: "unavailable", 502: "upstream", 504: "upstream"}


# -- what a call may send, decided once per process from the catalog --------------------------

Check = Callable[[str], str | None]  # a value -> what is wrong with it, or None


def _param_check(p: ApiParam) -> Check:
    """The checks of one declared param, composed once: type, pattern, max length."""
    pattern = re.compile(p.pattern) if p.pattern else None
    max_length = p.max_length

    def check(value: str) -> str | None:
        if max_length is not None and len(value) > max_length:
            return f"is longer than {max_length} characters"
        if p.type == "integer" and not _INTEGER.match(value):
            return "is not an integer"
        if p.type == "number":
            try:
                if not math.isfinite(float(value)):
                    return "is not a finite number"
            except ValueError:
                return "is not a number"
        if p.type == "boolean" and value not in _BOOLEAN:
            return "is not true or false"
        if pattern is not None and pattern.search(value) is None:
            return f"does not match {p.pattern}"
        if p.location == "path":
            return path_value_problem(value)
        return None

    return check


@dataclass(frozen=True)
class Route:
    """One operation of one api resource, as a call is checked against it."""

    resource: Resource
    operation: ApiOperation
    node: str  # the provider node: its UpstreamClient
    checks: Mapping[str, Check]
    location: Mapping[str, str]  # param name -> "path" | "query"
    required: tuple[str, ...]
    limits: Limits
    lowered: Limits  # the department has an open suspension
    field_paths: Mapping[str, str]  # field name -> its response path


def routes(catalog: Catalog) -> dict[str, dict[str, Route]]:
    """Resource code -> operation name -> Route, for every api resource of ``catalog``."""
    out: dict[str, dict[str, Route]] = {}
    for r in catalog.resources.values():
        if r.kind != "api":
            continue
        q = r.quota
        paths = {f.name: f.path or f.name for f in r.fields}
        out[r.code] = {
            op.name: Route(
                resource=r,
                operation=op,
                node=r.provider,
                checks={p.name: _param_check(p) for p in op.params},
                location={p.name: p.location for p in op.params},
                required=tuple(p.name for p in op.params if p.required or p.location == "path"),
                limits=Limits(daily=q.daily, per_second=q.per_second),
                lowered=Limits(daily=q.lowered_daily, per_second=q.per_second),
                field_paths=paths,
            )
            for op in r.operations
        }
    return out


class CallRefused(Exception):
    """Internal: answer ``status`` with ``{"error": reason, "message": message}``."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        headers: list[tuple[bytes, bytes]] | None = None,
    ):
        self.status, self.reason, self.message = status, reason, message
        self.headers = headers or []


def parse_params(route: Route, query_string: bytes) -> dict[str, str]:
    """The call's params, checked against the route's declaration: unknown, repeated,
    missing or invalid ones are a 400 naming each (never echoing a value)."""
    try:
        pairs = parse_qsl(
            query_string.decode("ascii"),
            keep_blank_values=True,
            strict_parsing=False,
            errors="strict",
            max_num_fields=MAX_PARAMS,
        )
    except (UnicodeError, ValueError):
        raise CallRefused(
            400, "bad_params", "the query string is not UTF-8 percent-encoded, or too long"
        ) from None
    values: dict[str, str] = {}
    problems: list[str] = []
    unknown = sorted({_shown_name(k) for k, _ in pairs if k not in route.checks})
    if unknown:
        known = ", ".join(route.checks) or "none"
        problems.append(f"unknown param {', '.join(map(repr, unknown))} (known: {known})")
    for k, v in pairs:
        if k in values and k in route.checks:  # an unknown name is reported above, masked
            problems.append(f"param {k!r} is given more than once")
        values[k] = v
    for name in route.required:
        if name not in values:
            problems.append(f"param {name!r} is required")
    for name, value in values.items():
        check = route.checks.get(name)
        wrong = check(value) if check is not None else None
        if wrong:
            problems.append(f"param {name!r} {wrong}")
    if problems:
        raise CallRefused(400, "bad_params", "; ".join(dict.fromkeys(problems)))
    return values


def _shown_name(name: str) -> str:
    """An unknown param's name as a message may echo it: short, and never what looks like an
    authorization code sent in the wrong place."""
    if CODE_PREFIX in name:
        return "<an authorization code: send it in a header>"
    return name if len(name) <= 32 else name[:31] + "…"


# -- the app ----------------------------------------------------------------------------------


class Gateway:
    """The ASGI app of one process (``create_app``)."""

    def __init__(
        self,
        ws: Workspace | None = None,
        settings: GatewaySettings | None = None,
        *,
        open_workspace: Callable[[], Workspace] | None = None,
    ):
        self._ws = ws
        self._open_workspace = open_workspace
        self._settings = settings
        self._started = False
        self._starting: asyncio.Lock | None = None
        self._routes: dict[str, dict[str, Route]] = {}
        self._clients: dict[str, UpstreamClient] = {}
        self._filters: dict[tuple[str, tuple[str, ...]], FieldFilter] = {}
        self._codes: CodeCache | None = None
        self._quota: Quota | None = None
        self._spool: Spool | None = None
        self._flusher: Flusher | None = None
        self._take_by_id = False
        self._id_prefix = os.urandom(6).hex()
        self._calls = 0

    # -- startup and shutdown ---------------------------------------------------------------

    @property
    def workspace(self) -> Workspace:
        if self._ws is None:
            if self._open_workspace is None:
                raise BadInput("the gateway has no workspace: give one or EXCHANGE_CATALOG")
            self._ws = self._open_workspace()
        return self._ws

    def _start(self) -> None:
        """Everything a call needs, once: routes, upstream clients (each node's secret
        resolved now: a missing one stops the process here, not at a call), codes, quota,
        spool; then (with no flusher process) the files of dead processes are adopted and
        this process's flusher thread starts."""
        ws = self.workspace
        settings = self._settings or GatewaySettings.from_env(ws.settings)
        self._settings = settings
        self._routes = routes(ws.catalog)
        for node_name in sorted({r.node for ops in self._routes.values() for r in ops.values()}):
            self._clients[node_name] = client_of(ws.catalog, node_name)
        self._codes = CodeCache(ws.store, gateway_key(ws.settings, ws.store), settings.cache_s)
        self._quota = Quota(
            settings.redis_url, counter_namespace(settings.namespace, ws.installation_id)
        )
        # The quota counts calls by id: it tells which calls a dead process had counted
        # before it could write their admitted line (see exchange.gateway.spool).
        resolve = self._quota.admitted
        if settings.flusher == "process":
            # ``exchange gateway``'s flusher process tails this file and is the only writer
            # of usage rows and events: this process only appends (nothing of a store
            # transaction on the serving path), and adopts nothing either.
            self._spool = Spool(
                settings.spool_dir, tailed=True, roll_bytes=settings.spool_bytes,
                roll_s=settings.spool_s,
            )  # fmt: skip
            # Everything built so far lives as long as the process: out of the collector's
            # sight, a full collection no longer walks it while calls wait.
            gc.freeze()
            self._started = True
            return
        self._spool = Spool(
            settings.spool_dir, flush_lines=settings.flush_lines,
            roll_bytes=settings.spool_bytes, roll_s=settings.spool_s,
        )  # fmt: skip
        try:
            adopted = adopt(ws.store, settings.spool_dir, self._spool.name, resolve)
        except Exception as exc:  # the store or Redis down: the flusher adopts them later
            log.warning("the spools of dead gateway processes are left for later: %s", exc)
        else:
            if adopted:
                log.info("stored %d calls from the spools of dead gateway processes", adopted)
        self._flusher = Flusher(ws.store, self._spool, interval_s=settings.flush_s, resolve=resolve)
        self._flusher.start()
        self._started = True

    async def startup(self) -> None:
        if self._started:
            return
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if not self._started:
                self._start()

    async def shutdown(self) -> None:
        """Close the clients, store the rest of the spool and delete it."""
        if not self._started:
            return
        self._started = False
        for client in self._clients.values():
            await client.close()
        if self._quota is not None:
            await self._quota.close()
        if self._flusher is not None:
            await asyncio.to_thread(self._flusher.stop)
        elif self._spool is not None:
            self._spool.close(remove=False)  # its lock released: the flusher process adopts it
        if self._ws is not None and self._open_workspace is not None:
            self._ws.close()  # opened here: closed here

    def flush(self) -> int:
        """Store the spool now (tests; the flusher does it on its own every ``flush_s``)."""
        if self._flusher is None:
            raise BadInput("this gateway process's spool is stored by the flusher process")
        return self._flusher.flush_now()

    # -- ASGI -------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            if not self._started:
                await self.startup()
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.error("the gateway cannot start: %s", exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _next_id(self) -> str:
        self._calls += 1
        return f"{self._id_prefix}{self._calls:x}"

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        arrived = time.time()
        path: str = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):  # mounted under a prefix (the Airflow plugin)
            path = path[len(root) :]
        if path == HEALTH:
            await _send(send, 200, b'{"status":"ok"}', [])
            return
        parts = path.split("/")
        res, op = self._recorded(parts)
        line = Line(DONE, self._next_id(), arrived, res, op)
        headers: list[tuple[bytes, bytes]] = []
        try:
            status, body, headers = await self._serve(scope, receive, parts, line)
        except CallRefused as exc:
            status, headers = exc.status, exc.headers
            body = _encode({"error": exc.reason, "message": exc.message})
            line.out = _OUTCOME.get(status, "refused") if line.out == "" else line.out
        except Exception:
            log.exception("gateway call %s failed", line.id)
            status, body = 500, b'{"error":"internal","message":"internal error"}'
            line.out = "upstream" if line.k == ADMITTED else "refused"  # a bug: logged above
        line.k, line.st, line.b = DONE, status, len(body)
        line.ms = (time.perf_counter() - started) * 1000
        assert self._spool is not None
        try:
            self._spool.write(line)
        except SpoolBroken as exc:
            log.error("%s: call %s is not answered", exc, line.id)
            status, headers = 503, []
            body = b'{"error":"unavailable","message":"the gateway cannot record calls now"}'
        headers.append((b"x-call-id", line.id.encode()))
        await _send(send, status, body, headers)

    def _recorded(self, parts: list[str]) -> tuple[str, str]:
        """The resource and operation a call's usage row and audit event name: a route's own
        names, or ``-`` for a name no route has. A name from the URL is anybody's text: a NUL,
        which PostgreSQL cannot store, once stopped a flusher for good."""
        ops = self._routes.get(parts[1]) if len(parts) > 1 else None
        if ops is None:
            return UNROUTED, UNROUTED
        return parts[1], parts[2] if len(parts) > 2 and parts[2] in ops else UNROUTED

    async def _serve(
        self, scope: Scope, receive: Receive, parts: list[str], line: Line
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        """Check and proxy one call; ``line`` gathers what its spool lines say."""
        route = self._route(parts, scope["method"])
        # The code before the params: a department's malformed call is its own (its usage row
        # names its subscription), not an anonymous one.
        grant = self._grant(scope, route, line)
        params = parse_params(route, scope["query_string"])
        body = _json_body(await _body(receive)) if route.operation.method == "POST" else None
        limits = route.lowered if grant.lowered else route.limits
        assert self._quota is not None and self._spool is not None
        line.k = ASKED
        try:
            self._spool.write(line)
        except SpoolBroken as exc:
            log.error("%s: call %s is not made", exc, line.id)
            line.k, line.out = DONE, "unavailable"
            raise CallRefused(503, "unavailable", "the gateway cannot record calls now") from None
        now = dt.datetime.now(dt.UTC)
        try:
            # the subscription's count: a rotated or re-issued code continues it
            decision = await self._quota.take(grant.subscription_id, limits, now, call_id=line.id)
        except QuotaUnavailable:
            raise CallRefused(
                503, "unavailable", "the quota service is unavailable: retry later",
                [(b"retry-after", b"5")],
            ) from None  # fmt: skip
        rate = [
            (b"x-ratelimit-limit", str(decision.limit).encode()),
            (b"x-ratelimit-remaining", str(decision.remaining).encode()),
            (b"x-ratelimit-reset", str(decision.reset_s).encode()),
        ]
        if not decision.allowed:
            what = "per-second rate" if decision.which == "rate" else "daily quota"
            raise CallRefused(
                429, "quota", f"the {what} of this subscription (all its codes) is used up",
                [(b"retry-after", str(decision.retry_after_s).encode()), *rate],
            )  # fmt: skip
        try:
            status, answer = await self._admitted(route, grant, params, body, line)
        except CallRefused as exc:
            exc.headers.extend(rate)  # counted: every answer from the quota step on says so
            raise
        return status, answer, rate

    async def _admitted(
        self, route: Route, grant: Grant, params: dict[str, str], body: bytes | None, line: Line
    ) -> tuple[int, bytes]:
        """A call the quota admitted: its admitted line, the upstream's answer, filtered."""
        assert self._spool is not None
        line.k = ADMITTED
        try:
            self._spool.write(line)
        except SpoolBroken as exc:
            # Counted by the quota but never called: recorded (if the disk lets us) as an
            # admitted call the gateway failed to answer, as the quota counted it.
            log.error("%s: call %s is not made", exc, line.id)
            line.k, line.out = DONE, "interrupted"
            raise CallRefused(503, "unavailable", "the gateway cannot record calls now") from None
        status, answer = await self._upstream(route, params, body, line)
        if status == NO_CONTENT:  # nothing to filter: passed on as it came
            line.out = "ok"
            return status, b""
        try:
            answer = self._filter(route, grant).apply(answer)
        except ExchangeError:  # BadUpstreamBody: not JSON, so nothing can be filtered
            line.out = "upstream"
            raise CallRefused(
                502, "upstream_bad_body", "the upstream's answer is not JSON"
            ) from None
        line.out = "ok"
        return status, answer

    def _route(self, parts: list[str], method: str) -> Route:
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise CallRefused(404, "not_found", "call /{resource_code}/{operation}")
        ops = self._routes.get(parts[1])
        if ops is None:
            raise CallRefused(404, "not_found", "no such api resource")
        route = ops.get(parts[2])
        if route is None:
            known = ", ".join(ops)
            raise CallRefused(404, "not_found", f"no such operation (known: {known})")
        if method != route.operation.method:
            raise CallRefused(
                405, "method_not_allowed", f"call this operation with {route.operation.method}",
                [(b"allow", route.operation.method.encode())],
            )  # fmt: skip
        return route

    def _grant(self, scope: Scope, route: Route, line: Line) -> Grant:
        code = _code_of(scope)
        if code is None:
            raise CallRefused(
                401, "missing",
                "send the authorization code: Authorization: Bearer <code> or X-Auth-Code",
                [(b"www-authenticate", b"Bearer")],
            )  # fmt: skip
        assert self._codes is not None
        try:
            grant = self._codes.check(code, route.resource.code, dt.datetime.now(dt.UTC))
        except Refused as exc:
            # Who it was, when the code was known (its row), never the code itself.
            line.code = getattr(exc, "code_id", None)
            line.sub = getattr(exc, "subscription_id", None)
            line.dept = getattr(exc, "department_code", None)
            extra = [(b"www-authenticate", b"Bearer")] if exc.status == 401 else []
            raise CallRefused(exc.status, exc.reason, str(exc), extra) from None
        line.code, line.sub, line.dept = grant.code_id, grant.subscription_id, grant.department_code
        return grant

    async def _upstream(
        self, route: Route, params: dict[str, str], body: bytes | None, line: Line
    ) -> tuple[int, bytes]:
        op = route.operation
        loc = route.location
        path_values = {k: v for k, v in params.items() if loc[k] == "path"}
        query = {k: v for k, v in params.items() if loc[k] == "query"}
        try:
            path = build_path(op.path, path_values)
        except BadInput as exc:
            line.out = "refused"
            raise CallRefused(400, "bad_params", str(exc)) from None
        try:
            resp = await self._clients[route.node].request(op.method, path, query or None, body)
        except UpstreamError as exc:
            line.out = "upstream"
            log.warning("call %s: %s", line.id, exc.message)
            if exc.status == 504:
                raise CallRefused(
                    504, "upstream_timeout", "the upstream did not answer in time"
                ) from None
            raise CallRefused(502, "upstream_failed", "the upstream failed to answer") from None
        if resp.status >= 400:
            line.out = "upstream"
            if resp.status == 429:
                # The upstream throttles the city: not the department's quota (that is our
                # 429), but it can wait, for as long as the upstream says when it says so.
                wait = resp.retry_after_s if resp.retry_after_s is not None else 60
                raise CallRefused(
                    503,
                    "upstream_busy",
                    "the upstream is throttling the platform; try again later",
                    [(b"retry-after", str(wait).encode())],
                )
            if resp.status in (401, 403, 407):
                # The city's credential at the upstream: not the caller's doing.
                raise CallRefused(
                    502, "upstream_refused", f"the upstream refused the platform ({resp.status})"
                )
            # The caller's request (a record that does not exist, say): its status, not the
            # body (it is not filtered to the granted fields).
            raise CallRefused(
                resp.status, "upstream_status", f"the upstream answered {resp.status}"
            )
        return (NO_CONTENT if resp.status == NO_CONTENT else 200), resp.body

    def _filter(self, route: Route, grant: Grant) -> FieldFilter:
        key = (route.resource.code, grant.fields)
        found = self._filters.get(key)
        if found is None:
            paths = [route.field_paths[f] for f in grant.fields if f in route.field_paths]
            found = self._filters[key] = FieldFilter(paths)
        return found


def client_of(catalog: Catalog, node_name: str) -> UpstreamClient:
    """The upstream client of an http node, its credential resolved from its reference."""
    node = catalog.node(node_name)
    if node.auth is None:
        raise BadInput(f"node {node_name!r} is not an http node with auth: it cannot serve an api")
    what = f"node {node_name!r}"
    secret = resolve_secret(node.auth.credential, what) if node.auth.credential else None
    auth = scheme(node.auth.scheme, node.auth.options, secret)
    return UpstreamClient(node.name, node.base_url, auth, timeout_s=node.timeout_s)


def _code_of(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            kind, _, token = value.decode("latin-1").partition(" ")
            if kind.lower() == "bearer" and token.strip():
                return token.strip()
        elif name == b"x-auth-code" and value.strip():
            return value.decode("latin-1").strip()
    return None


async def _body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise CallRefused(400, "bad_request", "the client went away")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise CallRefused(413, "too_large", f"the body is longer than {MAX_BODY} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _json_body(body: bytes) -> bytes:
    """A POST's body as it is passed on: JSON (or empty), else a 400 (never forwarded)."""
    if body:
        try:
            msgspec.json.decode(body)
        except (msgspec.DecodeError, UnicodeDecodeError):
            raise CallRefused(400, "bad_request", "the body is not JSON in UTF-8") from None
    return body


async def _send(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    # A 204 has no body, so neither a content type nor a length (RFC 9110 15.3.5).
    framing = [_NO_STORE] if status == NO_CONTENT else [
        _JSON, _NO_STORE, (b"content-length", str(len(body)).encode())
    ]  # fmt: skip
    await send({"type": "http.response.start", "status": status, "headers": [*framing, *headers]})
    await send({"type": "http.response.body", "body": body})


def create_app(ws: Workspace | None = None, settings: GatewaySettings | None = None) -> Gateway:
    """The gateway over ``ws``, or over a workspace opened from the environment
    (``EXCHANGE_CATALOG``, ``EXCHANGE_HOME``, ``EXCHANGE_DB_URL``) at startup: what
    ``exchange gateway --workers N`` has each worker process build (``factory=True``)."""
    if ws is not None:
        return Gateway(ws, settings)
    return Gateway(settings=settings, open_workspace=_workspace_from_env)


def _workspace_from_env() -> Workspace:
    catalog = os.environ.get("EXCHANGE_CATALOG")
    if not catalog:
        raise BadInput("EXCHANGE_CATALOG is not set: the gateway needs a catalog")
    return Workspace.open(catalog)
