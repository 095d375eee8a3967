"""Account applications: a department applies for a platform, database or FTP account (or
its reset); a unit's application first needs its supervising department's consent (a clock
of its own); the platform answers within 2 working days on the one calendar: it issues the
account or rejects the application. The CLI and the REST API call these same functions.

Every step is a row of history and an ``account.<action>`` audit event naming who, of which
department, for which department, when and why; the contact's phone and e-mail and any
secret stay out of the audit log. A secret issued is returned once, in ``Issued``: a platform
user's password is kept only as its argon2id hash, a database or FTP account's not at all.
"""

from __future__ import annotations

import datetime as dt
from contextlib import AbstractContextManager
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.orm import Session

from exchange import audit
from exchange.accounts import states as ast
from exchange.accounts.config import AccountSettings
from exchange.accounts.departments import Acting, acting_for, lookup
from exchange.accounts.forms import AccountForm, mask_phone
from exchange.accounts.models import AccountApplication, AccountClock, AccountTransition
from exchange.catalog.model import UNIT_LEVELS
from exchange.kernel.clock import utcnow
from exchange.kernel.errors import BadInput, Forbidden, NotFound
from exchange.kernel.workdays import WorkCalendar, default_calendar
from exchange.store import Store
from exchange.store.locks import locked_session, serialize
from exchange.workflow import notifications, sla
from exchange.workflow.models import User
from exchange.workflow.users import Principal, create_user, set_password
from exchange.workspace import Workspace

PLATFORM = "platform"
PLATFORM_RECIPIENT = "platform:platform"
REMINDER_INTERVAL = sla.REMINDER_INTERVAL["normal"]  # as a pending reviewer is reminded
APPLICANT_ROLES = ("requester", "provider", "admin")


class AccountStep(BaseModel):
    at: str
    action: str
    from_state: str | None
    to_state: str
    actor: str
    actor_department: str | None
    reason: str | None


class AccountDeadline(BaseModel):
    kind: str  # consent | answer
    party: str
    started: str
    due: str
    provisional: bool
    status: str  # running | overdue | met | late | cancelled


class AccountView(BaseModel):
    """An application as the CLI and the API show it (the phone masked)."""

    id: int
    state: str
    account_type: str
    application_type: str
    department_code: str
    acting_department: str | None
    supervisor: str | None
    responsible_person: str
    position: str
    phone: str
    email: str
    reason: str
    existing_login: str | None
    node: str | None
    applicant: str
    applied_at: str
    login: str | None
    reach: str | None
    decision_reason: str | None
    deadlines: list[AccountDeadline]
    history: list[AccountStep] | None = None


class Issued(BaseModel):
    """What ``issue`` answers: the application, and the credential shown this once."""

    application: AccountView
    login: str | None
    secret: str | None
    reach: str | None


def _session(ws: Workspace) -> AbstractContextManager[Session]:
    return locked_session(ws.store)


def _get(s: Session, application_id: int) -> AccountApplication:
    app = s.get(AccountApplication, application_id)
    if app is None:
        raise NotFound(f"no account application {application_id}")
    return app


def _actor_kind(who: Principal, app: AccountApplication) -> str:
    """``admin``, ``supervisor`` (of the application's supervising department) or the role."""
    if who.role == "admin":
        return "admin"
    if app.supervisor is not None and who.department == app.supervisor:
        return "supervisor"
    return who.role


def may_view(who: Principal, app: AccountApplication) -> bool:
    """Admins see all; a department's users its own and, as supervisor, its units'."""
    if who.role == "admin":
        return True
    return bool(who.department) and who.department in (app.department_code, app.supervisor)


def _visible(who: Principal) -> sa.ColumnElement[bool]:
    if who.role == "admin":
        return sa.true()
    if not who.department:
        return sa.false()
    return sa.or_(
        AccountApplication.department_code == who.department,
        AccountApplication.supervisor == who.department,
    )


# -- history, audit, clocks -------------------------------------------------------------------


def _record(
    s: Session,
    app: AccountApplication,
    action: str,
    source: str | None,
    who: Principal,
    at: dt.datetime,
    reason: str | None,
    extra: dict[str, Any] | None = None,
) -> None:
    actor_department = app.acting_department if action == "apply" else who.department
    s.add(
        AccountTransition(
            application_id=app.id, action=action, from_state=source, to_state=app.state,
            actor=who.name, actor_department=actor_department, reason=reason, at=at,
        )
    )  # fmt: skip
    audit.append(
        s,
        f"account.{action}",
        f"account:{app.id}",
        {
            "from": source,
            "to": app.state,
            "reason": reason,
            "at": at,
            "department": app.department_code,
            "actor_department": actor_department,
            "account_type": app.account_type,
            "application_type": app.application_type,
            **(extra or {}),
        },
        actor=who.name,
    )  # fmt: skip  (no phone, no e-mail, never a secret)


