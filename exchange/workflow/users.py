"""Users, their roles and their API tokens (only the sha256 of a token is stored).

Roles: ``admin`` (platform), ``provider`` (reviews requests for the resources of its
department), ``requester`` (acts on its own department's subscriptions). A provider's
``department`` is matched with the provider node's ``department`` in the catalog (or its
name); a requester's with the department code of its applications.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from exchange import audit
from exchange.kernel.clock import utcnow
from exchange.kernel.errors import BadInput, NotFound, Unauthorized
from exchange.workflow.models import ApiToken, User

ROLES = ("admin", "provider", "requester")
TOKEN_PREFIX = "exg_"


@dataclass(frozen=True)
class Principal:
    """Who is acting: a user with its role, or the platform itself (system, engine)."""

    name: str
    role: str  # admin | provider | requester | system | engine
    department: str | None = None
    user_id: int | None = None


SYSTEM = Principal("system", "system")
ENGINE = Principal("engine", "engine")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_user(s: Session, name: str, role: str, department: str | None, actor: str) -> User:
    """Add a user; providers and requesters belong to a department."""
    if role not in ROLES:
        raise BadInput(f"role {role!r} is not one of {', '.join(ROLES)}")
    if role != "admin" and not department:
        raise BadInput(f"a {role} belongs to a department: give --department")
    if s.execute(sa.select(User.id).where(User.name == name)).scalar() is not None:
        raise BadInput(f"user {name!r} exists already")
    user = User(name=name, role=role, department=department if role != "admin" else None)
    s.add(user)
    s.flush()
    details = {"name": name, "role": role, "department": department}
    audit.append(s, "user.created", f"user:{user.id}", details, actor)
    return user


def issue_token(s: Session, user_name: str, actor: str, label: str | None = None) -> str:
    """A new API token for a user: returned once, stored only as its hash."""
    user = s.execute(sa.select(User).where(User.name == user_name)).scalar()
    if user is None:
        raise NotFound(f"no user {user_name!r}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(user_id=user.id, token_hash=hash_token(token), label=label)
    s.add(row)
    s.flush()
    audit.append(
        s, "token.issued", f"user:{user.id}", {"token_id": row.id, "label": label}, actor
    )  # the token itself never enters the log
    return token


def revoke_tokens(s: Session, user_name: str, actor: str) -> int:
    """Revoke every token of a user; return how many were live."""
    user = principal_of(s, user_name)
    rows = s.execute(
        sa.select(ApiToken).where(ApiToken.user_id == user.user_id, ApiToken.revoked_at.is_(None))
    ).scalars()
    n = 0
    for row in rows:
        row.revoked_at = utcnow()
        n += 1
    audit.append(s, "token.revoked", f"user:{user.user_id}", {"tokens": n}, actor)
    return n


def authenticate(s: Session, token: str) -> Principal:
    """The user a bearer token belongs to; unknown or revoked tokens are refused."""
    row = s.execute(
        sa.select(ApiToken, User)
        .join(User, User.id == ApiToken.user_id)
        .where(ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None))
    ).first()
    if row is None:
        raise Unauthorized("unknown or revoked API token")
    _, user = row
    return Principal(user.name, user.role, user.department, user.id)


def principal_of(s: Session, name: str) -> Principal:
    """The user named ``name`` (the CLI's ``--as``)."""
    user = s.execute(sa.select(User).where(User.name == name)).scalar()
    if user is None:
        raise Unauthorized(f"no user {name!r}: create it with `exchange user add`")
    return Principal(user.name, user.role, user.department, user.id)


def list_users(s: Session) -> list[User]:
    return list(s.execute(sa.select(User).order_by(User.id)).scalars())
