"""The one interface every account provisioner implements: PostgreSQL, MariaDB, SFTP and FTP.

A provisioner works through a node's administrative connection and knows nothing of
departments or applications: it is given an *area* (a PostgreSQL schema, a MariaDB database,
a directory) and a *login*, and makes the login reach that area and nothing else.

- ``ensure_area(area)`` creates the area if it is missing (True when it made it).
- ``set_login(login, area, credential)`` creates the login, or resets the one that exists: its
  old credential stops working, and its reach is (again) the area alone.
- ``revoke(login)`` removes the login and every right it held; the area and its data stay.
- ``reach(login)`` says what a login reaches (None: no such login), read back from the server.

A credential (a password, or an SSH public key for SFTP) is handed to the server in the least
revealing form it accepts (a SCRAM verifier, a password hash, a key) and never logged. Names
are checked against ``NAME`` and quoted through the dialect besides: nothing is formatted into
SQL.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from exchange.kernel.errors import BadInput

#: Areas and logins: lower-case identifiers every server takes unquoted and every file system
#: takes as a directory name (at most 63 characters: PostgreSQL's limit).
NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def checked_name(name: str, what: str) -> str:
    """``name`` if it is a valid area or login name (``BadInput`` naming ``what`` if not)."""
    if not NAME.match(name):
        raise BadInput(f"{what} {name!r}: expected lower-case letters, digits and _ (63 at most)")
    return name


@dataclass(frozen=True)
class Credential:
    """What the login proves itself with: a password (databases, FTP) or, for SFTP, an
    OpenSSH public key line whose private half only the applicant holds."""

    password: str | None = None
    public_key: str | None = None

    def __repr__(self) -> str:  # a credential never reaches a log through its repr
        return f"Credential({'password' if self.password else 'public_key'})"


@dataclass(frozen=True)
class Reach:
    """What a login reaches, as the server says: the areas it may read and write."""

    login: str
    areas: tuple[str, ...]


class AccountProvisioner(ABC):
    """Creates areas and logins confined to them on one node (see the module)."""

    #: The node kind (``exchange.kernel.kinds.PROVISIONED_KINDS``).
    kind: ClassVar[str]
    #: What an area is on this kind, for messages: "schema", "database", "directory".
    area_word: ClassVar[str]
    #: Which credential the kind takes: "password" or "public_key".
    takes: ClassVar[str] = "password"

    def __init__(self, node: str, admin_url: str) -> None:
        self.node = node
        self._admin_url = admin_url  # may hold the admin's secret: never print or log it

    @abstractmethod
    def ensure_area(self, area: str) -> bool: ...

    @abstractmethod
    def set_login(self, login: str, area: str, credential: Credential) -> None: ...

    @abstractmethod
    def revoke(self, login: str) -> None: ...

    @abstractmethod
    def reach(self, login: str) -> Reach | None: ...

    def describe(self, area: str) -> str:
        """A person's description of an area: "schema d_x on node fe_pg"."""
        return f"{self.area_word} {area} on node {self.node}"

    def close(self) -> None:  # noqa: B027 - nothing held by default
        """Release the admin connection."""

    def __enter__(self) -> AccountProvisioner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _credential(self, credential: Credential) -> str:
        value = credential.public_key if self.takes == "public_key" else credential.password
        if not value:
            raise BadInput(
                f"node {self.node!r} ({self.kind}) takes a {self.takes.replace('_', ' ')}"
            )
        return value
