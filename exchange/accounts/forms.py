"""The account application forms as data: 用户账号密码申请单 (a platform account) and
数据库、FTP 账号密码申请单 (a front-end database or FTP account) share their fields: the
account type, the application type (new, reset, other), the department, the responsible
person (申请人 / 对接负责人) and position, phone, e-mail and the reason. A reset names the
existing account (原有账号名称). The phone is checked as the quality validators check a
phone field (a mobile or a landline) and shown masked as quarantine excerpts mask phones.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from exchange.kernel.errors import BadInput
from exchange.workflow.application import _EMAIL, TEXT, parse_form
from quality.mask import STARS
from quality.validators.formats import PHONE_PATTERN

ACCOUNT_TYPES = ("platform", "database", "ftp")
APPLICATION_TYPES = ("new", "reset", "other")
_PHONE = re.compile(PHONE_PATTERN)
_LOGIN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"


class AccountForm(BaseModel):
    """One application for an account (the keys are the API's body and the CLI's options)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    account_type: Literal["platform", "database", "ftp"] = Field(description="账号类型")
    application_type: Literal["new", "reset", "other"] = Field("new", description="申请类型")
    department_code: str | None = Field(
        None, min_length=1, max_length=64, pattern=TEXT,
        description="申请部门: default the applicant's own",
    )  # fmt: skip
    responsible_person: str = Field(
        min_length=1, max_length=100, pattern=TEXT, description="申请人 / 对接负责人"
    )
    position: str = Field(min_length=1, max_length=100, pattern=TEXT, description="职务")
    phone: str = Field(
        max_length=40, pattern=PHONE_PATTERN, description="联系电话: a mobile or a landline"
    )
    email: str = Field(max_length=200, pattern=_EMAIL.pattern, description="电子邮箱")
    reason: str = Field(min_length=1, max_length=2000, pattern=TEXT, description="申请事由")
    existing_login: str | None = Field(
        None, pattern=_LOGIN, description="原有账号名称: the account a reset is for"
    )
    node: str | None = Field(
        None, min_length=1, max_length=63, pattern=TEXT,
        description="the department's front-end node (database and FTP accounts)",
    )  # fmt: skip

    @field_validator("phone", mode="before")
    @classmethod
    def _phone(cls, v: object) -> object:
        # checked as sent, as the spec's pattern checks it; the refusal shows it masked
        if isinstance(v, str) and not _PHONE.match(v):
            raise ValueError(f"{mask_phone(v)} is not a phone number (mobile or landline)")
        return v

    @field_validator("email", mode="before")
    @classmethod
    def _email(cls, v: object) -> object:
        if isinstance(v, str) and not _EMAIL.match(v):
            raise ValueError(f"{v!r} is not an e-mail address")
        return v

    def check(self) -> None:
        """What the form's fields say about each other (checked by the service, for the CLI
        and the API alike: a rule the spec's schema does not state is a 400, not a 422)."""
        if self.application_type == "reset" and self.existing_login is None:
            raise BadInput("existing_login: a reset names the existing account (原有账号名称)")
        if self.account_type == "platform" and self.node is not None:
            raise BadInput("node: a platform account is not on a node; leave node out")


def parse_account_form(data: dict[str, object]) -> AccountForm:
    """Validate a form from the CLI or a file; every problem named by its field."""
    form = parse_form(AccountForm, data)
    form.check()
    return form


def mask_phone(phone: str) -> str:
    """A phone as output shows it: first 3 and last 4 characters kept (138****5678); a short
    one keeps only its last 2."""
    if len(phone) >= 11:
        return phone[:3] + STARS + phone[-4:]
    return STARS + phone[-2:]
