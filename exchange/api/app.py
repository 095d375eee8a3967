"""The exchange REST API: browse the catalog and take every workflow action, with a bearer
token per user (``Authorization: Bearer exg_…``). OpenAPI at ``/openapi.json``, Swagger UI at
``/docs`` and ReDoc at ``/redoc``, their assets served from the package (no CDN).

``create_app()`` builds its workspace from the environment (``EXCHANGE_CATALOG``,
``EXCHANGE_DB_URL``, ``EXCHANGE_HOME``) on first use, so the Airflow api-server can mount it
under ``/exchange``. Every call, refused and failed ones included, appends an ``api.call``
audit event (method, path, status, user) — never a token — in the same transaction as the
call's action (``exchange.api.calls``).
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoints' annotations, which
# name dependencies defined inside ``create_app``.
import datetime as dt
import enum
import logging
import os
import re
import threading
from typing import Annotated, Any, Literal

from fastapi import Body, Depends, FastAPI, Path, Query, Request, Response
from fastapi.dependencies.utils import get_flat_dependant
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi_offline import FastAPIOffline
from pydantic import AfterValidator, BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from exchange.api import calls, demand_routes, notice_routes
from exchange.api.accounts import account_routes
from exchange.api.schemas import (
    DEFAULT_LIMIT,
    EARLIEST_YEAR,
    LATEST_YEAR,
    MAX_ID,
    MAX_LIMIT,
    MAX_WORKING_DAYS,
    Approve,
    DeadlineOut,
    EffectivenessForm,
    ErrorOut,
    EvaluationForm,
    FieldOut,
    ForwardNote,
    Me,
    PageInfo,
    Proxied,
    Reason,
    Reject,
    ResourceOut,
    ResourcePage,
    StateName,
    SubscriptionPage,
    UpstreamApproved,
    UpstreamPage,
    UpstreamRejected,
    UpstreamStateName,
)
from exchange.catalog.model import Resource
from exchange.kernel.errors import (
    BadInput,
    ExchangeError,
    Forbidden,
    IllegalTransition,
    NotFound,
    Retriable,
    Unauthorized,
)
from exchange.kernel.workdays import default_calendar
from exchange.workflow import service as svc
from exchange.workflow import upstream as up
from exchange.workflow.application import Application
from exchange.workflow.upstream import UpstreamRequest, UpstreamView
from exchange.workflow.users import Principal
from exchange.workflow.views import SlaReport, SubscriptionView
from exchange.workspace import Workspace

log = logging.getLogger(__name__)

_bearer = HTTPBearer(auto_error=False, description="an API token from `exchange user token`")
_STATUS = [
    (NotFound, 404),
    (IllegalTransition, 409),
    (BadInput, 400),
    (Unauthorized, 401),
    (Forbidden, 403),
    (Retriable, 503),  # a node or the store is unreachable, another run holds the lock
    (ExchangeError, 500),
]
RETRY_AFTER_SECONDS = 30
UNAUDITED = ("/docs", "/openapi.json", "/redoc", "/docs/oauth2-redirect")
STATIC = "/static-offline-docs"

_WHY = {
    400: "bad input: a body that is not JSON, or a rule the schema cannot state (a field the "
    "resource lacks, a table another subscription holds)",
    401: "no token, or an unknown or revoked one",
    403: "the user's role or department may not do this",
    404: "no such subscription or resource (a not_shared resource is not found but by its "
    "provider and the platform)",
    409: "the subscription's state does not allow this action now",
    503: "the metadata store or a node is unreachable: retry after Retry-After seconds",
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}},
    503: {"Retry-After": {"schema": {"type": "string"}, "description": "seconds"}},
}


def refusals(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of the refusals an endpoint can answer (401 and 503 always)."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in sorted({401, 503, *codes}):
        out[code] = {"model": ErrorOut, "description": _WHY[code]}
        if code in _HEADERS:
            out[code]["headers"] = _HEADERS[code]
    return out


def _in_range(t: dt.datetime) -> dt.datetime:
    if not EARLIEST_YEAR <= t.year <= LATEST_YEAR:
        raise ValueError(f"start must be in the years {EARLIEST_YEAR}–{LATEST_YEAR}")
    return t


SubscriptionId = Annotated[int, Path(ge=1, le=MAX_ID, description="subscription id")]
Limit = Annotated[
    int, Query(ge=1, le=MAX_LIMIT, description=f"page size (default {DEFAULT_LIMIT})")
]
Offset = Annotated[int, Query(ge=0, le=MAX_ID, description="entries to skip")]
ResourceCode = Annotated[str, Path(min_length=1, max_length=64, description="resource code")]
Start = Annotated[
    dt.datetime,
    AfterValidator(_in_range),
    Query(
        description=f"naive: Asia/Shanghai; years {EARLIEST_YEAR}–{LATEST_YEAR}",
        # the year bound, in the spec as well as in the check above
        json_schema_extra={"pattern": "^20[0-9]{2}-"},
    ),
]
WorkingDays = Annotated[int, Query(ge=1, le=MAX_WORKING_DAYS)]
State = Annotated[StateName | None, Query(description="only subscriptions in this state")]


class _Workspaces:
    """The app's workspace: given, or opened from the environment at first use."""

    def __init__(self, ws: Workspace | None):
        self._ws = ws
        self._lock = threading.Lock()

    def get(self) -> Workspace:
        with self._lock:
            if self._ws is None:
                catalog = os.environ.get("EXCHANGE_CATALOG")
                if not catalog:
                    raise BadInput("EXCHANGE_CATALOG is not set: the API needs a catalog")
                self._ws = Workspace.open(catalog)
            return self._ws

    def opened(self) -> Workspace | None:
        return self._ws


