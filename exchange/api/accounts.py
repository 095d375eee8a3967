"""The REST API's account applications and departments: the same service functions as
``exchange account`` and ``exchange department`` (``exchange.accounts``), each call in one
transaction with its ``api.call`` audit event. ``issue`` answers the secret this once."""

# No ``from __future__ import annotations``: FastAPI reads the endpoints' annotations.
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Path, Query, Response
from pydantic import BaseModel, Field, RootModel

from exchange.accounts import departments as dep
from exchange.accounts import service as acc
from exchange.accounts.forms import AccountForm
from exchange.api import calls
from exchange.api.schemas import DEFAULT_LIMIT, MAX_ID, MAX_LIMIT, PageInfo, Reason
from exchange.catalog.model import DEPARTMENT_LEVELS
from exchange.kernel.errors import Forbidden
from exchange.workflow.users import Principal
from exchange.workspace import Workspace

AccountId = Annotated[int, Path(ge=1, le=MAX_ID, description="account application id")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]
Offset = Annotated[int, Query(ge=0, le=MAX_ID)]
AccountState = Literal["awaiting_consent", "pending", "issued", "rejected", "refused"]
Level = Literal[
    "city_department", "second_level_unit", "county_bureau", "county_department",
    "public_utility",
]  # fmt: skip
assert set(Level.__args__) == set(DEPARTMENT_LEVELS)  # type: ignore[attr-defined]


class AccountPage(PageInfo):
    items: list[acc.AccountView]


class Consent(BaseModel):
    reason: str | None = Field(None, max_length=2000, pattern=r"^[^\u0000]*$")


class IssueBody(BaseModel):
    login: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$",
        description="a new platform user's name (default DEPT-ID)",
    )  # fmt: skip
    role: Literal["requester", "provider"] = "requester"
    note: str | None = Field(None, max_length=2000, pattern=r"^[^\u0000]*$")


class DepartmentOut(BaseModel):
    code: str
    name: str
    level: str
    supervisor: str | None
    source: str


class DepartmentIn(BaseModel):
    code: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    name: str = Field(min_length=1, max_length=200, pattern=r"^[^\u0000]*\S[^\u0000]*$")
    level: Level = "city_department"
    supervisor: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="units name theirs"
    )


class UnmappedOut(BaseModel):
    value: str
    table: str
    rows: int
    verdict: str
    name_of: list[str]


class _List(RootModel[list[DepartmentOut]]):
    pass


class _Unmapped(RootModel[list[UnmappedOut]]):
    pass


def _admin(who: Principal, what: str) -> None:
    if who.role != "admin":
        raise Forbidden(f"{who.describe()} may not {what}: only a platform admin may")


