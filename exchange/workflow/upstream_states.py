"""The upstream application's state machine, as data: states, actions and who may take each.

A department asks for a national or provincial resource the city does not proxy yet (001 五,
002): the platform forwards the request upstream (转交), records the upstream decision
and its approval reference, and once the city proxies the resource (代理: it is in the city
catalog, ``origin`` naming it) the department's own application is filed as a subscription.

drafted → forwarded → approved_upstream → proxied, or forwarded → rejected_upstream; the
requester withdraws before a decision (drafted, forwarded → withdrawn). ``next_state`` is the
only place a new state is decided.
"""

from __future__ import annotations

from exchange.workflow.states import Machine, Transition, edges

DRAFTED = "drafted"
FORWARDED = "forwarded"
APPROVED_UPSTREAM = "approved_upstream"
REJECTED_UPSTREAM = "rejected_upstream"
PROXIED = "proxied"
WITHDRAWN = "withdrawn"

STATES: tuple[str, ...] = (
    DRAFTED,
    FORWARDED,
    APPROVED_UPSTREAM,
    REJECTED_UPSTREAM,
    PROXIED,
    WITHDRAWN,
)
#: Nothing more happens to an upstream application in these states.
FINAL: frozenset[str] = frozenset({REJECTED_UPSTREAM, PROXIED, WITHDRAWN})
#: Before the upstream decision: the requester may still withdraw.
UNDECIDED: frozenset[str] = frozenset({DRAFTED, FORWARDED})


TRANSITIONS: tuple[Transition, ...] = tuple(
    edges("forward", {DRAFTED}, FORWARDED, "admin")  # the city forwards it upstream (转交)
    + edges("approve", {FORWARDED}, APPROVED_UPSTREAM, "admin")  # the upstream decision, recorded
    + edges("reject", {FORWARDED}, REJECTED_UPSTREAM, "admin")
    + edges("proxy", {APPROVED_UPSTREAM}, PROXIED, "admin")  # in the city catalog: form filed
    + edges("withdraw", UNDECIDED, WITHDRAWN, "requester", "admin")
)
MACHINE = Machine(TRANSITIONS)
ACTIONS: frozenset[str] = MACHINE.actions
allowed_actions = MACHINE.allowed_actions


def next_state(state: str, action: str, role: str, *, subject: str = "") -> str:
    """The state after ``action`` by a ``role``; an illegal step raises with the reason."""
    return MACHINE.edge(state, action, role, subject=subject).target
