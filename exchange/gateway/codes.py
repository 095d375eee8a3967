"""Authorization codes (授权码) of API subscriptions: issued, rotated, revoked, listed, and
checked on every gateway call.

A code is ``cx_<12 hex>_<43 url-safe characters>`` (``secrets``: 48 bits of prefix, 256 bits of
secret). The store keeps only its prefix, to find the row, and its HMAC-SHA256 under the
gateway key (``exchange.gateway.keys``), to prove it; the code itself is shown once, when it is
issued. Messages, audit events and listings name a code by its prefix alone.

Issuing the first code of a subscription in implementation is its implementation (实施): the
subscription moves on to sign-off (``deliver``, by the engine) in the same transaction.
Issuing again later rotates the old codes out at once; ``rotate`` lets them work on for a
grace period, so that the department can deploy the new one first.

A platform admin's revocation stops the department: until an admin issues a code again, the
department's requesters can neither issue nor rotate one (a requester's own revocation they
may undo by issuing). What says so is the subscription's newest code: revoked, by an admin.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
import time
from collections import OrderedDict
from contextlib import AbstractContextManager
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from exchange import audit
from exchange.gateway.keys import gateway_key
from exchange.gateway.models import ApiCode
from exchange.kernel.clock import shown, today, utcnow
from exchange.kernel.errors import BadInput, ExchangeError, Forbidden, IllegalTransition
from exchange.store import Store
from exchange.store.locks import locked_session
from exchange.store.models import Subscription
from exchange.workflow import states as st
from exchange.workflow.acting import recorded
from exchange.workflow.models import User
from exchange.workflow.notices_models import offline_notice
from exchange.workflow.service import acts_for, may_view, open_suspension, subscription_row
from exchange.workflow.transitions import move
from exchange.workflow.users import ENGINE, Principal
from exchange.workspace import Workspace

CODE_PREFIX = "cx_"
PREFIX_HEX = 12  # 48 bits: a prefix collision among a platform's codes is negligible
SECRET_BYTES = 32  # secrets.token_urlsafe(32): 43 characters, 256 bits
_CODE = re.compile(rf"^({CODE_PREFIX}[0-9a-f]{{{PREFIX_HEX}}})_[A-Za-z0-9_-]{{43}}$")
#: The states in which a code may be issued or rotated: implementation (the first code is its
#: delivery) and every delivered state.
ISSUABLE: frozenset[str] = st.DELIVERABLE
#: What the digest of a code of no row is compared with, so that an unknown prefix costs what
#: a known one does.
_NO_DIGEST = bytes(32)


def digest(key: bytes, code: str) -> bytes:
    """HMAC-SHA256 of the whole code under the gateway key: what ``ApiCode.digest`` holds."""
    return hmac.new(key, code.encode("ascii"), hashlib.sha256).digest()


def prefix_of(code: str) -> str | None:
    """The prefix of a well-formed code (``cx_`` and 12 hex digits), else None."""
    match = _CODE.fullmatch(code)
    return match.group(1) if match else None


@dataclass(frozen=True)
class IssuedCode:
    """A code just made: ``code`` is shown once and never stored."""

    code_id: int
    subscription_id: int
    prefix: str
    code: str

    def __repr__(self) -> str:  # never the code in a log line or a traceback's locals
        return (
            f"IssuedCode(code_id={self.code_id}, subscription_id={self.subscription_id}, "
            f"prefix={self.prefix!r})"
        )


@dataclass(frozen=True)
class CodeView:
    """A code as listings show it: never its digest."""

    code_id: int
    subscription_id: int
    resource_code: str
    department_code: str | None
    prefix: str
    state: str  # live | grace (rotated out, still working) | rotated_out | revoked
    created_at: str  # Asia/Shanghai, as every shown time
    created_by: str
    grace_until: str | None
    revoked_at: str | None
    revoked_by: str | None
    revoke_reason: str | None
    replaced_by: int | None


def _utc(now: dt.datetime | None) -> dt.datetime:
    """``now`` as the store keeps times (naive UTC); an aware time is converted, a naive one
    already is one."""
    if now is None:
        return utcnow()
    return now if now.tzinfo is None else now.astimezone(dt.UTC).replace(tzinfo=None)


def code_state(row: ApiCode, now: dt.datetime) -> str:
    """live, grace (rotated out, working until ``grace_until``), rotated_out or revoked."""
    if row.revoked_at is not None:
        return "revoked"
    if row.replaced_by is None:
        return "live"
    if row.grace_until is not None and row.grace_until > now:
        return "grace"
    return "rotated_out"


def _working(row: ApiCode, now: dt.datetime) -> bool:
    return code_state(row, now) in ("live", "grace")


# -- issuing, rotating, revoking --------------------------------------------------------------


def _session(ws: Workspace) -> AbstractContextManager[Session]:
    return locked_session(ws.store)


def _who(who: Principal) -> str:
    return who.describe()


def _require_holder(who: Principal, sub: Subscription, action: str) -> None:
    """Codes are the requesting department's (its requesters) or the platform's (admins)."""
    if acts_for(who, sub):
        return
    raise Forbidden(
        f"{_who(who)} may not {action} the authorization codes of subscription {sub.id}: it "
        f"belongs to department {sub.department_code or '(none: added by the platform)'}; "
        "its requesters or a platform admin may"
    )


def _newest(s: Session, sub: Subscription) -> ApiCode | None:
    return s.execute(
        sa.select(ApiCode)
        .where(ApiCode.subscription_id == sub.id)
        .order_by(ApiCode.id.desc())
        .limit(1)
    ).scalar()


def _revoked_by_admin(s: Session, row: ApiCode | None) -> bool:
    """Whether ``row`` was revoked by an admin (or by a user no longer known: the safe side)."""
    if row is None or row.revoked_at is None or row.revoked_by is None:
        return False
    role = s.execute(sa.select(User.role).where(User.name == row.revoked_by)).scalar()
    return role is None or role == "admin"


def _require_not_stopped(s: Session, who: Principal, sub: Subscription, action: str) -> None:
    """After an admin's revocation only an admin issues again: a department must not undo
    the platform's stop (say, of a code leaked in public) by issuing itself a new code."""
    if who.role == "admin":
        return
    newest = _newest(s, sub)
    if newest is not None and _revoked_by_admin(s, newest):
        assert newest.revoked_at is not None
        raise Forbidden(
            f"{_who(who)} may not {action} an authorization code of subscription {sub.id}: "
            f"platform admin {newest.revoked_by} revoked its codes on "
            f"{shown(newest.revoked_at)}; after an admin's revocation only a platform admin "
            "may issue a code for it again"
        )


