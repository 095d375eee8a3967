"""Users, their roles and their API tokens (only the sha256 of a token is stored).

Roles: ``admin`` (platform), ``provider`` (reviews requests for the resources of its
department), ``requester`` (applies for its own department and acts on its subscriptions).
A user's ``department`` is a department code of the catalog (``departments``): a provider's is
matched with the provider node's department, a requester's is the department of everything it
applies for, and the only department whose nodes it may have data delivered to.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from exchange import audit
from exchange.catalog.model import department_list
from exchange.kernel.clock import utcnow
from exchange.kernel.errors import BadInput, NotFound, Unauthorized
from exchange.workflow.models import ApiToken, User, UserPassword

ROLES = ("admin", "provider", "requester")
TOKEN_PREFIX = "exg_"


@dataclass(frozen=True)
class Principal:
    """Who is acting: a user with its role, or the platform itself (system, engine)."""

    name: str
    role: str  # admin | provider | requester | system | engine
    department: str | None = None
    user_id: int | None = None
    # the user's own department while it acts for a unit of it (department: the unit's),
    # as ``exchange.workflow.acting`` lets a supervising department do
    acting_from: str | None = None

    def describe(self) -> str:
        """``name (role of DEPT)``: how a refusal names who was refused."""
        dept = f" of {self.department}" if self.department else ""
        if self.acting_from:
            dept = f" of {self.acting_from} for its unit {self.department}"
        return f"{self.name} ({self.role}{dept})"


SYSTEM = Principal("system", "system")
ENGINE = Principal("engine", "engine")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_user(
    s: Session,
    name: str,
    role: str,
    department: str | None,
    actor: str,
    departments: Mapping[str, str] | None = None,
) -> User:
    """Add a user; providers and requesters belong to a department, by its code (with the
    catalog's ``departments`` given, one of them); an admin belongs to none."""
    if role not in ROLES:
        raise BadInput(f"role {role!r} is not one of {', '.join(ROLES)}")
    if role != "admin" and not department:
        raise BadInput(f"a {role} belongs to a department: give --department CODE")
    if role == "admin" and department:
        raise BadInput(
            f"user {name!r}: an admin acts for the whole platform and belongs to no "
            f"department; leave out --department {department}"
        )
    if role != "admin" and departments and department not in departments:
        raise BadInput(
            f"user {name!r}: department {department!r} is not a department code of the "
            f"catalog (codes: {department_list(departments)})"
        )
    if s.execute(sa.select(User.id).where(User.name == name)).scalar() is not None:
        raise BadInput(f"user {name!r} exists already")
    user = User(name=name, role=role, department=department)
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


def live_token_hashes(s: Session, hashes: Collection[str]) -> set[str]:
    """Those of the token ``hashes`` that are still live (issued and not revoked), in one
    query: what a server that remembers authenticated tokens checks before it answers."""
    if not hashes:
        return set()
    q = sa.select(ApiToken.token_hash).where(
        ApiToken.token_hash.in_(sorted(set(hashes))), ApiToken.revoked_at.is_(None)
    )
    return set(s.execute(q).scalars())


def principal_of(s: Session, name: str) -> Principal:
    """The user named ``name`` (the CLI's ``--as``)."""
    user = s.execute(sa.select(User).where(User.name == name)).scalar()
    if user is None:
        raise Unauthorized(f"no user {name!r}: create it with `exchange user add`")
    return Principal(user.name, user.role, user.department, user.id)


def set_password(
    s: Session, user_name: str, password: str, actor: str, at: dt.datetime | None = None
) -> None:
    """Give a user a new password (stored only as its argon2id hash): the old one no longer
    signs in. The password never enters the audit log, its setting does. ``at``: when (the
    age a rotation reminder counts from), now by default."""
    from argon2 import PasswordHasher  # argon2id by default

    user = s.execute(sa.select(User).where(User.name == user_name)).scalar()
    if user is None:
        raise NotFound(f"no user {user_name!r}")
    row = s.get(UserPassword, user.id)
    replaced = row is not None
    if row is None:
        row = UserPassword(user_id=user.id)
        s.add(row)
    row.password_hash, row.set_at = PasswordHasher().hash(password), at or utcnow()
    audit.append(s, "user.password_set", f"user:{user.id}", {"replaced": replaced}, actor)


def sign_in(s: Session, user_name: str, password: str) -> Principal:
    """The user whose name and password these are; any other pair is refused alike."""
    from argon2 import PasswordHasher
    from argon2.exceptions import InvalidHashError, VerificationError

    user = s.execute(sa.select(User).where(User.name == user_name)).scalar()
    row = s.get(UserPassword, user.id) if user is not None else None
    if user is None or row is None:
        raise Unauthorized("unknown user or wrong password")
    try:
        PasswordHasher().verify(row.password_hash, password)
    except (VerificationError, InvalidHashError):
        raise Unauthorized("unknown user or wrong password") from None
    return Principal(user.name, user.role, user.department, user.id)


def list_users(s: Session) -> list[User]:
    return list(s.execute(sa.select(User).order_by(User.id)).scalars())
