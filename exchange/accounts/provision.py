"""Issuing a department's front-end account: a database login or a file (FTP/SFTP) login whose
reach is the department's own area on the node, and nothing else.

``issue_account`` picks the node, opens its provisioner through the node's ``admin``
connection reference (resolved now, never stored or logged), creates the department's area if
it is missing and creates the login (or, for a reset, gives it a new credential: the old one
stops working). The secret it returns is made here, handed to the server in the least
revealing form the server takes, and exists nowhere else: the caller shows it once or seals it
to the contact's key (``exchange.accounts.secrets``), and audits the issuance without it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from connectors.provision.base import Credential
from connectors.provision.registry import open_provisioner
from connectors.resolve import resolve_url
from exchange.accounts.secrets import PasswordPolicy, generate_password, generate_ssh_key
from exchange.catalog import FrontEnd
from exchange.catalog.model import ConnectionRef
from exchange.kernel.errors import BadInput, NotFound
from exchange.kernel.kinds import DATABASE_KINDS
from exchange.workspace import Workspace

#: The node kinds each account type of the application form (附件 2) is issued on.
ACCOUNT_KINDS: dict[str, tuple[str, ...]] = {
    "database": tuple(k for k in ("postgresql", "mysql") if k in DATABASE_KINDS),
    "ftp": ("sftp", "ftp"),
}


@dataclass(frozen=True)
class Issued:
    """An issued account. ``secret`` (a password, or an SFTP private key in OpenSSH form) is
    shown once or sealed to the contact: it is never stored, logged or audited."""

    login: str
    secret: str = field(repr=False)
    reach: str  # "schema d_x on node fe_pg"
    account_type: str
    node: str


@dataclass(frozen=True)
class _AdminNode:
    """The node as the resolver sees it, with its admin reference as the connection."""

    name: str
    kind: str
    connection: ConnectionRef


def area_name(department: str) -> str:
    """The department's area and login name on a node, one per code and never shared.

    A code of capital letters and digits (the unified social credit code's form) is ``d_`` and
    the code in lower case: ``d_12410400mb0000002y``. Any other code (lower case, ``-``, ``.``,
    Chinese) is also cut down to what a name may hold, which could make two codes one name
    ("Edu-1", "edu.1" and "EDU_1" all ``d_edu_1``; "教育局" and "卫健委" both ``d____``): such a
    name carries a hash of the code, and a code of the first form holds no ``_`` after ``d_``,
    so the two forms never meet either."""
    if re.fullmatch(r"[0-9A-Z]{1,61}", department):
        return "d_" + department.lower()
    digest = hashlib.sha256(department.encode()).hexdigest()[:10]
    stem = re.sub(r"[^a-z0-9]", "_", department.lower())[:50]
    return f"d_{stem}_{digest}"


def issue_account(
    ws: Workspace,
    *,
    department: str,
    account_type: str,
    node: str | None,
    reset: bool,
    policy: PasswordPolicy | None = None,
) -> Issued:
    """Create (or, with ``reset``, re-credential) ``department``'s ``account_type`` account
    ("database" or "ftp") on ``node`` (None: the one node of that type the department may
    have an account on). A new account on a login that exists, or a reset of one that does
    not, is refused: the application said which it was."""
    target = _target(ws, department, account_type, node)
    assert target.admin is not None  # _target only picks nodes with an admin connection
    base = Path(ws.catalog.path).parent if ws.catalog.path else Path(".")
    admin_url = resolve_url(_AdminNode(target.name, target.kind, target.admin), base)
    area = login = area_name(department)
    with open_provisioner(target.name, target.kind, admin_url) as prov:
        exists = prov.reach(login) is not None
        if reset and not exists:
            raise NotFound(
                f"department {department!r} has no {account_type} account on node "
                f"{target.name!r} to reset (apply for a new one)"
            )
        if exists and not reset:
            raise BadInput(
                f"department {department!r} already has {account_type} account {login!r} on "
                f"node {target.name!r} (apply for a reset)"
            )
        prov.ensure_area(area)
        if prov.takes == "public_key":
            pair = generate_ssh_key(comment=f"{login}@{target.name}")
            secret, credential = pair.private_openssh, Credential(public_key=pair.public_openssh)
        else:
            secret = generate_password(policy)
            credential = Credential(password=secret)
        prov.set_login(login, area, credential)
        return Issued(login, secret, prov.describe(area), account_type, target.name)


def _target(ws: Workspace, department: str, account_type: str, node: str | None) -> FrontEnd:
    """The node the account goes on: the named one, or the department's own node of the
    type, or else the platform's (a node of no department); each with an admin connection."""
    if account_type not in ACCOUNT_KINDS:
        raise BadInput(
            f"account type {account_type!r} is not provisioned on a node "
            f"(choose from {', '.join(ACCOUNT_KINDS)})"
        )
    kinds = ACCOUNT_KINDS[account_type]

    def fits(n: FrontEnd) -> bool:
        return n.kind in kinds and n.admin is not None and n.department in (department, "")

    if node is not None:
        n = ws.catalog.node(node)
        if not fits(n):
            why = (
                f"is {n.kind}, not {' or '.join(kinds)}"
                if n.kind not in kinds
                else "has no admin connection"
                if n.admin is None
                else f"belongs to department {n.department!r}"
            )
            raise BadInput(f"{account_type} account of {department!r}: node {node!r} {why}")
        return n
    candidates = [n for n in ws.catalog.nodes.values() if fits(n)]
    own = [n for n in candidates if n.department == department] or candidates
    if len(own) != 1:
        names = ", ".join(sorted(n.name for n in own)) or "none"
        raise BadInput(
            f"{account_type} account of {department!r}: name the node (nodes of type "
            f"{'/'.join(kinds)} with an admin connection: {names})"
        )
    return own[0]