def _require_api(ws: Workspace, sub: Subscription) -> None:
    resource = ws.catalog.resource(sub.resource_code)
    if resource.kind != "api":
        raise BadInput(
            f"subscription {sub.id} is to {resource.kind} resource {resource.code}: "
            "authorization codes are for api resources"
        )


def _require_issuable(sub: Subscription, now: dt.datetime, action: str) -> None:
    if sub.status not in ISSUABLE:
        raise IllegalTransition(
            f"subscription {sub.id} is {sub.status}: a code is {action} only in implementation "
            f"or once delivered ({', '.join(sorted(ISSUABLE - {st.IMPLEMENTATION}))})"
        )
    if sub.valid_until < today(now):
        raise IllegalTransition(
            f"subscription {sub.id}'s usage period ended on {sub.valid_until}: no code is "
            f"{action} for it"
        )


def _new_code(
    s: Session, key: bytes, sub: Subscription, who: Principal, now: dt.datetime
) -> tuple[ApiCode, str]:
    """A new code row (flushed, so it has its id) and the code, which only the caller sees."""
    while True:
        prefix = CODE_PREFIX + secrets.token_hex(PREFIX_HEX // 2)
        taken = s.execute(sa.select(ApiCode.id).where(ApiCode.prefix == prefix)).first()
        if taken is None:
            break
    code = f"{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}"
    row = ApiCode(
        subscription_id=sub.id,
        prefix=prefix,
        digest=digest(key, code),
        created_at=now,
        created_by=who.name,
    )
    s.add(row)
    s.flush()
    return row, code


def _rotate_out(
    s: Session, sub: Subscription, new: ApiCode, until: dt.datetime, now: dt.datetime
) -> list[str]:
    """Every other working code of ``sub`` works until ``until`` at the latest (a code already
    in a longer grace has it cut); the prefixes of those that were working."""
    rows = s.execute(
        sa.select(ApiCode)
        .where(
            ApiCode.subscription_id == sub.id,
            ApiCode.id != new.id,
            ApiCode.revoked_at.is_(None),
        )
        .order_by(ApiCode.id)
    ).scalars()
    out = []
    for row in rows:
        if not _working(row, now):
            continue
        if row.replaced_by is None:
            row.replaced_by = new.id
        row.grace_until = until if row.grace_until is None else min(row.grace_until, until)
        out.append(row.prefix)
    return out


def _issue(
    ws: Workspace,
    who: Principal,
    subscription_id: int,
    grace: dt.timedelta,
    now: dt.datetime,
    action: str,
) -> IssuedCode:
    key = gateway_key(ws.settings, ws.store)
    with _session(ws) as s:
        sub = subscription_row(s, subscription_id)
        _require_holder(who, sub, action)
        _require_not_stopped(s, who, sub, action)
        _require_api(ws, sub)
        _require_issuable(sub, now, "issued" if action == "issue" else "rotated")
        row, code = _new_code(s, key, sub, who, now)
        rotated = _rotate_out(s, sub, row, now + grace, now)
        payload = {
            "code_id": row.id,
            "prefix": row.prefix,
            "resource": sub.resource_code,
            "department": sub.department_code,
            "rotated_out": rotated,
            "grace_until": (now + grace) if rotated else None,
            **recorded(who),  # a supervising department acting for its unit: both
        }
        kind = "api.code_issued" if action == "issue" else "api.code_rotated"
        audit.append(s, kind, f"subscription:{sub.id}", payload, actor=who.name)
        if sub.status == st.IMPLEMENTATION:
            move(s, sub, "deliver", ENGINE, now, f"authorization code {row.prefix} issued",
                 extra={"code": row.prefix})  # fmt: skip
        return IssuedCode(row.id, sub.id, row.prefix, code)


def issue(
    ws: Workspace, who: Principal, subscription_id: int, now: dt.datetime | None = None
) -> IssuedCode:
    """A new code for an api subscription, by one of its department's requesters or an admin.
    The first one, in implementation, delivers the subscription (→ sign-off); a later one
    replaces the working codes at once (a rotation without grace). Audited
    ``api.code_issued`` with the prefix, never the code."""
    return _issue(ws, who, subscription_id, dt.timedelta(0), _utc(now), "issue")


#: The longest a rotated-out code goes on working: a week is enough to deploy the new one,
#: and a code rotated because it leaked must not keep opening the API for months.
MAX_GRACE = dt.timedelta(days=7)


def rotate(
    ws: Workspace,
    who: Principal,
    subscription_id: int,
    grace: dt.timedelta,
    now: dt.datetime | None = None,
) -> IssuedCode:
    """A new code; the working ones go on working for ``grace`` (``replaced_by`` the new one,
    ``grace_until`` now + grace), at most ``MAX_GRACE``. Audited ``api.code_rotated``."""
    if grace < dt.timedelta(0):
        raise BadInput(f"--grace {grace} is negative: give 0 to stop the old codes at once")
    if grace > MAX_GRACE:
        raise BadInput(
            f"--grace {grace} is longer than {MAX_GRACE.days} days: a rotated-out code may "
            f"go on working for {MAX_GRACE.days} days at most"
        )
    return _issue(ws, who, subscription_id, grace, _utc(now), "rotate")


def revoke(
    ws: Workspace,
    who: Principal,
    subscription_id: int,
    reason: str,
    now: dt.datetime | None = None,
) -> int:
    """Revoke every working code of a subscription (live or in its grace period), whatever its
    state or resource; how many. Audited ``api.code_revoked`` with their prefixes. An admin's
    revocation stops the department until an admin issues again (see the module's docstring);
    when its requester had revoked them already, the admin's takes the newest code's record
    over (the audit keeps both), so that the stop holds all the same."""
    if not reason.strip():
        raise BadInput("revoking authorization codes needs a reason (--reason)")
    at = _utc(now)
    with _session(ws) as s:
        sub = subscription_row(s, subscription_id)
        _require_holder(who, sub, "revoke")
        rows = s.execute(
            sa.select(ApiCode)
            .where(ApiCode.subscription_id == sub.id, ApiCode.revoked_at.is_(None))
            .order_by(ApiCode.id)
        ).scalars()
        revoked = []
        for row in rows:
            if _working(row, at):
                row.revoked_at, row.revoked_by, row.revoke_reason = at, who.name, reason
                revoked.append(row.prefix)
        stop = who.role == "admin"
        newest = _newest(s, sub) if stop else None
        if newest is not None and not _revoked_by_admin(s, newest):
            newest.revoked_at, newest.revoked_by, newest.revoke_reason = at, who.name, reason
        audit.append(
            s, "api.code_revoked", f"subscription:{sub.id}",
            {"prefixes": revoked, "reason": reason, "resource": sub.resource_code,
             "by_admin": stop, **recorded(who)},
            actor=who.name,
        )  # fmt: skip
        return len(revoked)


def list_codes(
    ws: Workspace,
    who: Principal,
    subscription_id: int | None = None,
    now: dt.datetime | None = None,
) -> list[CodeView]:
    """The codes ``who`` may see (admins all; requesters their department's; providers those
    of the resources they provide), of one subscription or all, oldest first."""
    at = _utc(now)
    with ws.store.session() as s:
        q = (
            sa.select(ApiCode, Subscription)
            .join(Subscription, Subscription.id == ApiCode.subscription_id)
            .order_by(ApiCode.id)
        )
        if subscription_id is not None:
            sub = subscription_row(s, subscription_id)
            if not may_view(ws, who, sub):
                raise Forbidden(f"{_who(who)} may not see subscription {sub.id}")
            q = q.where(ApiCode.subscription_id == subscription_id)
        elif who.role == "requester":
            q = q.where(Subscription.department_code == (who.department or ""))
        return [_view(row, sub, at) for row, sub in s.execute(q) if may_view(ws, who, sub)]


def _view(row: ApiCode, sub: Subscription, now: dt.datetime) -> CodeView:
    return CodeView(
        code_id=row.id,
        subscription_id=sub.id,
        resource_code=sub.resource_code,
        department_code=sub.department_code,
        prefix=row.prefix,
        state=code_state(row, now),
        created_at=shown(row.created_at),
        created_by=row.created_by,
        grace_until=shown(row.grace_until) if row.grace_until is not None else None,
        revoked_at=shown(row.revoked_at) if row.revoked_at is not None else None,
        revoked_by=row.revoked_by,
        revoke_reason=row.revoke_reason,
        replaced_by=row.replaced_by,
    )


# -- checking a call --------------------------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    """What a checked code allows: one subscription's granted fields of one resource."""

    code_id: int
    subscription_id: int
    resource_code: str
    department_code: str | None
    fields: tuple[str, ...]  # the granted field names
    valid_until: dt.date
    lowered: bool  # the department has an open suspension (an overdue effectiveness report)


class Refused(ExchangeError):
    """A gateway call refused for its code, its resource or its subscription: ``status`` 401
    (``unknown``, ``revoked``, ``rotated_out``), 410 (``resource_offline``: an offline notice
    in effect) or 403 (``suspended``, ``expired``, ``not_deliverable``). The message names the
    code by its prefix only.

    Once the code is known (its digest matched: every reason but ``unknown``), the refusal
    also carries whose it is, ``code_id``, ``subscription_id`` and ``department_code``, so
    the gateway's usage row and audit event name the caller: a department trying another
    resource, or a revoked code still in use, is what an auditor looks for. ``None`` when
    the code is unknown (a made-up code is nobody's, even one that guessed a prefix)."""

    terminal = True

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        *,
        code_id: int | None = None,
        subscription_id: int | None = None,
        department_code: str | None = None,
    ):
        self.status, self.reason = status, reason
        self.code_id, self.subscription_id = code_id, subscription_id
        self.department_code = department_code
        super().__init__(message)


