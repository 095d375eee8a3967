"""The application form (001 附件4, 000 申请): what a requester fills in to ask for a resource.

The form's keys are the REST API's body and the CLI's options (``--usage-days`` for
``usage_days``), one to one; ``schemas/examples/application.yaml`` is a filled-in example. The
department is not the form's to choose: it is the applicant's own (its user's department code)
and its name comes from the catalog, so both may be left out; a form that names another
department is refused (``exchange.workflow.service.apply``).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from connectors.names import IDENTIFIER
from exchange.kernel.errors import BadInput
from exchange.kernel.text import a_or_an

MAX_USAGE_DAYS = 1095  # 001: 最长不超过 1095 天
# The spec (OpenAPI) states each pattern, and the server checks the value as sent: a value
# the spec refuses is refused, one it allows is accepted (the API's contract test holds both).
# White space (and NUL, which PostgreSQL cannot store) spelt out as Python's str.strip() sees
# it: regex engines disagree on what \s is (the spec's and the server's must agree).
_SPACE = r"\u0000-\u0020\u007f\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_EMAIL = re.compile(rf"^[^@{_SPACE}]+@[^@{_SPACE}]+\.[^@{_SPACE}]+$")
_PHONE = re.compile(r"^[0-9+\-()][0-9+\-() ]{3,38}[0-9+\-()]$")  # no space at either end
# Something besides white space (texts are stripped, then must not be empty), and no NUL.
TEXT = rf"^[^\u0000]*[^{_SPACE}][^\u0000]*$"
NAME = IDENTIFIER.pattern  # a field, table or schema name

F = TypeVar("F", bound=BaseModel)
Text = Field(min_length=1, max_length=2000)
Short = Field(min_length=1, max_length=200)


class DepartmentRequest(BaseModel):
    """What a department says in any request, whatever it asks for: where the data lands
    (tables and files; an api resource has no node), who it is, why, how to reach it, for
    how long and how urgently. ``Application`` (a city resource) and ``UpstreamRequest`` (a
    national or provincial one, ``exchange.workflow.upstream``) add what is asked for."""

    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        # _reason_when_urgent, as the spec states it
        json_schema_extra={
            "anyOf": [
                {"properties": {"urgency": {"const": "normal"}}},
                {
                    "properties": {"urgency_reason": {"type": "string", "pattern": TEXT}},
                    "required": ["urgency_reason"],
                },
            ]
        },
    )

    node: str | None = Field(
        None,
        min_length=1,
        max_length=63,
        pattern=TEXT,
        description="the front-end node to receive it (tables and files; none for an api)",
    )
    target_table: str | None = Field(
        None, pattern=NAME, description="default: the provider's table name"
    )
    target_schema: str | None = Field(None, pattern=NAME)
    department_code: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=TEXT,
        description="使用部门代码: default the applicant's",
    )
    department_name: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        pattern=TEXT,
        description="使用部门名称: default the catalog's",
    )
    purpose: str = Field(
        min_length=1, max_length=2000, pattern=TEXT, description="资源用途及应用场景"
    )
    legal_basis: str = Field(min_length=1, max_length=2000, pattern=TEXT, description="申请依据")
    contact_name: str = Field(min_length=1, max_length=100, pattern=TEXT)
    contact_phone: str = Field(max_length=40, pattern=_PHONE.pattern)
    contact_email: str = Field(max_length=200, pattern=_EMAIL.pattern)
    system_name: str = Field(
        min_length=1, max_length=200, pattern=TEXT, description="业务系统名称(代码)"
    )
    system_ip: str = Field(
        max_length=45,
        description="业务系统的政务外网 IP",
        json_schema_extra={"anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]},
    )
    deploy_location: str = Field(
        min_length=1, max_length=200, pattern=TEXT, description="业务系统部署地点"
    )
    usage_days: int = Field(ge=1, le=MAX_USAGE_DAYS, description="使用期限, days")
    urgency: Literal["normal", "urgent", "critical"] = "normal"
    urgency_reason: str | None = Field(
        None, max_length=2000, pattern=r"^[^\u0000]*$", description="加急/特急理由"
    )
    technical_notes: str | None = Field(
        None, max_length=2000, pattern=r"^[^\u0000]*$", description="其他技术请求"
    )

    # mode="before": checked as sent, before the whitespace is stripped (as the spec checks it)
    @field_validator("contact_phone", mode="before")
    @classmethod
    def _phone(cls, v: object) -> object:
        if isinstance(v, str) and not _PHONE.match(v):
            raise ValueError(f"{v!r} is not a phone number")
        return v

    @field_validator("contact_email", mode="before")
    @classmethod
    def _email(cls, v: object) -> object:
        if isinstance(v, str) and not _EMAIL.match(v):
            raise ValueError(f"{v!r} is not an e-mail address")
        return v

    @field_validator("system_ip", mode="before")
    @classmethod
    def _ip(cls, v: object) -> object:
        if not isinstance(v, str):
            return v
        try:
            return str(ipaddress.ip_address(v))
        except ValueError:
            raise ValueError(f"{v!r} is not an IP address") from None

    @model_validator(mode="after")
    def _reason_when_urgent(self) -> DepartmentRequest:
        if self.urgency != "normal" and not (self.urgency_reason or "").strip():
            raise ValueError(
                f"{a_or_an(self.urgency)} request needs urgency_reason (加急/特急理由)"
            )
        return self


class Application(DepartmentRequest):
    """A request for a resource. Requested fields are a subset of the resource's ("minimal
    sufficient"): the reviewer may grant fewer. Urgent and critical requests give a reason.
    A table or file resource lands on ``node``; an api resource has none (it is called
    through the gateway with an authorization code)."""

    resource: str = Field(min_length=1, max_length=64, pattern=TEXT, description="resource code")
    fields: list[Annotated[str, Field(pattern=NAME)]] = Field(
        min_length=1,
        max_length=1000,
        description="requested fields (需求字段)",
        json_schema_extra={"uniqueItems": True},  # _distinct
    )

    @field_validator("fields")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        seen: list[str] = []
        for name in v:
            if name in seen:
                raise ValueError(f"field {name!r} is requested twice")
            seen.append(name)
        return seen


def parse_application(data: dict[str, object]) -> Application:
    """Validate a form from the CLI or a file; every problem named by its field."""
    return parse_form(Application, data)


def parse_form(model: type[F], data: dict[str, object]) -> F:
    """Validate ``data`` as ``model``; BadInput naming every problem by its field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or 'application'}: {e['msg']}"
            for e in exc.errors()
        ]
        raise BadInput("the application is not valid: " + "; ".join(problems)) from None