def _step(
    s: Session,
    app: AccountApplication,
    action: str,
    who: Principal,
    at: dt.datetime,
    reason: str | None,
    extra: dict[str, Any] | None = None,
) -> None:
    source = app.state
    app.state = ast.next_state(
        source, action, _actor_kind(who, app), subject=f"account application {app.id}"
    )
    app.state_changed_at = at
    _record(s, app, action, source, who, at, reason, extra)


def _start_clock(
    s: Session,
    app: AccountApplication,
    kind: str,
    party_kind: str,
    party: str,
    at: dt.datetime,
    days: int,
    calendar: WorkCalendar | None,
) -> AccountClock:
    due = (calendar or default_calendar()).add_working_days(at, days)
    clock = AccountClock(
        application_id=app.id, kind=kind, party_kind=party_kind, party=party, started_at=at,
        due_at=due.utc, working_days=days, provisional=due.provisional, reminders_sent=0,
    )  # fmt: skip
    s.add(clock)
    s.flush()
    return clock


def _clock(s: Session, application_id: int, kind: str) -> AccountClock | None:
    return s.execute(
        sa.select(AccountClock).where(
            AccountClock.application_id == application_id, AccountClock.kind == kind
        )
    ).scalar()


def _stop_clock(
    s: Session, app: AccountApplication, kind: str, at: dt.datetime, *, cancelled: bool = False
) -> None:
    clock = _clock(s, app.id, kind)
    if clock is None or clock.stopped_at is not None:
        return
    clock.stopped_at = at
    if cancelled:
        clock.outcome = "cancelled"
    elif at > clock.due_at:
        clock.outcome = "late"
        _breach(s, clock)
    else:
        clock.outcome = "met"


def _breach(s: Session, clock: AccountClock) -> bool:
    """Record once that ``clock`` passed its deadline (dated at it): audit and notification,
    as ``sla.record_breach`` records a subscription's."""
    if clock.breached_at is not None:
        return False
    clock.breached_at = clock.due_at
    audit.append(
        s, "account.breached", f"account:{clock.application_id}",
        {"deadline": clock.kind, "party": _party(clock.party_kind, clock.party),
         "due": clock.due_at, "provisional": clock.provisional},
        actor="housekeeping",
    )  # fmt: skip
    notifications.notify(
        s, "account.breached", f"{clock.party_kind}:{clock.party}",
        {"application": clock.application_id, "deadline": clock.kind,
         "due": sla.show(clock.due_at, clock.provisional)},
        key=f"account.breached:{clock.application_id}:{clock.kind}",
    )  # fmt: skip
    return True


def _ask_platform(
    s: Session, app: AccountApplication, at: dt.datetime, settings: AccountSettings,
    calendar: WorkCalendar | None,
) -> None:  # fmt: skip
    clock = _start_clock(s, app, "answer", "platform", PLATFORM, at, settings.answer_days, calendar)
    notifications.notify(
        s, "account.requested", PLATFORM_RECIPIENT,
        {"application": app.id, "department": app.department_code,
         "account_type": app.account_type, "due": sla.show(clock.due_at, clock.provisional)},
        key=f"account.requested:{app.id}",
    )  # fmt: skip


# -- the actions ------------------------------------------------------------------------------


