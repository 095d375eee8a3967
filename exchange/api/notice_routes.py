"""The REST API of resource change and offline notices and of the calendar's years: the same
service functions as ``exchange resource`` and ``exchange calendar status``
(``exchange.workflow.notices``, ``exchange.workflow.calendar_status``). Added to the app by
``add_routes`` from ``create_app``."""

# No ``from __future__ import annotations``: FastAPI reads the endpoints' annotations.
import datetime as dt
import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Path, Query, Response
from pydantic import BaseModel, Field, field_validator

from exchange.api import calls
from exchange.api.schemas import EARLIEST_YEAR, LATEST_YEAR, NO_NUL, NOT_BLANK
from exchange.catalog.model import Resource
from exchange.workflow import calendar_status, notices
from exchange.workflow.application import NAME
from exchange.workflow.notices import Notice
from exchange.workflow.users import Principal
from exchange.workspace import Workspace

Code = Annotated[str, Path(min_length=1, max_length=64, description="resource code")]


class NoticeForm(BaseModel):
    """A change or offline notice (003 §11): at least 5 working days ahead."""

    kind: Literal["change", "offline"]
    effective_on: dt.date = Field(
        description=f"the effective date (Asia/Shanghai), years {EARLIEST_YEAR}–{LATEST_YEAR}",
        # the year bound, in the spec as well as in the check below
        json_schema_extra={"pattern": "^20[0-9]{2}-"},
    )
    reason: str = Field(min_length=1, max_length=2000, pattern=NOT_BLANK)
    description: str | None = Field(
        None, max_length=4000, pattern=NO_NUL, description="a change: what changes"
    )
    fields: list[Annotated[str, Field(pattern=NAME, max_length=64)]] | None = Field(
        None, max_length=1000, description="a change: the fields concerned"
    )
    replacement: str | None = Field(
        None, min_length=1, max_length=64, pattern=NO_NUL,
        description="offline: the resource its subscribers are offered instead",
    )  # fmt: skip

    @field_validator("effective_on")
    @classmethod
    def _year(cls, v: dt.date) -> dt.date:
        if not EARLIEST_YEAR <= v.year <= LATEST_YEAR:
            raise ValueError(f"a year {EARLIEST_YEAR}–{LATEST_YEAR}")
        return v


class NoticePage(BaseModel):
    items: list[Notice]


class YearOut(BaseModel):
    years: str
    exact: bool
    source: str


class CalendarOut(BaseModel):
    """Which years the working-day calendar knows exactly; deadlines counted into any other
    year are provisional."""

    years: list[YearOut]
    missing: list[int]
    warning: str | None


@dataclass(frozen=True)
class AppParts:
    """What the routes take from ``exchange.api.app`` (which imports this module)."""

    json: Callable[..., Response]
    refusals: Callable[..., dict[int | str, dict[str, Any]]]
    visible: Callable[[Workspace, Principal, str], Resource]
    may_see: Callable[[Workspace, Principal, Resource], bool]


def add_routes(app: FastAPI, WS: Any, Token: Any, api: AppParts) -> None:
    """``/resources/{code}/notices``, ``/notices`` and ``/calendar/status``."""
    tags: list[str | enum.Enum] = ["notices"]

    @app.post("/resources/{code}/notices", response_model=Notice, status_code=201, tags=tags,
              responses=api.refusals(400, 403, 404))  # fmt: skip
    def announce(code: Code, form: NoticeForm, ws: WS, token: Token) -> Response:
        """Announce a change or offline notice of a resource: its provider or the platform;
        an effective date under 5 working days away is refused naming the earliest one."""

        def step(ws: Workspace, who: Principal) -> Notice:
            api.visible(ws, who, code)
            return notices.announce(
                ws, who, form.kind, code, form.effective_on, form.reason,
                replacement=form.replacement, description=form.description, fields=form.fields,
            )  # fmt: skip

        return api.json(calls.in_transaction(ws, token, 201, step), 201)

    @app.get("/resources/{code}/notices", response_model=NoticePage, tags=tags,
             responses=api.refusals(404))  # fmt: skip
    def of_resource(code: Code, ws: WS, token: Token) -> Response:
        """A resource's notices, latest effective date first."""

        def page(ws: Workspace, who: Principal) -> NoticePage:
            api.visible(ws, who, code)
            return NoticePage(items=notices.list_notices(ws, code))

        return api.json(calls.in_transaction(ws, token, 200, page))

    @app.get("/notices", response_model=NoticePage, tags=tags, responses=api.refusals())
    def every(
        ws: WS,
        token: Token,
        state: Annotated[
            Literal["pending", "effective", "applied"] | None,
            Query(description="only notices in this state"),
        ] = None,
    ) -> Response:
        """The notices of every resource I may see, latest effective date first."""

        def page(ws: Workspace, who: Principal) -> NoticePage:
            items = [
                n
                for n in notices.list_notices(ws)
                if (state is None or n.state == state)
                and n.resource in ws.catalog.resources
                and api.may_see(ws, who, ws.catalog.resources[n.resource])
            ]
            return NoticePage(items=items)

        return api.json(calls.in_transaction(ws, token, 200, page))

    @app.get("/calendar/status", response_model=CalendarOut, tags=["catalog"],
             responses=api.refusals())  # fmt: skip
    def calendar(ws: WS, token: Token) -> Response:
        """Which years are exact (chinese-calendar, the calendar file) and which provisional."""

        def show(ws: Workspace, who: Principal) -> CalendarOut:
            report = calendar_status.status()
            return CalendarOut(
                years=[YearOut(years=y.years, exact=y.exact, source=_source(y.source)) for y in
                       report.years],
                missing=report.missing,
                warning=report.warning,
            )  # fmt: skip

        return api.json(calls.in_transaction(ws, token, 200, show))


def _source(text: str) -> str:
    """No path of the server in an answer: the calendar file is named as such."""
    return "calendar file" if text.startswith("calendar file") else text