def account_routes(app: FastAPI, WS: Any, Token: Any, refusals: Any, json: Any) -> None:
    """The ``/account-applications`` and ``/departments`` endpoints."""
    tags: list[Any] = ["accounts"]

    def answer(ws: Workspace, token: str, status: int, act: Any) -> Response:
        return json(calls.in_transaction(ws, token, status, act), status)

    @app.post("/account-applications", response_model=acc.AccountView, status_code=201,
              tags=tags, responses=refusals(400, 403, 404))  # fmt: skip
    def account_apply(form: AccountForm, ws: WS, token: Token) -> Response:
        """Apply for a platform, database or FTP account, or its reset (账号密码申请单)."""
        return answer(ws, token, 201, lambda ws, who: acc.apply(ws, who, form))

    @app.get("/account-applications", response_model=AccountPage, tags=tags,
             responses=refusals(400))  # fmt: skip
    def account_list(
        ws: WS, token: Token, state: AccountState | None = None,
        limit: Limit = DEFAULT_LIMIT, offset: Offset = 0,
    ) -> Response:  # fmt: skip
        """The applications I may see (a supervisor: its units' too), in id order."""

        def page(ws: Workspace, who: Principal) -> AccountPage:
            total, items = acc.list_page(ws, who, state=state, limit=limit, offset=offset)
            return AccountPage(items=items, **PageInfo.of(total, limit, offset))

        return answer(ws, token, 200, page)

    @app.get("/account-applications/{aid}", response_model=acc.AccountView, tags=tags,
             responses=refusals(403, 404))  # fmt: skip
    def account_show(aid: AccountId, ws: WS, token: Token) -> Response:
        """One application with its history."""
        return answer(ws, token, 200, lambda ws, who: acc.show(ws, who, aid))

    @app.post("/account-applications/{aid}/consent", response_model=acc.AccountView,
              tags=tags, responses=refusals(400, 403, 404, 409))  # fmt: skip
    def account_consent(aid: AccountId, body: Consent, ws: WS, token: Token) -> Response:
        """The supervising department consents to its unit's application."""
        return answer(ws, token, 200, lambda ws, who: acc.consent(ws, who, aid, body.reason))

    @app.post("/account-applications/{aid}/refuse", response_model=acc.AccountView,
              tags=tags, responses=refusals(400, 403, 404, 409))  # fmt: skip
    def account_refuse(aid: AccountId, body: Reason, ws: WS, token: Token) -> Response:
        """The supervising department refuses its consent."""
        return answer(ws, token, 200, lambda ws, who: acc.refuse(ws, who, aid, body.reason))

    @app.post("/account-applications/{aid}/reject", response_model=acc.AccountView,
              tags=tags, responses=refusals(400, 403, 404, 409))  # fmt: skip
    def account_reject(aid: AccountId, body: Reason, ws: WS, token: Token) -> Response:
        """The platform rejects an application (admin)."""
        return answer(ws, token, 200, lambda ws, who: acc.reject(ws, who, aid, body.reason))

    @app.post("/account-applications/{aid}/issue", response_model=acc.Issued, tags=tags,
              responses=refusals(400, 403, 404, 409))  # fmt: skip
    def account_issue(aid: AccountId, body: IssueBody, ws: WS, token: Token) -> Response:
        """Issue the account (admin): the secret is in this answer only, kept nowhere."""
        return answer(ws, token, 200, lambda ws, who: acc.issue(
            ws, who, aid, login=body.login, role=body.role, note=body.note))  # fmt: skip

    @app.get("/departments", response_model=list[DepartmentOut], tags=["departments"],
             responses=refusals())  # fmt: skip
    def departments(ws: WS, token: Token) -> Response:
        """Every department with its level and supervisor, in code order."""

        def read(ws: Workspace, who: Principal) -> Any:
            with ws.store.session() as s:
                return _List(root=[DepartmentOut(**vars(d)) for d in dep.listing(s, ws.catalog)])

        return answer(ws, token, 200, read)

    @app.post("/departments", response_model=DepartmentOut, status_code=201,
              tags=["departments"], responses=refusals(400, 403, 404))  # fmt: skip
    def department_add(body: DepartmentIn, ws: WS, token: Token) -> Response:
        """Add or change a department in the store (admin)."""

        def act(ws: Workspace, who: Principal) -> DepartmentOut:
            _admin(who, "manage departments")
            with ws.store.session() as s:
                row = dep.add(s, ws.catalog, body.code, body.name, body.level,
                              body.supervisor, who.name)  # fmt: skip
                return DepartmentOut(**vars(dep.DepartmentView.of(row)))

        return answer(ws, token, 201, act)

    @app.get("/departments/unmapped", response_model=list[UnmappedOut], tags=["departments"],
             responses=refusals(403))  # fmt: skip
    def departments_unmapped(ws: WS, token: Token) -> Response:
        """Department values in the store that are no department code (admin)."""

        def read(ws: Workspace, who: Principal) -> Any:
            _admin(who, "list unmapped departments")
            with ws.store.session() as s:
                return _Unmapped(root=[
                    UnmappedOut(value=u.value, table=u.table, rows=u.rows, verdict=u.verdict,
                                name_of=list(u.name_of))
                    for u in dep.unmapped(s, ws.catalog)
                ])  # fmt: skip

        return answer(ws, token, 200, read)
