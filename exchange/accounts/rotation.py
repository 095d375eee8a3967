"""Password hygiene for issued accounts: account holders change passwords regularly and avoid
weak ones.

* Rotation: every credential the platform issued (platform, database, FTP) is dated by its
  issuance (the application's ``state_changed_at`` once issued; a platform user's own later
  change of password restarts its age). Once older than
  ``EXCHANGE_CREDENTIAL_MAX_AGE_DAYS``, the account tick reminds the department's contact
  through the outbox, once per such period, pointing at a reset application.
* A platform user's own new password is checked against the rules below and refused by the
  name of each rule it breaks; the password itself is never echoed, logged or audited.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from exchange import audit
from exchange.accounts import states as ast
from exchange.accounts.models import AccountApplication
from exchange.kernel.errors import BadInput
from exchange.workflow import notifications, sla
from exchange.workflow.models import User, UserPassword
from exchange.workflow.users import Principal, set_password, sign_in

#: The password policy's floor (``secrets.PasswordPolicy`` refuses a shorter length).
MIN_LENGTH = 12
MIN_CLASSES = 3
#: Passwords that top every leaked-password list, in the shapes a policy of length and
#: classes lets through (compared ignoring case).
COMMON_PASSWORDS: frozenset[str] = frozenset(
    {
        "password@123", "password#123", "password123!", "password1234", "p@ssw0rd1234",
        "p@ssword1234", "passw0rd@123", "admin@123456", "admin@1234567", "administrator1",
        "administrator@1", "qwerty@123456", "qwer1234!@#$", "1qaz@wsx3edc", "1qaz2wsx3edc",
        "1qaz!qaz2wsx", "zaq12wsx!@#", "abc@12345678", "abcd@1234567", "aa123456789!",
        "welcome@1234", "welcome123!", "changeme@123", "iloveyou@123", "root@1234567",
        "test@1234567", "letmein@1234", "china@123456", "huawei@12345", "admin123456!",
        "passw0rd!234", "123456789abc", "abc123456789", "a123456789!@",
    }
)  # fmt: skip

RULES: dict[str, str] = {
    "length": f"shorter than {MIN_LENGTH} characters",
    "classes": (
        f"fewer than {MIN_CLASSES} character classes (lower case, upper case, digits, others)"
    ),
    "login": "the same as the login",
    "department": "the same as the department code",
    "common": "one of the commonly used passwords",
    "unchanged": "the same as the current password",
}


def _class(ch: str) -> str:
    if ch.islower():
        return "lower"
    if ch.isupper():
        return "upper"
    return "digit" if ch.isdigit() else "other"


def _classes(password: str) -> int:
    return len({_class(ch) for ch in password})


def weak_rules(password: str, *, login: str, department: str | None) -> list[str]:
    """The names of the rules (``RULES``) ``password`` breaks; empty when it passes."""
    broken = []
    if len(password) < MIN_LENGTH:
        broken.append("length")
    if _classes(password) < MIN_CLASSES:
        broken.append("classes")
    folded = password.casefold()
    if folded == login.casefold():
        broken.append("login")
    if department and folded == department.casefold():
        broken.append("department")
    if folded in COMMON_PASSWORDS:
        broken.append("common")
    return broken


def _refuse(broken: list[str]) -> BadInput:
    named = "; ".join(f"rule {r!r}: {RULES[r]}" for r in broken)
    return BadInput(f"new password refused ({named}); choose another")  # never the password


def check_password(password: str, *, login: str, department: str | None) -> None:
    """Raise ``BadInput`` naming every rule ``password`` breaks (never the password)."""
    broken = weak_rules(password, login=login, department=department)
    if broken:
        raise _refuse(broken)


def change_password(
    s: Session, user_name: str, current: str, new: str, at: dt.datetime | None = None
) -> Principal:
    """A platform user changes its own password: the current one proves who it is, the new
    one passes the rules, and from then on only the new one signs in."""
    who = sign_in(s, user_name, current)  # refused alike for an unknown user or a wrong one
    broken = weak_rules(new, login=who.name, department=who.department)
    if new == current:
        broken.append("unchanged")
    if broken:
        raise _refuse(broken)
    set_password(s, who.name, new, who.name, at=at)
    return who


# -- rotation ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Credential:
    """A credential in use: the latest issuance of a login, and since when it holds."""

    application_id: int
    account_type: str
    department: str
    login: str
    contact: str
    issued_at: dt.datetime


def credentials(s: Session) -> list[Credential]:
    """Every issued login, dated by its latest issuance (a reset re-issues it) or, for a
    platform user, by its own later change of password."""
    rows = s.scalars(
        sa.select(AccountApplication)
        .where(AccountApplication.state == ast.ISSUED, AccountApplication.login.is_not(None))
        .order_by(AccountApplication.state_changed_at, AccountApplication.id)
    )
    latest: dict[tuple[str, str, str], AccountApplication] = {}
    for app in rows:
        assert app.login is not None
        latest[(app.account_type, app.department_code, app.login)] = app
    changed: dict[str, dt.datetime] = {
        name: set_at
        for name, set_at in s.execute(
            sa.select(User.name, UserPassword.set_at).join(
                UserPassword, UserPassword.user_id == User.id
            )
        )
    }
    out = []
    for (kind, department, login), app in latest.items():
        issued = app.state_changed_at
        if kind == "platform":
            if login not in changed:
                continue  # the user is gone, or signs in with tokens only
            issued = max(issued, changed[login])
        out.append(Credential(app.id, kind, department, login, app.responsible_person, issued))
    return out


def reset_command(c: Credential) -> str:
    return (
        f"exchange account apply --type {c.account_type} --application reset "
        f"--existing-login {c.login}"
    )


def remind(s: Session, now: dt.datetime, max_age_days: int) -> int:
    """Remind the department of every credential older than ``max_age_days`` to rotate it:
    once per period of that age (a new issuance starts over); how many reminders are new."""
    period = dt.timedelta(days=max_age_days)
    sent = 0
    for c in credentials(s):
        k = int((now - c.issued_at) / period)
        if k < 1:
            continue
        payload = {
            "account_type": c.account_type,
            "department": c.department,
            "login": c.login,
            "contact": c.contact,
            "issued": sla.show(c.issued_at),
            "age_days": (now - c.issued_at).days,
            "max_age_days": max_age_days,
            "period": k,
            "reset": reset_command(c),
            "application": c.application_id,
        }  # who, which login and since when: never a secret
        key = f"account.rotation:{c.application_id}:{c.issued_at:%Y%m%d%H%M%S}:{k}"
        if notifications.notify(
            s, "account.rotation_due", f"requester:{c.department}", payload, key=key
        ):
            audit.append(
                s, "account.rotation_due", f"account:{c.application_id}", payload,
                actor="housekeeping",
            )  # fmt: skip
            sent += 1
    return sent