def create_app(ws: Workspace | None = None) -> FastAPI:
    """The API over ``ws`` (default: a workspace from the environment)."""
    app = FastAPIOffline(
        title="city-exchange",
        summary="Subscriptions to government data resources: apply, review, deliver, evaluate.",
        version="1",
        static_url=STATIC,
        dependencies=[Depends(_known_query)],
    )
    workspaces = _Workspaces(ws)

    async def workspace() -> Workspace:
        # async: no thread hop on every call; the first one opens it in a worker thread
        ws = workspaces.opened()
        return ws if ws is not None else await run_in_threadpool(workspaces.get)

    WS = Annotated[Workspace, Depends(workspace)]

    async def bearer(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> str:
        # Only the token's presence here: it is looked up in the call's own transaction.
        if creds is None or creds.scheme.lower() != "bearer":
            raise Unauthorized("send Authorization: Bearer <token>")
        call = calls.current()
        if call is not None:
            call.token = creds.credentials
        return creds.credentials

    Token = Annotated[str, Depends(bearer)]

    @app.exception_handler(ExchangeError)
    async def _errors(request: Request, exc: Exception) -> JSONResponse:
        code = next(c for kind, c in _STATUS if isinstance(exc, kind))
        headers = {"WWW-Authenticate": "Bearer"} if code == 401 else None
        if code == 503:
            headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        detail = public_message(str(exc), workspaces.opened())
        return JSONResponse({"detail": detail}, status_code=code, headers=headers)

    @app.exception_handler(HTTPException)
    async def _http_errors(request: Request, exc: HTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # every method of the path, not only the first route's
            headers["Allow"] = ", ".join(_methods_at(app, request))
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)

    app.add_middleware(_AuditCalls, workspaces=workspaces)

    # -- catalog ------------------------------------------------------------------------------

    @app.get("/me", response_model=Me, tags=["users"], responses=refusals())
    def me(ws: WS, token: Token) -> Response:
        return _json(
            calls.in_transaction(
                ws, token, 200, lambda _, p: Me(name=p.name, role=p.role, department=p.department)
            )
        )

    @app.get("/catalog/resources", response_model=ResourcePage, tags=["catalog"],
             responses=refusals())  # fmt: skip
    def resources(
        ws: WS, token: Token, limit: Limit = DEFAULT_LIMIT, offset: Offset = 0
    ) -> Response:
        """The resources I may see, in code order: not_shared ones only to their provider and
        the platform (others cannot request them)."""

        def page(ws: Workspace, who: Principal) -> ResourcePage:
            visible = sorted(
                (r for r in ws.catalog.resources.values() if may_see(ws, who, r)),
                key=lambda r: r.code,
            )
            items = [_resource(ws, r) for r in visible[offset : offset + limit]]
            return ResourcePage(items=items, **PageInfo.of(len(visible), limit, offset))

        return _json(calls.in_transaction(ws, token, 200, page))

    @app.get("/catalog/resources/{code}", response_model=ResourceOut, tags=["catalog"],
             responses=refusals(404))  # fmt: skip
    def resource(code: ResourceCode, ws: WS, token: Token) -> Response:
        return _json(
            calls.in_transaction(
                ws, token, 200, lambda ws, who: _resource(ws, visible(ws, who, code))
            )
        )

    @app.get("/calendar/deadline", response_model=DeadlineOut, tags=["catalog"],
             responses=refusals())  # fmt: skip
    def deadline(start: Start, working_days: WorkingDays, ws: WS, token: Token) -> Response:
        """``working_days`` (1–365) after ``start`` on the statutory calendar."""
        at = _shanghai(start)

        def due(ws: Workspace, who: Principal) -> DeadlineOut:
            d = default_calendar().add_working_days(at, working_days)
            return DeadlineOut(
                start=at.isoformat(),
                working_days=working_days,
                due=d.isoformat(),
                provisional=d.provisional,
            )

        return _json(calls.in_transaction(ws, token, 200, due))

    # -- subscriptions ------------------------------------------------------------------------

    @app.post("/subscriptions", response_model=SubscriptionView, status_code=201,
              tags=["subscriptions"], responses=refusals(400, 403, 404))  # fmt: skip
    def apply(form: Application, ws: WS, token: Token) -> Response:
        """Apply for a resource (申请): the application form of 001 附件4."""

        def act(ws: Workspace, who: Principal) -> SubscriptionView:
            visible(ws, who, form.resource)  # a not_shared resource is not found, as unknown
            return svc.apply(ws, who, form)

        # a supervising department's user may name its unit (where the platform allows it)
        acting = calls.for_department(form.department_code, act, units_only=True)
        return _json(calls.in_transaction(ws, token, 201, acting), 201)

    @app.get("/subscriptions", response_model=SubscriptionPage, tags=["subscriptions"],
             responses=refusals())  # fmt: skip
    def mine(
        ws: WS, token: Token, state: State = None, limit: Limit = DEFAULT_LIMIT, offset: Offset = 0
    ) -> Response:
        """The subscriptions I may see, in id order, with their deadlines and SLA status."""

        def page(ws: Workspace, who: Principal) -> SubscriptionPage:
            total, items = svc.list_page(
                ws, who, state=state and state.value, limit=limit, offset=offset
            )
            return SubscriptionPage(items=items, **PageInfo.of(total, limit, offset))

        return _json(calls.in_transaction(ws, token, 200, page))

    @app.get("/subscriptions/{sid}", response_model=SubscriptionView, tags=["subscriptions"],
             responses=refusals(403, 404))  # fmt: skip
    def show(sid: SubscriptionId, ws: WS, token: Token) -> Response:
        return _json(calls.in_transaction(ws, token, 200, lambda ws, who: svc.show(ws, who, sid)))

    @app.post("/subscriptions/{sid}/withdraw", response_model=SubscriptionView,
              tags=["subscriptions"], responses=refusals(400, 403, 404, 409))  # fmt: skip
    def withdraw(sid: SubscriptionId, body: Reason, ws: WS, token: Token) -> Response:
        """Withdraw an application before implementation (撤销)."""
        return _json(
            calls.in_transaction(
                ws, token, 200, lambda ws, who: svc.withdraw(ws, who, sid, body.reason)
            )
        )

    @app.post("/subscriptions/{sid}/review", response_model=SubscriptionView,
              tags=["subscriptions"], responses=refusals(400, 403, 404, 409))  # fmt: skip
    def review(
        sid: SubscriptionId,
        body: Annotated[Approve | Reject, Body(discriminator="decision")],
        ws: WS,
        token: Token,
    ) -> Response:
        """The provider approves (possibly fewer fields) or rejects with a reason (审核)."""
        fields = body.fields if isinstance(body, Approve) else None
        return _json(calls.in_transaction(ws, token, 200, lambda ws, who: svc.review(
            ws, who, sid, approve=isinstance(body, Approve), fields=fields, reason=body.reason,
        )))  # fmt: skip

    @app.post("/subscriptions/{sid}/sign-off", response_model=SubscriptionView,
              tags=["subscriptions"], responses=refusals(403, 404, 409))  # fmt: skip
    def sign_off(sid: SubscriptionId, ws: WS, token: Token) -> Response:
        """Confirm receipt (签收)."""
        return _json(
            calls.in_transaction(ws, token, 200, lambda ws, who: svc.sign_off(ws, who, sid))
        )

    @app.post("/subscriptions/{sid}/evaluate", response_model=SubscriptionView,
              tags=["subscriptions"], responses=refusals(400, 403, 404, 409))  # fmt: skip
    def evaluate(sid: SubscriptionId, body: EvaluationForm, ws: WS, token: Token) -> Response:
        """Five 1–5 star dimensions and a comment (评价); closes the subscription."""
        stars = svc.Stars.model_validate(body.model_dump(exclude={"comment"}))
        return _json(
            calls.in_transaction(
                ws, token, 200, lambda ws, who: svc.evaluate(ws, who, sid, stars, body.comment)
            )
        )

    @app.post("/subscriptions/{sid}/effectiveness", response_model=SubscriptionView,
              tags=["subscriptions"], responses=refusals(400, 403, 404, 409))  # fmt: skip
    def effectiveness(
        sid: SubscriptionId, body: EffectivenessForm, ws: WS, token: Token
    ) -> Response:
        """The usage-effectiveness report (应用成效), due 90 days after closing."""
        return _json(
            calls.in_transaction(
                ws, token, 200, lambda ws, who: svc.report_effectiveness(ws, who, sid, body.summary)
            )
        )

    for action, path, doc in (
        ("suspend", "suspend", "Stop deliveries to a subscription (admin)."),
        ("resume", "resume", "Resume a suspended subscription (admin)."),
        ("deliver", "implemented", "Mark an implementation done by hand (admin)."),
    ):
        _admin_route(app, WS, Token, action, path, doc)
    _upstream_routes(app, WS, Token)
    account_routes(app, WS, Token, refusals, _json)
    parts = notice_routes.AppParts(_json, refusals, visible, may_see)
    notice_routes.add_routes(app, WS, Token, parts)  # resource notices, the calendar's years
    demand_routes.add_routes(app, WS, Token, _json, refusals)  # data demands

    @app.get("/sla", response_model=SlaReport, tags=["sla"], responses=refusals())
    def sla(ws: WS, token: Token) -> Response:
        """Open deadlines and breaches, per provider, platform and requester."""
        return _json(
            calls.in_transaction(ws, token, 200, lambda ws, who: svc.sla_overview(ws, who))
        )

    @app.get("/usage", response_model=UsageOut, tags=["gateway"], responses=refusals(400))
    def usage(
        ws: WS, token: Token, by: UsageBy = "resource", period: UsagePeriod = None,
        per: UsagePer = "day",
    ) -> Response:  # fmt: skip
        """Gateway calls per day (or hour) grouped by code, department, operation or resource:
        counts, refusals, 429s, errors, latency p50/p95/p99. The platform sees every call, a
        requester its department's, a provider its resources'. ``period``: Asia/Shanghai days
        FIRST..LAST or one day (default: the last 7); one that ends before it starts is 400."""
        from exchange.gateway.usage import usage_for

        return _json(calls.in_transaction(ws, token, 200, lambda ws, who: UsageOut.model_validate(
            usage_for(ws, who, by, period, per=per, where="period").as_dict()
        )))  # fmt: skip

    return app


# -- gateway usage (exchange.gateway.usage) ---------------------------------------------------

# A day of 2000-2099 that exists (29 February in leap years only): a period's days by the
# spec alone; one ending before it starts is a 400 (a rule the spec cannot state).
_DAY = (
    r"20[0-9]{2}-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)"
    r"|(?:0[13578]|1[02])-31)|20(?:0[48]|[2468][048]|[13579][26]|00)-02-29"
)
UsageBy = Annotated[
    Literal["code", "department", "operation", "resource"], Query(description="group by")
]
UsagePer = Annotated[Literal["day", "hour"], Query(description="a row per day or per hour")]
UsagePeriod = Annotated[
    str | None,
    Query(
        description="Asia/Shanghai days FIRST..LAST, or one day (default: the last 7 days)",
        pattern=f"^(?:{_DAY})(?:\\.\\.(?:{_DAY}))?$",
    ),
]


class UsageRowOut(BaseModel):
    """One group's calls in one day or hour (``day`` null: the whole period)."""

    key: str
    day: str | None
    hour: int | None
    calls: int
    ok: int
    refused: int
    quota: int
    errors: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


class UsagePeriodOut(BaseModel):
    start: str
    end: str


class UsageOut(BaseModel):
    """The usage report: rows per group and day (or hour), and each group's totals."""

    by: str
    per: str
    period: UsagePeriodOut
    rows: list[UsageRowOut]
    totals: list[UsageRowOut]


def _admin_route(app: FastAPI, WS: Any, Token: Any, action: str, path: str, doc: str) -> None:
    def step(sid: SubscriptionId, body: Reason, ws: WS, token: Token) -> Response:
        return _json(
            calls.in_transaction(
                ws, token, 200, lambda ws, who: svc.admin_step(ws, who, sid, action, body.reason)
            )
        )

    step.__doc__ = doc
    app.post(
        f"/subscriptions/{{sid}}/{path}",
        response_model=SubscriptionView,
        tags=["subscriptions"],
        name=action,
        responses=refusals(400, 403, 404, 409),
    )(step)


UpstreamId = Annotated[int, Path(ge=1, le=MAX_ID, description="upstream application id")]
UpstreamState = Annotated[
    UpstreamStateName | None, Query(description="only upstream applications in this state")
]


def _upstream_routes(app: FastAPI, WS: Any, Token: Any) -> None:
    """Upstream applications (exchange.workflow.upstream): a requester applies for a national
    or provincial resource, the platform forwards it, records the decision and the proxy."""
    tags: list[str | enum.Enum] = ["upstream"]

    @app.post("/upstream-applications", response_model=UpstreamView, status_code=201,
              tags=tags, responses=refusals(400, 403, 404))  # fmt: skip
    def upstream_apply(form: UpstreamRequest, ws: WS, token: Token) -> Response:
        """Apply for a national or provincial resource the city does not proxy yet (001 五):
        the platform forwards it within its working days."""
        return _json(
            calls.in_transaction(ws, token, 201, lambda ws, who: up.apply(ws, who, form)), 201
        )

    @app.get("/upstream-applications", response_model=UpstreamPage, tags=tags,
             responses=refusals())  # fmt: skip
    def upstream_list(
        ws: WS, token: Token, state: UpstreamState = None, limit: Limit = DEFAULT_LIMIT,
        offset: Offset = 0,
    ) -> Response:  # fmt: skip
        """The upstream applications I may see (the platform: all; a requester: its
        department's), in id order, with their forward deadlines."""

        def page(ws: Workspace, who: Principal) -> UpstreamPage:
            total, items = up.list_page(
                ws, who, state=state and state.value, limit=limit, offset=offset
            )
            return UpstreamPage(items=items, **PageInfo.of(total, limit, offset))

        return _json(calls.in_transaction(ws, token, 200, page))

    @app.get("/upstream-applications/{uid}", response_model=UpstreamView, tags=tags,
             responses=refusals(403, 404))  # fmt: skip
    def upstream_show(uid: UpstreamId, ws: WS, token: Token) -> Response:
        """One upstream application with its form and history."""
        return _json(calls.in_transaction(ws, token, 200, lambda ws, who: up.show(ws, who, uid)))

    @app.post("/upstream-applications/{uid}/forward", response_model=UpstreamView, tags=tags,
              responses=refusals(400, 403, 404, 409))  # fmt: skip
    def upstream_forward(uid: UpstreamId, body: ForwardNote, ws: WS, token: Token) -> Response:
        """The platform forwarded it upstream (转交; admin)."""
        return _json(calls.in_transaction(
            ws, token, 200, lambda ws, who: up.forward(ws, who, uid, body.note)))  # fmt: skip

    @app.post("/upstream-applications/{uid}/decide", response_model=UpstreamView, tags=tags,
              responses=refusals(400, 403, 404, 409))  # fmt: skip
    def upstream_decide(
        uid: UpstreamId,
        body: Annotated[UpstreamApproved | UpstreamRejected, Body(discriminator="decision")],
        ws: WS,
        token: Token,
    ) -> Response:
        """The upstream decision: approved with its reference (批复文号), or rejected with the
        reason (admin)."""
        ref = body.approval_ref if isinstance(body, UpstreamApproved) else None
        return _json(calls.in_transaction(ws, token, 200, lambda ws, who: up.decide(
            ws, who, uid, approved=isinstance(body, UpstreamApproved), approval_ref=ref,
            reason=body.reason,
        )))  # fmt: skip

    @app.post("/upstream-applications/{uid}/proxied", response_model=UpstreamView, tags=tags,
              responses=refusals(400, 403, 404, 409))  # fmt: skip
    def upstream_proxied(uid: UpstreamId, body: Proxied, ws: WS, token: Token) -> Response:
        """The city proxies the resource as ``resource`` (its origin names the upstream
        code): the department's form is filed as its subscription (admin)."""
        return _json(calls.in_transaction(ws, token, 200, lambda ws, who: up.proxied(
            ws, who, uid, body.resource, body.fields)))  # fmt: skip

    @app.post("/upstream-applications/{uid}/withdraw", response_model=UpstreamView, tags=tags,
              responses=refusals(400, 403, 404, 409))  # fmt: skip
    def upstream_withdraw(uid: UpstreamId, body: Reason, ws: WS, token: Token) -> Response:
        """Withdraw it before the upstream decision (撤销)."""
        return _json(calls.in_transaction(
            ws, token, 200, lambda ws, who: up.withdraw(ws, who, uid, body.reason)))  # fmt: skip


async def _known_query(request: Request) -> None:
    """Refuse a query parameter the endpoint does not declare (a misspelt ``limt`` would
    otherwise be ignored silently, and the spec allows none besides those it lists).

    async: FastAPI runs a plain ``def`` dependency in a worker thread, a hop that cost more
    than the check itself on every call."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    known = _query_names(route)
    unknown = [k for k in request.query_params if k not in known]
    if unknown:
        raise RequestValidationError(
            [
                {"type": "extra_forbidden", "loc": ("query", k), "msg": "unknown parameter",
                 "input": request.query_params[k]}
                for k in unknown
            ]
        )  # fmt: skip


_QUERY_NAMES: dict[int, tuple[APIRoute, frozenset[str]]] = {}  # by id: a route is unhashable


def _query_names(route: APIRoute) -> frozenset[str]:
    """The query parameters ``route`` declares (its dependencies' too), once per route."""
    known = _QUERY_NAMES.get(id(route))
    if known is None or known[0] is not route:
        names = frozenset(p.alias for p in get_flat_dependant(route.dependant).query_params)
        known = _QUERY_NAMES[id(route)] = (route, names)
    return known[1]


def _json(answer: BaseModel, status: int = 200) -> Response:
    """The answer serialised once: FastAPI would validate a returned model against the
    response model again (and in a worker thread of its own) before serialising it."""
    return Response(answer.model_dump_json(), status_code=status, media_type="application/json")


def _methods_at(app: FastAPI, request: Request) -> list[str]:
    methods: set[str] = set()
    for route in app.router.routes:
        if isinstance(route, APIRoute) and route.matches(request.scope)[0] != Match.NONE:
            methods |= route.methods
    return sorted(methods)


def may_see(ws: Workspace, who: Principal, r: Resource) -> bool:
    """A not_shared resource exists only for its provider's department and the platform."""
    if r.share != "not_shared" or who.role == "admin":
        return True
    return who.role == "provider" and svc.provider_department(ws, r) == who.department


def visible(ws: Workspace, who: Principal, code: str) -> Resource:
    """The resource ``code`` if ``who`` may see it; else not found, the same as an unknown
    code (the message names no other resource)."""
    r = ws.catalog.resources.get(code)
    if r is None or not may_see(ws, who, r):
        raise NotFound(f"no resource {code[:64]!r}")
    return r


def public_message(detail: str, ws: Workspace | None) -> str:
    """An error message fit for a client: no catalog path or home directory, no list of the
    catalog's codes (the catalog's own messages name them for an operator at a terminal)."""
    detail = re.sub(r" \(known: [^)]*\)", "", detail)
    detail = re.sub(r" in catalog \S+", "", detail)
    if ws is not None:
        places = [str(ws.settings.home)]
        if ws.catalog.path:
            places[:0] = [str(ws.catalog.path), os.path.dirname(str(ws.catalog.path))]
        for place in places:
            if len(place) > 1:
                detail = detail.replace(place, "…")
    return detail


def _resource(ws: Workspace, r: Resource) -> ResourceOut:
    return ResourceOut(
        code=r.code,
        name=r.name,
        kind=r.kind,
        share=r.share,
        provider=r.provider,
        provider_department=svc.provider_department(ws, r),
        update_cycle=r.update_cycle,
        fields=[FieldOut(name=f.name, type=f.type, title=f.title, nullable=f.nullable)
                for f in r.fields],
    )  # fmt: skip


def _shanghai(t: dt.datetime) -> dt.datetime:
    from exchange.kernel.clock import SHANGHAI

    return t.replace(tzinfo=SHANGHAI) if t.tzinfo is None else t.astimezone(SHANGHAI)


class _AuditCalls:
    """Audits every call its endpoint did not record (refused, invalid, failed: a 500 too),
    after the answer is known. Plain ASGI: no task and no stream per request."""

    def __init__(self, app: ASGIApp, workspaces: _Workspaces):
        self.app = app
        self.workspaces = workspaces

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = Request(scope).url.path
        if path.endswith(UNAUDITED) or STATIC + "/" in path:
            return await self.app(scope, receive, send)
        call, token = calls.begin(scope["method"], path)
        status = 500

        async def answer(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                started.append(True)
            await send(message)

        started: list[bool] = []
        try:
            try:
                await self.app(scope, receive, answer)
            except Exception:
                # A bug, not a refusal: its action rolled back; the call is still audited.
                log.exception("%s failed", call.subject)
                status = 500
                if not started:
                    await JSONResponse({"detail": "internal error"}, 500)(scope, receive, send)
            if not call.recorded:
                await run_in_threadpool(_audit_unrecorded, self.workspaces, call, status)
        finally:
            calls.end(token)


def _audit_unrecorded(workspaces: _Workspaces, call: calls.Call, status: int) -> None:
    try:
        ws = workspaces.get()
    except ExchangeError:
        return  # no store to write to; the call itself already failed with the reason
    try:
        calls.audit_unrecorded(ws, call, status)
    except Exception:
        # The call's own answer stands (it already failed or was refused); say so loudly.
        log.exception("could not audit %s (status %s)", call.subject, status)
