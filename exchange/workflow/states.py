"""The subscription state machine, as data: states, actions and who may take each.

申请 → 审核 (conditional only) → 备案 → 实施 → 签收 → 评价 → 办结, with 驳回 (rejected), 撤销
(withdrawn, before implementation), 过期 (expired: the usage period is over) and 暂停/恢复
(suspended / resumed). ``next_state`` is the only place a new state is decided.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from exchange.kernel.errors import IllegalTransition

APPLIED = "applied"
UNDER_REVIEW = "under_review"
FILING = "filing"
IMPLEMENTATION = "implementation"
SIGN_OFF = "sign_off"
EVALUATION = "evaluation"
CLOSED = "closed"
REJECTED = "rejected"
WITHDRAWN = "withdrawn"
EXPIRED = "expired"
SUSPENDED = "suspended"

STATES: tuple[str, ...] = (
    APPLIED,
    UNDER_REVIEW,
    FILING,
    IMPLEMENTATION,
    SIGN_OFF,
    EVALUATION,
    CLOSED,
    REJECTED,
    WITHDRAWN,
    EXPIRED,
    SUSPENDED,
)
#: Approved and in use: the states in which the engine delivers (when not expired or suspended).
DELIVERABLE: frozenset[str] = frozenset({IMPLEMENTATION, SIGN_OFF, EVALUATION, CLOSED})
#: Nothing more happens to a subscription in these states.
FINAL: frozenset[str] = frozenset({REJECTED, WITHDRAWN, EXPIRED})
#: Before implementation: the requester may still withdraw.
PENDING: frozenset[str] = frozenset({APPLIED, UNDER_REVIEW, FILING})

Actor = Literal["requester", "provider", "admin", "system", "engine"]


@dataclass(frozen=True)
class Transition:
    """One edge: ``action`` takes a subscription from ``source`` to ``target``."""

    action: str
    source: str
    target: str
    by: frozenset[str]  # the kinds of actor that may take it


def _t(action: str, sources: Iterable[str], target: str, *by: str) -> list[Transition]:
    return [Transition(action, s, target, frozenset(by)) for s in sorted(sources)]


TRANSITIONS: tuple[Transition, ...] = tuple(
    _t("submit_for_review", {APPLIED}, UNDER_REVIEW, "system")
    + _t("file", {APPLIED}, FILING, "system")  # unconditional: 自动备案
    + _t("approve", {UNDER_REVIEW}, FILING, "provider", "admin", "system")
    + _t("reject", {UNDER_REVIEW}, REJECTED, "provider", "admin", "system")
    + _t("start_implementation", {FILING}, IMPLEMENTATION, "system")
    + _t("withdraw", PENDING, WITHDRAWN, "requester", "admin")
    + _t("deliver", {IMPLEMENTATION}, SIGN_OFF, "engine", "admin")
    + _t("sign_off", {SIGN_OFF}, EVALUATION, "requester", "admin", "system")
    + _t("evaluate", {EVALUATION}, CLOSED, "requester", "admin", "system")
    + _t("expire", DELIVERABLE | {SUSPENDED}, EXPIRED, "system")
    + _t("suspend", set(DELIVERABLE), SUSPENDED, "admin")
    # resume returns to the state held before the suspension (see ``next_state``)
    + _t("resume", {SUSPENDED}, SUSPENDED, "admin")
)
ACTIONS: frozenset[str] = frozenset(t.action for t in TRANSITIONS)
_BY_KEY = {(t.source, t.action): t for t in TRANSITIONS}


def allowed_actions(state: str) -> list[str]:
    """The actions a subscription in ``state`` accepts."""
    return sorted(t.action for t in TRANSITIONS if t.source == state)


def next_state(
    state: str, action: str, actor: str, *, resume_to: str | None = None, subject: str = ""
) -> str:
    """The state after ``action`` by an ``actor`` kind; an illegal step raises with the reason."""
    who = f"{subject} " if subject else ""
    if action not in ACTIONS:
        raise IllegalTransition(
            f"unknown action {action!r} (actions: {', '.join(sorted(ACTIONS))})"
        )
    edge = _BY_KEY.get((state, action))
    if edge is None:
        sources = sorted(t.source for t in TRANSITIONS if t.action == action)
        raise IllegalTransition(
            f"{who}is in state {state}: {action} is allowed only from {', '.join(sources)}"
        )
    if actor not in edge.by:
        raise IllegalTransition(
            f"{who}{action} is done by {' or '.join(sorted(edge.by))}, not by {actor}"
        )
    if action == "resume":
        if resume_to not in DELIVERABLE:
            raise IllegalTransition(f"{who}has no state to resume to ({resume_to!r})")
        return resume_to
    return edge.target


def is_legal_state(state: str) -> bool:
    """Whether ``state`` is one of the machine's states."""
    return state in STATES
