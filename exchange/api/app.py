"""The exchange REST API: browse the catalog and take every workflow action, with a bearer
token per user (``Authorization: Bearer exg_…``). OpenAPI at ``/docs``.

``create_app()`` builds its workspace from the environment (``EXCHANGE_CATALOG``,
``EXCHANGE_DB_URL``, ``EXCHANGE_HOME``) on first use, so the Airflow api-server can mount it
under ``/exchange``. Every call, refused ones included, appends an ``api.call`` audit event
(method, path, status, user) — never a token.
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoints' annotations, which
# name dependencies defined inside ``create_app``.
import datetime as dt
import os
import threading
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from exchange import audit
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
from exchange.workflow.application import Application
from exchange.workflow.users import Principal, authenticate
from exchange.workflow.views import SlaReport, SubscriptionView
from exchange.workspace import Workspace

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


class Reason(BaseModel):
    reason: str = Field(min_length=1, max_length=2000)


class Decision(BaseModel):
    decision: Literal["approve", "reject"]
    fields: list[str] | None = Field(None, description="approve: fewer fields than requested")
    reason: str | None = Field(None, max_length=2000, description="required to reject")


class EvaluationForm(svc.Stars):
    comment: str | None = Field(None, max_length=2000)


class EffectivenessForm(BaseModel):
    summary: str = Field(min_length=1, max_length=10000, description="应用成效")


class FieldOut(BaseModel):
    name: str
    type: str
    title: str
    nullable: bool


class ResourceOut(BaseModel):
    code: str
    name: str
    kind: str
    share: str
    provider: str
    provider_department: str
    update_cycle: str
    fields: list[FieldOut]


class Me(BaseModel):
    name: str
    role: str
    department: str | None


class DeadlineOut(BaseModel):
    start: str
    working_days: int
    due: str
    provisional: bool


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


def create_app(ws: Workspace | None = None) -> FastAPI:
    """The API over ``ws`` (default: a workspace from the environment)."""
    app = FastAPI(
        title="city-exchange",
        summary="Subscriptions to government data resources: apply, review, deliver, evaluate.",
        version="1",
    )
    workspaces = _Workspaces(ws)

    def workspace() -> Workspace:
        return workspaces.get()

    WS = Annotated[Workspace, Depends(workspace)]

    def principal(
        request: Request,
        ws: WS,
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        if creds is None or creds.scheme.lower() != "bearer":
            raise Unauthorized("send Authorization: Bearer <token>")
        with ws.store.session() as s:
            who = authenticate(s, creds.credentials)
        request.state.principal = who
        return who

    Who = Annotated[Principal, Depends(principal)]

    @app.exception_handler(ExchangeError)
    async def _errors(request: Request, exc: Exception) -> JSONResponse:
        code = next(c for kind, c in _STATUS if isinstance(exc, kind))
        headers = {"WWW-Authenticate": "Bearer"} if code == 401 else None
        if code == 503:
            headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        return JSONResponse({"detail": str(exc)}, status_code=code, headers=headers)

    @app.middleware("http")
    async def _audit_calls(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        path = request.url.path
        if not path.endswith(UNAUDITED):
            who: Principal | None = getattr(request.state, "principal", None)
            await run_in_threadpool(
                _audit_call, workspaces, request.method, path, response.status_code, who
            )
        return response

    # -- catalog ------------------------------------------------------------------------------

    @app.get("/me", response_model=Me, tags=["users"])
    def me(who: Who) -> Me:
        return Me(name=who.name, role=who.role, department=who.department)

    @app.get("/catalog/resources", response_model=list[ResourceOut], tags=["catalog"])
    def resources(ws: WS, who: Who) -> list[ResourceOut]:
        """Every shared resource (not_shared ones cannot be requested and are not listed)."""
        return [
            _resource(ws, r.code) for r in ws.catalog.resources.values() if r.share != "not_shared"
        ]

    @app.get("/catalog/resources/{code}", response_model=ResourceOut, tags=["catalog"])
    def resource(code: str, ws: WS, who: Who) -> ResourceOut:
        return _resource(ws, code)

    @app.get("/calendar/deadline", response_model=DeadlineOut, tags=["catalog"])
    def deadline(start: dt.datetime, working_days: int, who: Who) -> DeadlineOut:
        """``working_days`` after ``start`` (naive: Asia/Shanghai) on the statutory calendar."""
        at = _shanghai(start)
        d = default_calendar().add_working_days(at, working_days)
        return DeadlineOut(
            start=at.isoformat(),
            working_days=working_days,
            due=d.isoformat(),
            provisional=d.provisional,
        )

    # -- subscriptions ------------------------------------------------------------------------

    @app.post(
        "/subscriptions", response_model=SubscriptionView, status_code=201, tags=["subscriptions"]
    )
    def apply(form: Application, ws: WS, who: Who) -> SubscriptionView:
        """Apply for a resource (申请): the application form of 001 附件4."""
        return svc.apply(ws, who, form)

    @app.get("/subscriptions", response_model=list[SubscriptionView], tags=["subscriptions"])
    def mine(ws: WS, who: Who, state: str | None = None) -> list[SubscriptionView]:
        """The subscriptions I may see, with their deadlines and SLA status."""
        return svc.list_for(ws, who, state=state)

    @app.get("/subscriptions/{sid}", response_model=SubscriptionView, tags=["subscriptions"])
    def show(sid: int, ws: WS, who: Who) -> SubscriptionView:
        return svc.show(ws, who, sid)

    @app.post("/subscriptions/{sid}/withdraw", response_model=SubscriptionView,
              tags=["subscriptions"])  # fmt: skip
    def withdraw(sid: int, body: Reason, ws: WS, who: Who) -> SubscriptionView:
        """Withdraw an application before implementation (撤销)."""
        return svc.withdraw(ws, who, sid, body.reason)

    @app.post("/subscriptions/{sid}/review", response_model=SubscriptionView,
              tags=["subscriptions"])  # fmt: skip
    def review(sid: int, body: Decision, ws: WS, who: Who) -> SubscriptionView:
        """The provider approves (possibly fewer fields) or rejects with a reason (审核)."""
        return svc.review(
            ws, who, sid, approve=body.decision == "approve", fields=body.fields,
            reason=body.reason,
        )  # fmt: skip

    @app.post("/subscriptions/{sid}/sign-off", response_model=SubscriptionView,
              tags=["subscriptions"])  # fmt: skip
    def sign_off(sid: int, ws: WS, who: Who) -> SubscriptionView:
        """Confirm receipt (签收)."""
        return svc.sign_off(ws, who, sid)

    @app.post("/subscriptions/{sid}/evaluate", response_model=SubscriptionView,
              tags=["subscriptions"])  # fmt: skip
    def evaluate(sid: int, body: EvaluationForm, ws: WS, who: Who) -> SubscriptionView:
        """Five 1–5 star dimensions and a comment (评价); closes the subscription."""
        stars = svc.Stars.model_validate(body.model_dump(exclude={"comment"}))
        return svc.evaluate(ws, who, sid, stars, body.comment)

    @app.post("/subscriptions/{sid}/effectiveness", response_model=SubscriptionView,
              tags=["subscriptions"])  # fmt: skip
    def effectiveness(sid: int, body: EffectivenessForm, ws: WS, who: Who) -> SubscriptionView:
        """The usage-effectiveness report (应用成效), due 90 days after closing."""
        return svc.report_effectiveness(ws, who, sid, body.summary)

    for action, path, doc in (
        ("suspend", "suspend", "Stop deliveries to a subscription (admin)."),
        ("resume", "resume", "Resume a suspended subscription (admin)."),
        ("deliver", "implemented", "Mark an implementation done by hand (admin)."),
    ):
        _admin_route(app, WS, Who, action, path, doc)

    @app.get("/sla", response_model=SlaReport, tags=["sla"])
    def sla(ws: WS, who: Who) -> SlaReport:
        """Open deadlines and breaches, per provider, platform and requester."""
        return svc.sla_overview(ws, who)

    return app


def _admin_route(app: FastAPI, WS: Any, Who: Any, action: str, path: str, doc: str) -> None:
    def step(sid: int, body: Reason, ws: WS, who: Who) -> SubscriptionView:
        return svc.admin_step(ws, who, sid, action, body.reason)

    step.__doc__ = doc
    app.post(
        f"/subscriptions/{{sid}}/{path}",
        response_model=SubscriptionView,
        tags=["subscriptions"],
        name=action,
    )(step)


def _resource(ws: Workspace, code: str) -> ResourceOut:
    r = ws.catalog.resource(code)
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


def _audit_call(
    workspaces: _Workspaces, method: str, path: str, status: int, who: Principal | None
) -> None:
    try:
        ws = workspaces.get()
    except ExchangeError:
        return  # no store to write to; the call itself already failed with the reason
    with ws.store.session() as s:
        audit.append(
            s,
            "api.call",
            f"{method} {path}",
            {"status": status, "user_id": who.user_id if who else None},
            actor=who.name if who else "anonymous",
        )