def apply(
    ws: Workspace,
    who: Principal,
    form: AccountForm,
    now: dt.datetime | None = None,
    *,
    settings: AccountSettings | None = None,
    calendar: WorkCalendar | None = None,
) -> AccountView:
    """File an application (or a reset: ``application_type: reset``). A unit's own waits for
    its supervisor's consent; one its supervisor files for it (where the platform allows it)
    and every other goes to the platform, whose answer clock starts."""
    now = now or utcnow()
    settings = settings or AccountSettings.from_env()
    if who.role not in APPLICANT_ROLES:
        raise Forbidden(f"{who.describe()} may not apply for an account")
    form.check()
    with _session(ws) as s:
        acting = acting_for(
            s, ws.catalog, who, form.department_code, allowed=settings.supervisor_acts_for_units
        )
        department = lookup(s, ws.catalog, acting.department)
        _check_form(s, ws, form, acting)
        unit = department.level in UNIT_LEVELS and department.supervisor is not None
        by_supervisor = unit and acting.actor_department == department.supervisor
        app = AccountApplication(
            account_type=form.account_type, application_type=form.application_type,
            department_code=acting.department,
            acting_department=acting.actor_department if acting.on_behalf else None,
            supervisor=department.supervisor if unit else None,
            responsible_person=form.responsible_person, position=form.position,
            phone=form.phone, email=form.email, reason=form.reason,
            existing_login=form.existing_login, node=form.node, applicant=who.name,
            state=ast.AWAITING_CONSENT if unit and not by_supervisor else ast.PENDING,
            created_at=now, state_changed_at=now,
        )  # fmt: skip
        s.add(app)
        s.flush()
        extra = {"existing_login": form.existing_login, "node": form.node}
        if by_supervisor:
            extra["consent"] = f"given by applying: {acting.actor_department} supervises it"
        _record(s, app, "apply", None, who, now, form.reason, extra)
        if app.state == ast.AWAITING_CONSENT:
            assert app.supervisor is not None
            clock = _start_clock(
                s, app, "consent", "supervisor", app.supervisor, now, settings.consent_days,
                calendar,
            )  # fmt: skip
            notifications.notify(
                s, "account.consent_requested", f"supervisor:{app.supervisor}",
                {"application": app.id, "department": app.department_code,
                 "due": sla.show(clock.due_at, clock.provisional)},
                key=f"account.consent_requested:{app.id}",
            )  # fmt: skip
        else:
            _ask_platform(s, app, now, settings, calendar)
        return view_of(s, app, now)


def _resettable(s: Session, login: str | None, department: str) -> None:
    """``login`` is a platform account of ``department`` whose password a reset may replace:
    never an admin's (an admin belongs to no department's application, whatever its row says)."""
    user = s.execute(sa.select(User).where(User.name == login)).scalar()
    if user is None or user.department != department:
        raise BadInput(
            f"existing_login: {login!r} is no platform account of department {department}"
        )
    if user.role == "admin":
        raise Forbidden(
            f"existing_login: {login!r} is a platform admin: an application cannot reset it"
        )


def _check_form(s: Session, ws: Workspace, form: AccountForm, acting: Acting) -> None:
    """A reset names an account of the department; a node is the department's own or the
    platform's (a node of no department, where each department gets an area of its own)."""
    if form.application_type == "reset" and form.account_type == "platform":
        _resettable(s, form.existing_login, acting.department)
    if form.node is not None:
        node = ws.catalog.node(form.node)
        if node.department not in (acting.department, ""):
            raise Forbidden(
                f"node: {form.node} is a front-end node of department {node.department}, not "
                f"of {acting.department}"
            )


def _decide(
    ws: Workspace, who: Principal, application_id: int, action: str, reason: str | None,
    now: dt.datetime | None, settings: AccountSettings | None, calendar: WorkCalendar | None,
) -> AccountView:  # fmt: skip
    now = now or utcnow()
    with _session(ws) as s:
        app = _get(s, application_id)
        if not may_view(who, app):
            raise Forbidden(f"{who.describe()} may not {action} account application {app.id}")
        if action in ("refuse", "reject") and not (reason or "").strip():
            raise BadInput(f"{action}: give the reason")
        _step(s, app, action, who, now, reason)
        if action == "consent":
            _stop_clock(s, app, "consent", now)
            _ask_platform(s, app, now, settings or AccountSettings.from_env(), calendar)
        elif action == "refuse":
            _stop_clock(s, app, "consent", now)
            app.decision_reason = reason
        else:  # reject
            _stop_clock(s, app, "answer", now)
            app.decision_reason = reason
        if action != "consent":
            notifications.notify(
                s, f"account.{action}d" if action.endswith("e") else f"account.{action}ed",
                f"requester:{app.department_code}", {"application": app.id, "reason": reason},
                key=f"account.{action}:{app.id}",
            )  # fmt: skip
        return view_of(s, app, now)


def consent(
    ws: Workspace, who: Principal, application_id: int, reason: str | None = None,
    now: dt.datetime | None = None, *, settings: AccountSettings | None = None,
    calendar: WorkCalendar | None = None,
) -> AccountView:  # fmt: skip
    """The supervising department consents (经主管部门同意): the platform's clock starts."""
    return _decide(ws, who, application_id, "consent", reason, now, settings, calendar)


