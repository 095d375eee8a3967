"""What the REST API reads and answers, with every bound the server enforces written into the
OpenAPI spec: ids within the store's integer column, pages of a bounded size, texts as long as
their columns, a rejection that carries its reason."""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from exchange.workflow import service as svc
from exchange.workflow import states as st
from exchange.workflow import upstream_states as ust
from exchange.workflow.application import NAME, TEXT
from exchange.workflow.upstream import UpstreamView
from exchange.workflow.views import SubscriptionView

MAX_ID = 2**31 - 1  # the store's integer primary keys (PostgreSQL ``integer``)
DEFAULT_LIMIT = 50
MAX_LIMIT = 200
MAX_WORKING_DAYS = 365  # about a year and a half of working days
EARLIEST_YEAR, LATEST_YEAR = 2000, 2099  # what the statutory calendar can sensibly answer
# A text must hold something besides white space (the workflow strips it and refuses it
# empty) and no NUL (PostgreSQL cannot store it): the application form's rule.
NOT_BLANK = TEXT
NO_NUL = r"^[^\u0000]*$"

# The workflow's states, as the spec's enum of the ``state`` filter.
StateName = enum.StrEnum("StateName", {s: s for s in st.STATES})  # type: ignore[misc]


class ErrorOut(BaseModel):
    """Why a call was refused: one sentence naming what is wrong, never a path or a secret."""

    detail: str


class Reason(BaseModel):
    reason: str = Field(min_length=1, max_length=2000, pattern=NOT_BLANK)


class Approve(BaseModel):
    decision: Literal["approve"]
    fields: list[Annotated[str, Field(pattern=NAME)]] | None = Field(
        None, max_length=1000, description="fewer fields than requested (default: all of them)"
    )
    reason: str | None = Field(None, max_length=2000, pattern=NO_NUL)


class Reject(BaseModel):
    decision: Literal["reject"]
    reason: str = Field(
        min_length=1, max_length=2000, pattern=NOT_BLANK, description="审批不通过的理由"
    )


Decision = Annotated[Approve | Reject, Field(discriminator="decision")]


class EvaluationForm(svc.Stars):
    comment: str | None = Field(None, max_length=2000, pattern=NO_NUL)


class EffectivenessForm(BaseModel):
    summary: str = Field(min_length=1, max_length=10000, pattern=NOT_BLANK, description="应用成效")


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
    provider_department: str | None  # None: a provider node of no department (admins review)
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


class PageInfo(BaseModel):
    total: int = Field(description="how many there are in all")
    limit: int
    offset: int
    next_offset: int | None = Field(description="the offset of the next page; null on the last")

    @classmethod
    def of(cls, total: int, limit: int, offset: int) -> dict[str, Any]:
        nxt = offset + limit if offset + limit < total else None
        return {"total": total, "limit": limit, "offset": offset, "next_offset": nxt}


class ResourcePage(PageInfo):
    items: list[ResourceOut]


class SubscriptionPage(PageInfo):
    items: list[SubscriptionView]


# -- upstream applications (exchange.workflow.upstream) ----------------------------------------

UpstreamStateName = enum.StrEnum(  # type: ignore[misc]
    "UpstreamStateName", {s: s for s in ust.STATES}
)


class ForwardNote(BaseModel):
    note: str | None = Field(None, max_length=2000, pattern=NO_NUL)


class UpstreamApproved(BaseModel):
    decision: Literal["approved"]
    approval_ref: str = Field(
        min_length=1, max_length=200, pattern=NOT_BLANK, description="批复文号"
    )
    reason: str | None = Field(None, max_length=2000, pattern=NO_NUL)


class UpstreamRejected(BaseModel):
    decision: Literal["rejected"]
    reason: str = Field(min_length=1, max_length=2000, pattern=NOT_BLANK)


class Proxied(BaseModel):
    resource: str = Field(
        min_length=1, max_length=64, pattern=NOT_BLANK, description="the city resource's code"
    )
    fields: list[Annotated[str, Field(pattern=NAME)]] | None = Field(
        None,
        min_length=1,
        max_length=1000,
        description="the requested fields by the resource's names (default: the form's)",
    )


class UpstreamPage(PageInfo):
    items: list[UpstreamView]
