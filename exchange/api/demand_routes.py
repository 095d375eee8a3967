"""The REST API of data demands: the same service functions as ``exchange demand``
(``exchange.workflow.demands``). Added to the app by ``add_routes`` from ``create_app``."""

# No ``from __future__ import annotations``: FastAPI reads the endpoints' annotations.
import datetime as dt
import enum
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import Body, FastAPI, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from exchange.api import calls
from exchange.api.schemas import MAX_ID, NO_NUL, NOT_BLANK
from exchange.workflow import demands
from exchange.workflow.demands import DemandAnswer, DemandForm, DemandView
from exchange.workflow.users import Principal
from exchange.workspace import Workspace

DemandId = Annotated[int, Path(ge=1, le=MAX_ID, description="demand id")]


class DemandPage(BaseModel):
    items: list[DemandView]


class Assignment(BaseModel):
    """The department that owns the data (admin)."""

    model_config = ConfigDict(extra="forbid")

    provider: str = Field(min_length=1, max_length=64, pattern=NO_NUL)
    note: str | None = Field(None, max_length=2000, pattern=NO_NUL)


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(None, max_length=5000, pattern=NO_NUL, description="a note")

    def reply(self) -> DemandAnswer:
        return DemandAnswer.model_validate(self.model_dump())


class ExistingAnswer(_Answer):
    """The data is already a catalog resource: the requester is told, and applies for it."""

    answer: Literal["existing"]
    resource: str = Field(min_length=1, max_length=64, pattern=NO_NUL)


class PublishAnswer(_Answer):
    """The provider commits to publish a resource by a date (after today)."""

    answer: Literal["publish"]
    publish_by: dt.date


class RefuseAnswer(_Answer):
    """The provider refuses, with its reason."""

    answer: Literal["refuse"]
    text: str = Field(min_length=1, max_length=5000, pattern=NOT_BLANK, description="the reason")


AnswerBody = Annotated[ExistingAnswer | PublishAnswer | RefuseAnswer, Body(discriminator="answer")]


class Closing(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(None, max_length=2000, pattern=NO_NUL)


def add_routes(
    app: FastAPI,
    WS: Any,
    Token: Any,
    json: Callable[..., Response],
    refusals: Callable[..., dict[int | str, dict[str, Any]]],
) -> None:
    """``/demands`` and its steps."""
    tags: list[str | enum.Enum] = ["demands"]

    @app.post("/demands", response_model=DemandView, status_code=201, tags=tags,
              responses=refusals(400, 403, 404))  # fmt: skip
    def file(form: DemandForm, ws: WS, token: Token) -> Response:
        """File a demand for data nobody shares yet (a requester, for its department)."""
        return json(calls.in_transaction(
            ws, token, 201, lambda ws, who: demands.file_demand(ws, who, form)), 201)  # fmt: skip

    @app.get("/demands", response_model=DemandPage, tags=tags, responses=refusals(400))
    def every(
        ws: WS,
        token: Token,
        state: Annotated[
            Literal["filed", "assigned", "answered", "closed"] | None,
            Query(description="only demands in this state"),
        ] = None,
    ) -> Response:
        """The demands I may see: the platform all, a requester its department's, a provider
        those assigned to its department."""

        def page(ws: Workspace, who: Principal) -> DemandPage:
            return DemandPage(items=demands.list_for(ws, who, state))

        return json(calls.in_transaction(ws, token, 200, page))

    @app.get("/demands/{did}", response_model=DemandView, tags=tags,
             responses=refusals(403, 404))  # fmt: skip
    def one(did: DemandId, ws: WS, token: Token) -> Response:
        """One demand with its history."""
        return json(
            calls.in_transaction(ws, token, 200, lambda ws, who: demands.show(ws, who, did))
        )

    @app.post("/demands/{did}/assign", response_model=DemandView, tags=tags,
              responses=refusals(400, 403, 404, 409))  # fmt: skip
    def assign(did: DemandId, body: Assignment, ws: WS, token: Token) -> Response:
        """Assign it to the department that owns the data: its 5-working-day answer clock
        starts (admin)."""
        return json(calls.in_transaction(ws, token, 200, lambda ws, who: demands.assign(
            ws, who, did, body.provider, note=body.note)))  # fmt: skip

    @app.post("/demands/{did}/answer", response_model=DemandView, tags=tags,
              responses=refusals(400, 403, 404, 409))  # fmt: skip
    def answer(did: DemandId, body: AnswerBody, ws: WS, token: Token) -> Response:
        """The assigned provider's answer: an existing resource, a publication by a date, or
        a refusal with its reason."""
        reply = body.reply()
        return json(calls.in_transaction(
            ws, token, 200, lambda ws, who: demands.answer(ws, who, did, reply)))  # fmt: skip

    @app.post("/demands/{did}/close", response_model=DemandView, tags=tags,
              responses=refusals(400, 403, 404, 409))  # fmt: skip
    def close(did: DemandId, body: Closing, ws: WS, token: Token) -> Response:
        """Close it (the requesting department)."""
        return json(calls.in_transaction(
            ws, token, 200, lambda ws, who: demands.close(ws, who, did, body.note)))  # fmt: skip