def refuse(
    ws: Workspace, who: Principal, application_id: int, reason: str,
    now: dt.datetime | None = None,
) -> AccountView:  # fmt: skip
    """The supervising department refuses its consent (with the reason)."""
    return _decide(ws, who, application_id, "refuse", reason, now, None, None)


def reject(
    ws: Workspace, who: Principal, application_id: int, reason: str,
    now: dt.datetime | None = None,
) -> AccountView:  # fmt: skip
    """The platform rejects the application (with the reason)."""
    return _decide(ws, who, application_id, "reject", reason, now, None, None)


def issue(
    ws: Workspace,
    who: Principal,
    application_id: int,
    *,
    login: str | None = None,
    role: str = "requester",
    note: str | None = None,
    now: dt.datetime | None = None,
) -> Issued:
    """The platform answers: a platform account is an exchange user with a generated password
    (a reset: a new password for the existing user, the old no longer signs in); a database
    or FTP account is provisioned on the department's node; an ``other`` application is
    answered with ``note``. The secret is in the answer only."""
    if who.role != "admin":
        raise Forbidden(f"{who.describe()} may not issue accounts: only a platform admin may")
    # One transaction under the writers' lock from the check to the record: a second issue
    # of the same application (a retry) waits, then finds it issued, instead of provisioning
    # again and replacing the credential the first one handed out.
    with _session(ws) as s:
        app = _get(s, application_id)
        ast.next_state(app.state, "issue", "admin", subject=f"account application {app.id}")
        kind, apptype, department, node = (
            app.account_type, app.application_type, app.department_code, app.node,
        )  # fmt: skip
        existing = app.existing_login
        secret: str | None = None
        reach: str | None = None
        if apptype == "other":
            if not (note or "").strip():
                raise BadInput("issue: an 'other' application is answered with --note")
            issued_login = None
        elif kind == "platform":
            from exchange.accounts.secrets import generate_password

            secret = generate_password()
            issued_login = (
                existing if apptype == "reset" else (login or f"{department}-{application_id}")
            )
            reach = f"the exchange platform as a {role} of department {department}"
        else:
            from exchange.accounts.provision import issue_account

            got = issue_account(
                ws, department=department, account_type=kind, node=node, reset=apptype == "reset"
            )
            issued_login, secret, reach = got.login, got.secret, got.reach
        now = now or utcnow()
        if kind == "platform" and apptype != "other":
            assert issued_login is not None and secret is not None
            if apptype == "new":
                create_user(s, issued_login, role, department, who.name, ws.catalog.departments)
            else:  # again at issue: the user may have changed since the application
                _resettable(s, issued_login, department)
            set_password(s, issued_login, secret, who.name, at=now)
        app.login, app.reach = issued_login, reach
        app.decision_reason = note
        _step(s, app, "issue", who, now, note, {"login": issued_login, "reach": reach})
        _stop_clock(s, app, "answer", now)
        notifications.notify(
            s,
            "account.issued",
            f"requester:{app.department_code}",
            {"application": app.id, "login": issued_login, "reach": reach},
            key=f"account.issued:{app.id}",
        )  # fmt: skip (the secret goes to the applicant in the answer, never in a message)
        view = view_of(s, app, now)
    return Issued(application=view, login=issued_login, secret=secret, reach=reach)


def show(ws: Workspace, who: Principal, application_id: int) -> AccountView:
    """One application with its history."""
    with ws.store.session() as s:
        app = _get(s, application_id)
        if not may_view(who, app):
            raise Forbidden(f"{who.describe()} may not see account application {app.id}")
        return view_of(s, app, utcnow(), detail=True)


def list_page(
    ws: Workspace, who: Principal, *, state: str | None = None, limit: int = 50, offset: int = 0
) -> tuple[int, list[AccountView]]:
    """The applications ``who`` may see, in id order."""
    if state is not None and state not in ast.STATES:
        raise BadInput(f"state {state!r} is not one of {', '.join(ast.STATES)}")
    q = sa.select(AccountApplication).where(_visible(who))
    if state is not None:
        q = q.where(AccountApplication.state == state)
    now = utcnow()
    with ws.store.session() as s:
        total = s.scalar(sa.select(sa.func.count()).select_from(q.subquery())) or 0
        rows = s.scalars(q.order_by(AccountApplication.id).limit(limit).offset(offset))
        return total, [view_of(s, a, now) for a in rows]


