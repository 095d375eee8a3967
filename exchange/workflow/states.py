"""The subscription state machine, as data: states, actions and who may take each.

申请 → 审核 (conditional only) → 备案 → 实施 → 签收 → 评价 → 办结, with 驳回 (rejected), 撤销
(withdrawn, before implementation), 过期 (expired: the usage period is over), 暂停/恢复
(suspended / resumed) and removed (a platform admin's correction of a subscription that should
never have existed: kept with its history and deliveries, never delivered again).
``next_state`` is the only place a new state is decided.
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
REMOVED = "removed"

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
    REMOVED,
)
#: Approved and in use: the states in which the engine delivers (when not expired or suspended).
DELIVERABLE: frozenset[str] = frozenset({IMPLEMENTATION, SIGN_OFF, EVALUATION, CLOSED})
#: Nothing more happens to a subscription in these states.
FINAL: frozenset[str] = frozenset({REJECTED, WITHDRAWN, EXPIRED, REMOVED})
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


def edges(action: str, sources: Iterable[str], target: str, *by: str) -> list[Transition]:
    """One edge per source state: ``action`` takes each of ``sources`` to ``target``."""
    return [Transition(action, s, target, frozenset(by)) for s in sorted(sources)]


TRANSITIONS: tuple[Transition, ...] = tuple(
    edges("submit_for_review", {APPLIED}, UNDER_REVIEW, "system")
    + edges("file", {APPLIED}, FILING, "system")  # unconditional: 自动备案
    + edges("approve", {UNDER_REVIEW}, FILING, "provider", "admin", "system")
    + edges("reject", {UNDER_REVIEW}, REJECTED, "provider", "admin", "system")
    + edges("start_implementation", {FILING}, IMPLEMENTATION, "system")
    + edges("withdraw", PENDING, WITHDRAWN, "requester", "admin")
    + edges("deliver", {IMPLEMENTATION}, SIGN_OFF, "engine", "admin")
    + edges("sign_off", {SIGN_OFF}, EVALUATION, "requester", "admin", "system")
    + edges("evaluate", {EVALUATION}, CLOSED, "requester", "admin", "system")
    + edges("expire", DELIVERABLE | {SUSPENDED}, EXPIRED, "system")
    + edges("suspend", set(DELIVERABLE), SUSPENDED, "admin")
    # resume returns to the state held before the suspension (see ``next_state``)
    + edges("resume", {SUSPENDED}, SUSPENDED, "admin")
    + edges("remove", set(STATES) - FINAL, REMOVED, "admin")
)


@dataclass(frozen=True)
class Machine:
    """A state machine as its edges: the checks every step of it is refused by (an unknown
    action, a state it is not allowed from, an actor who may not take it), in one place for
    the subscription's machine and the upstream application's."""

    transitions: tuple[Transition, ...]

    @property
    def actions(self) -> frozenset[str]:
        return frozenset(t.action for t in self.transitions)

    def allowed_actions(self, state: str) -> list[str]:
        """The actions ``state`` accepts."""
        return sorted(t.action for t in self.transitions if t.source == state)

    def edge(self, state: str, action: str, actor: str, *, subject: str = "") -> Transition:
        """The edge ``action`` by an ``actor`` kind takes from ``state``; an illegal step raises
        with the reason, naming ``subject``."""
        who = f"{subject} " if subject else ""
        if action not in self.actions:
            raise IllegalTransition(
                f"unknown action {action!r} (actions: {', '.join(sorted(self.actions))})"
            )
        edge = next((t for t in self.transitions if (t.source, t.action) == (state, action)), None)
        if edge is None:
            sources = sorted(t.source for t in self.transitions if t.action == action)
            raise IllegalTransition(
                f"{who}is in state {state}: {action} is allowed only from {', '.join(sources)}"
            )
        if actor not in edge.by:
            raise IllegalTransition(
                f"{who}{action} is done by {' or '.join(sorted(edge.by))}, not by {actor}"
            )
        return edge


MACHINE = Machine(TRANSITIONS)
ACTIONS: frozenset[str] = MACHINE.actions
allowed_actions = MACHINE.allowed_actions


def next_state(
    state: str, action: str, actor: str, *, resume_to: str | None = None, subject: str = ""
) -> str:
    """The state after ``action`` by an ``actor`` kind; an illegal step raises with the reason."""
    edge = MACHINE.edge(state, action, actor, subject=subject)
    if action == "resume":
        if resume_to not in DELIVERABLE:
            who = f"{subject} " if subject else ""
            raise IllegalTransition(f"{who}has no state to resume to ({resume_to!r})")
        return resume_to
    return edge.target


def is_legal_state(state: str) -> bool:
    """Whether ``state`` is one of the machine's states."""
    return state in STATES
