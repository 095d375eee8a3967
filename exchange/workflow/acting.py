"""Who may act for which department: the rule, given the department rows (their codes and
supervisors), without the rows themselves (they live in ``exchange.accounts``, above).

A user acts for its own department. A platform admin acts for any department it names. A user
of a supervising department acts for one of its units (a second-level unit, a county
department: a row whose ``supervisor`` is the user's department) only where the platform's
setting allows it (``EXCHANGE_SUPERVISOR_ACTS_FOR_UNITS``), and only naming the unit. Such a
user is then a ``Principal`` of the unit that remembers its own department (``acting_from``):
every check of the workflow sees the unit, every step it takes records both departments.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from exchange.kernel.errors import BadInput, Forbidden
from exchange.workflow.users import Principal

SETTING = "EXCHANGE_SUPERVISOR_ACTS_FOR_UNITS"


@dataclass(frozen=True)
class Acting:
    """Who acts for which department: ``department`` is the one acted for, ``actor_department``
    the actor's own (differs when a supervising department acts for its unit; None: an admin)."""

    department: str
    actor_department: str | None

    @property
    def on_behalf(self) -> bool:
        return self.actor_department is not None and self.actor_department != self.department


def decide(who: Principal, code: str | None, supervisor: str | None, *, allowed: bool) -> Acting:
    """The department ``who`` acts for when it names ``code`` (None: its own), the unit whose
    supervising department is ``supervisor`` (the named department's row; the caller has
    checked that the code exists). ``allowed``: the platform's setting. Refused by name."""
    if who.role == "admin":
        if code is None:
            raise BadInput("department_code: a platform admin acting for a department names it")
        return Acting(code, None)
    own = who.acting_from or who.department
    if not own:
        raise Forbidden(f"{who.describe()} belongs to no department and may not act for one")
    if code is None or code == own:
        return Acting(own, own)
    if supervisor == own and allowed:
        return Acting(code, own)
    if supervisor == own:
        raise Forbidden(
            f"{who.describe()} may not act for its unit {code}: the platform does not let "
            f"supervising departments act for their units ({SETTING})"
        )
    raise Forbidden(f"{who.describe()} may act only for its own department {own}, not {code}")


def as_acting(who: Principal, acting: Acting) -> Principal:
    """``who`` acting for ``acting.department``: the same user, seen by the workflow as one of
    the unit, remembering its own department; ``who`` itself when it acts for its own."""
    if not acting.on_behalf or who.role == "admin":
        return who
    return dataclasses.replace(
        who, department=acting.department, acting_from=acting.actor_department
    )


def recorded(who: Principal) -> dict[str, Any]:
    """What an audit event adds about who acted for whom: both departments when a supervising
    department acts for its unit, nothing otherwise."""
    if who.acting_from is None:
        return {}
    return {"department": who.department, "acting_department": who.acting_from}