def view_of(
    s: Session, app: AccountApplication, now: dt.datetime, *, detail: bool = False
) -> AccountView:
    clocks = s.scalars(
        sa.select(AccountClock)
        .where(AccountClock.application_id == app.id)
        .order_by(AccountClock.id)
    )
    history = None
    if detail:
        history = [
            AccountStep(
                at=sla.show(t.at), action=t.action, from_state=t.from_state, to_state=t.to_state,
                actor=t.actor, actor_department=t.actor_department, reason=t.reason,
            )
            for t in s.scalars(
                sa.select(AccountTransition)
                .where(AccountTransition.application_id == app.id)
                .order_by(AccountTransition.id)
            )
        ]  # fmt: skip
    return AccountView(
        id=app.id, state=app.state, account_type=app.account_type,
        application_type=app.application_type, department_code=app.department_code,
        acting_department=app.acting_department, supervisor=app.supervisor,
        responsible_person=app.responsible_person, position=app.position,
        phone=mask_phone(app.phone), email=app.email, reason=app.reason,
        existing_login=app.existing_login, node=app.node, applicant=app.applicant,
        applied_at=sla.show(app.created_at), login=app.login, reach=app.reach,
        decision_reason=app.decision_reason,
        deadlines=[_deadline(c, now) for c in clocks], history=history,
    )  # fmt: skip


def _deadline(c: AccountClock, now: dt.datetime) -> AccountDeadline:
    if c.stopped_at is None:
        status = "overdue" if now > c.due_at else "running"
    else:
        status = c.outcome or "met"
    return AccountDeadline(
        kind=c.kind, party=_party(c.party_kind, c.party), started=sla.show(c.started_at),
        due=sla.show(c.due_at, c.provisional), provisional=c.provisional, status=status,
    )  # fmt: skip


# -- housekeeping -----------------------------------------------------------------------------


class AccountTickReport(BaseModel):
    reminders: int = 0
    breaches: int = 0
    deadlines_recomputed: int = 0
    rotation_reminders: int = 0  # issued credentials past EXCHANGE_CREDENTIAL_MAX_AGE_DAYS


def tick(
    store: Store,
    now: dt.datetime | None = None,
    *,
    calendar: WorkCalendar | None = None,
    settings: AccountSettings | None = None,
) -> AccountTickReport:
    """The account clocks' part of housekeeping, as the subscriptions' clocks are kept:
    a reminder to the awaited party every 24 hours, a breach (once, dated at the deadline)
    once overdue, provisional deadlines recomputed; then the issued credentials due for
    rotation, their departments reminded once per age period. Idempotent for the same
    ``now``."""
    from exchange.accounts.rotation import remind

    now = now or utcnow()
    settings = settings or AccountSettings.from_env()
    report = AccountTickReport()
    cal = calendar or default_calendar()
    with store.session() as s:
        serialize(s)
        running = s.scalars(
            sa.select(AccountClock)
            .where(AccountClock.stopped_at.is_(None))
            .order_by(AccountClock.due_at, AccountClock.id)
        ).all()
        for clock in running:
            if clock.provisional:
                due = cal.add_working_days(clock.started_at, clock.working_days)
                if (due.utc, due.provisional) != (clock.due_at, clock.provisional):
                    clock.due_at, clock.provisional = due.utc, due.provisional
                    report.deadlines_recomputed += 1
            if now > clock.due_at:
                report.breaches += _breach(s, clock)
                continue
            slot = int((now - clock.started_at) / REMINDER_INTERVAL)
            if slot >= 1 and slot > clock.reminders_sent:
                clock.reminders_sent = slot
                notifications.notify(
                    s, "account.reminder", f"{clock.party_kind}:{clock.party}",
                    {"application": clock.application_id, "deadline": clock.kind,
                     "reminder": slot, "due": sla.show(clock.due_at, clock.provisional)},
                    key=f"account.reminder:{clock.application_id}:{clock.kind}:{slot}",
                )  # fmt: skip
                report.reminders += 1
        report.rotation_reminders = remind(s, now, settings.credential_max_age_days)
    return report


def _party(kind: str, who: str) -> str:
    """An awaited party as people read it: "supervisor 1141...", "platform" (not "platform
    platform": the platform is a party of its own, not a department)."""
    return kind if who == kind else f"{kind} {who}"