UNKNOWN_MESSAGE = "unknown authorization code: give the code the platform issued"


@dataclass(frozen=True)
class _Offline:
    """The offline notice in effect for a code's resource: what its refusal names."""

    notice_id: int
    effective_on: dt.date
    replacement: str | None


@dataclass(frozen=True)
class _Snapshot:
    """One code's row and its subscription as loaded, all a check needs. ``offline`` is
    judged for ``day`` (Asia/Shanghai), the day it was loaded for: a check on another day
    reloads it, so that an offline notice takes effect at 00:00 whatever the cache's time."""

    code_id: int
    prefix: str
    digest: bytes
    revoked_at: dt.datetime | None
    replaced_by: int | None
    grace_until: dt.datetime | None
    subscription_id: int
    status: str
    resource_code: str
    department_code: str | None
    fields: tuple[str, ...]
    valid_until: dt.date
    lowered: bool
    day: dt.date
    offline: _Offline | None


class CodeCache:
    """Checks codes against snapshots of their rows kept in memory for ``ttl_s`` seconds.

    A miss (or a snapshot older than ``ttl_s``, or loaded on another day) loads the code's
    row, its subscription, whether its department is suspended and whether an offline notice
    has taken its resource offline (``offline_notice``: the engine's rule) from the store, by
    prefix, in one short read. So a revocation, a rotation's end of grace, a suspension or a
    removal reaches every gateway process at most ``ttl_s`` seconds (default 1 s,
    ``EXCHANGE_GATEWAY_CACHE_S``) after it is committed; until then a process may still admit
    calls on what it loaded. An offline notice takes effect on its date exactly: a snapshot
    holds for the day it was loaded on, the first check of a new day reloads it. Times in the
    snapshot (grace, usage period) are judged against the ``now`` of each call, so they need
    no reload. Unknown prefixes are remembered too, for as long, so that a client retrying a
    wrong code does not reach the store each time; a string that is not of the code format
    never does. Both memories are bounded, the least recently checked entry going first: at
    most ``max_entries`` codes and ``max_unknown`` unknown prefixes, apart, so that a flood of
    made-up prefixes pushes out only other made-up ones, never the codes being served.
    """

    def __init__(
        self,
        store: Store,
        key: bytes,
        ttl_s: float = 1.0,
        max_entries: int = 100_000,
        max_unknown: int = 10_000,
    ) -> None:
        self._store, self._key, self.ttl_s = store, key, ttl_s
        # Least recently checked first (the end is the last checked); None: no such code.
        self._known: OrderedDict[str, tuple[float, _Snapshot | None]] = OrderedDict()
        self._unknown: OrderedDict[str, tuple[float, _Snapshot | None]] = OrderedDict()
        self._max_known, self._max_unknown = max_entries, max_unknown
        self.loads = 0  # store reads so far (for tests and the gateway's metrics)

    def check(self, code: str, resource_code: str, now: dt.datetime) -> Grant:
        """The grant of ``code`` for a call to ``resource_code`` at ``now`` (aware, or naive
        UTC); raises ``Refused`` (the checks in order: the code, its subscription)."""
        prefix = prefix_of(code) if code else None
        if prefix is None:
            raise Refused(401, "unknown", UNKNOWN_MESSAGE)
        at = _utc(now)
        day = today(at)
        snap = self._snapshot(prefix, day)
        # Constant time, and the HMAC computed even for an unknown prefix.
        if not hmac.compare_digest(digest(self._key, code), snap.digest if snap else _NO_DIGEST):
            raise Refused(401, "unknown", UNKNOWN_MESSAGE)
        assert snap is not None
        return _grant(snap, resource_code, at, day)

    def forget(self, prefix: str | None = None) -> None:
        """Drop one snapshot (or all): the next check reloads it from the store."""
        for entries in (self._known, self._unknown):
            if prefix is None:
                entries.clear()
            else:
                entries.pop(prefix, None)

    def _snapshot(self, prefix: str, day: dt.date) -> _Snapshot | None:
        clock = time.monotonic()
        for entries in (self._known, self._unknown):
            hit = entries.get(prefix)
            fresh = hit is not None and clock - hit[0] < self.ttl_s
            if hit is not None and fresh and (hit[1] is None or hit[1].day == day):
                entries.move_to_end(prefix)
                return hit[1]
        snap = _load(self._store, prefix, day)
        self.loads += 1
        self.forget(prefix)  # a code removed since, or issued since: it moves over
        if snap is not None:
            entries, bound = self._known, self._max_known
        else:
            entries, bound = self._unknown, self._max_unknown
        entries[prefix] = (clock, snap)
        while len(entries) > bound:
            entries.popitem(last=False)
        return snap


