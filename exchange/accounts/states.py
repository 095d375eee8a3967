"""The account application's state machine, as data (the subscription's ``Machine``).

A unit's application (second-level unit, county department) first waits for its supervising
department's consent; every other one, and a unit's once consented, waits for the platform,
which issues the account or rejects the application::

    awaiting_consent --consent--> pending --issue--> issued
    awaiting_consent --refuse--> refused      pending --reject--> rejected

The actor kinds: ``supervisor`` (a user of the application's supervising department),
``admin`` (the platform).
"""

from __future__ import annotations

from exchange.workflow.states import Machine, Transition, edges

AWAITING_CONSENT = "awaiting_consent"
PENDING = "pending"
ISSUED = "issued"
REJECTED = "rejected"
REFUSED = "refused"

STATES: tuple[str, ...] = (AWAITING_CONSENT, PENDING, ISSUED, REJECTED, REFUSED)
#: Nothing more happens to an application in these states.
FINAL: frozenset[str] = frozenset({ISSUED, REJECTED, REFUSED})

TRANSITIONS: tuple[Transition, ...] = tuple(
    edges("consent", {AWAITING_CONSENT}, PENDING, "supervisor", "admin")
    + edges("refuse", {AWAITING_CONSENT}, REFUSED, "supervisor", "admin")
    + edges("issue", {PENDING}, ISSUED, "admin")
    + edges("reject", {PENDING}, REJECTED, "admin")
)
MACHINE = Machine(TRANSITIONS)


def next_state(state: str, action: str, actor_kind: str, *, subject: str = "") -> str:
    """The state after ``action`` by an ``actor_kind``; an illegal step raises with why."""
    return MACHINE.edge(state, action, actor_kind, subject=subject).target
