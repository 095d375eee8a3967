"""The application form (001 附件4, 000 申请): what a requester fills in to ask for a resource."""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from exchange.kernel.errors import BadInput

MAX_USAGE_DAYS = 1095  # 001: 最长不超过 1095 天
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_PHONE = re.compile(r"^[0-9+\-() ]{5,40}$")

Text = Field(min_length=1, max_length=2000)
Short = Field(min_length=1, max_length=200)


class Application(BaseModel):
    """A request for a resource. Requested fields are a subset of the resource's ("minimal
    sufficient"): the reviewer may grant fewer. Urgent and critical requests give a reason."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    resource: str = Field(min_length=1, max_length=64, description="resource code")
    node: str = Field(min_length=1, max_length=63, description="the front-end node to receive it")
    fields: list[str] = Field(min_length=1, description="requested fields (需求字段)")
    target_table: str | None = Field(None, description="default: the provider's table name")
    target_schema: str | None = None
    department_code: str = Field(min_length=1, max_length=64, description="使用部门代码")
    department_name: str = Short
    purpose: str = Field(min_length=1, max_length=2000, description="资源用途及应用场景")
    legal_basis: str = Field(min_length=1, max_length=2000, description="申请依据")
    contact_name: str = Field(min_length=1, max_length=100)
    contact_phone: str
    contact_email: str
    system_name: str = Field(min_length=1, max_length=200, description="业务系统名称(代码)")
    system_ip: str = Field(description="业务系统的政务外网 IP")
    deploy_location: str = Field(min_length=1, max_length=200, description="业务系统部署地点")
    usage_days: int = Field(ge=1, le=MAX_USAGE_DAYS, description="使用期限, days")
    urgency: Literal["normal", "urgent", "critical"] = "normal"
    urgency_reason: str | None = Field(None, max_length=2000, description="加急/特急理由")
    technical_notes: str | None = Field(None, max_length=2000, description="其他技术请求")

    @field_validator("fields")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        seen: list[str] = []
        for name in v:
            if name in seen:
                raise ValueError(f"field {name!r} is requested twice")
            seen.append(name)
        return seen

    @field_validator("contact_phone")
    @classmethod
    def _phone(cls, v: str) -> str:
        if not _PHONE.match(v):
            raise ValueError(f"{v!r} is not a phone number")
        return v

    @field_validator("contact_email")
    @classmethod
    def _email(cls, v: str) -> str:
        if not _EMAIL.match(v):
            raise ValueError(f"{v!r} is not an e-mail address")
        return v

    @field_validator("system_ip")
    @classmethod
    def _ip(cls, v: str) -> str:
        try:
            return str(ipaddress.ip_address(v.strip()))
        except ValueError:
            raise ValueError(f"{v!r} is not an IP address") from None

    @model_validator(mode="after")
    def _reason_when_urgent(self) -> Application:
        if self.urgency != "normal" and not (self.urgency_reason or "").strip():
            raise ValueError(f"an {self.urgency} request needs urgency_reason (加急/特急理由)")
        return self


def parse_application(data: dict[str, object]) -> Application:
    """Validate a form from the CLI or a file; every problem named by its field."""
    try:
        return Application.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or 'application'}: {e['msg']}"
            for e in exc.errors()
        ]
        raise BadInput("the application is not valid: " + "; ".join(problems)) from None