def _load(store: Store, prefix: str, day: dt.date) -> _Snapshot | None:
    with store.session() as s:
        found = s.execute(
            sa.select(ApiCode, Subscription)
            .join(Subscription, Subscription.id == ApiCode.subscription_id)
            .where(ApiCode.prefix == prefix)
        ).first()
        if found is None:
            return None
        row, sub = found
        department = sub.department_code
        lowered = bool(department) and open_suspension(s, department or "") is not None
        notice = s.execute(offline_notice(sub.resource_code, day)).scalar()
        return _Snapshot(
            code_id=row.id,
            prefix=row.prefix,
            digest=bytes(row.digest),
            revoked_at=row.revoked_at,
            replaced_by=row.replaced_by,
            grace_until=row.grace_until,
            subscription_id=sub.id,
            status=sub.status,
            resource_code=sub.resource_code,
            department_code=department,
            fields=tuple(sub.fields),
            valid_until=sub.valid_until,
            lowered=lowered,
            day=day,
            offline=_Offline(notice.id, notice.effective_on, notice.replacement)
            if notice is not None
            else None,
        )


def _refused(snap: _Snapshot, status: int, reason: str, message: str) -> Refused:
    """A refusal of a known code (past the digest): it names whose the code is."""
    return Refused(
        status,
        reason,
        message,
        code_id=snap.code_id,
        subscription_id=snap.subscription_id,
        department_code=snap.department_code,
    )


def _grant(snap: _Snapshot, resource_code: str, now: dt.datetime, day: dt.date) -> Grant:
    """The checks after the digest, in order: revoked, rotated out, the resource (another
    one's code; taken offline), then the subscription."""
    code = f"authorization code {snap.prefix}"
    if snap.revoked_at is not None:
        raise _refused(snap, 401, "revoked", f"{code} was revoked on {shown(snap.revoked_at)}")
    if snap.replaced_by is not None and (snap.grace_until is None or snap.grace_until <= now):
        ended = shown(snap.grace_until) if snap.grace_until is not None else "at once"
        raise _refused(
            snap, 401, "rotated_out", f"{code} was replaced by a new code; its grace ended {ended}"
        )
    sub = f"subscription {snap.subscription_id}"
    if snap.resource_code != resource_code:
        # Before the subscription's state: whatever that is, this code never serves this
        # resource, and its holder learns nothing of that resource's subscriptions.
        raise _refused(snap, 403, "not_deliverable", f"{code} is not for resource {resource_code}")
    if snap.offline is not None:
        # Before the subscription's state: gone for every subscriber, and what to apply for
        # instead is what its holder needs to know.
        raise _refused(snap, 410, "resource_offline", _offline_message(resource_code, snap.offline))
    if snap.status == st.SUSPENDED:
        raise _refused(snap, 403, "suspended", f"{code}: {sub} is suspended by the platform")
    if snap.status == st.EXPIRED or snap.valid_until < day:
        raise _refused(
            snap, 403, "expired", f"{code}: {sub}'s usage period ended on {snap.valid_until}"
        )
    if snap.status not in st.DELIVERABLE:
        raise _refused(snap, 403, "not_deliverable", f"{code}: {sub} is {snap.status}")
    return Grant(
        code_id=snap.code_id,
        subscription_id=snap.subscription_id,
        resource_code=snap.resource_code,
        department_code=snap.department_code,
        fields=snap.fields,
        valid_until=snap.valid_until,
        lowered=snap.lowered,
    )


def _offline_message(resource_code: str, offline: _Offline) -> str:
    instead = (
        f"; apply for its replacement {offline.replacement}"
        if offline.replacement
        else "; no replacement is named"
    )
    return (
        f"resource {resource_code} is offline since {offline.effective_on} "
        f"(notice {offline.notice_id}){instead}"
    )
