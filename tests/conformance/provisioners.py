"""What every ``AccountProvisioner`` must do (connectors/provision/base.py), as one suite.

A kind runs it by subclassing ``ProvisionerConformance`` and giving a ``harness`` fixture: a
``Harness`` that opens the provisioner on a live server and acts *as a provisioned login*
(connects with the issued credential, writes and reads in an area, tries another's).

tests/test_conformance_provisioners.py runs it on every kind of
``connectors.provision.registry.PROVISIONERS``. What it pins down: a login reads and writes its
own area (data the platform put there and its own) and is refused on another login's area;
``reach`` is the own area alone; a reset makes the old credential fail to connect and the new
one work; revoke removes the login and keeps the area; ``ensure_area`` is idempotent; a name
that is no identifier is refused before anything reaches the server.
"""

from __future__ import annotations

import secrets
from abc import ABC, abstractmethod

import pytest

from connectors.provision.base import AccountProvisioner, Credential
from exchange.accounts.secrets import generate_password, generate_ssh_key
from exchange.kernel.errors import BadInput


class Refused(Exception):
    """The server refused the login: a connection, a read or a write."""


class Harness(ABC):
    """A live server of one kind and a login's-eye view of it."""

    kind: str

    @abstractmethod
    def provisioner(self) -> AccountProvisioner: ...

    @abstractmethod
    def seed(self, area: str, name: str, payload: str) -> None:
        """Put data into ``area`` as the platform does (through the admin side)."""

    @abstractmethod
    def write(self, login: str, secret: str, area: str, name: str, payload: str) -> None:
        """As ``login``: create ``name`` in ``area`` holding ``payload`` (``Refused`` if not)."""

    @abstractmethod
    def read(self, login: str, secret: str, area: str, name: str) -> str:
        """As ``login``: what ``name`` in ``area`` holds (``Refused`` if it may not)."""

    def cleanup(self, logins: list[str], areas: list[str]) -> None:  # noqa: B027
        """Remove what a test made on a shared server."""


def fresh_name() -> str:
    return f"d_t{secrets.token_hex(5)}"


def credential_for(prov: AccountProvisioner, login: str) -> tuple[Credential, str]:
    """A new credential of the kind the provisioner takes, and the secret the login uses."""
    if prov.takes == "public_key":
        pair = generate_ssh_key(comment=login)
        return Credential(public_key=pair.public_openssh), pair.private_openssh
    password = generate_password()
    return Credential(password=password), password


class ProvisionerConformance:
    """Subclass it and give a ``harness`` fixture."""

    @pytest.fixture
    def made(self, harness: Harness) -> object:
        logins: list[str] = []
        areas: list[str] = []
        yield (logins, areas)
        harness.cleanup(logins, areas)

    def _account(self, harness: Harness, prov: AccountProvisioner, made: object) -> tuple[str, str]:
        logins, areas = made  # type: ignore[misc]
        name = fresh_name()
        logins.append(name)
        areas.append(name)
        assert prov.ensure_area(name) is True
        cred, secret = credential_for(prov, name)
        prov.set_login(name, name, cred)
        return name, secret

    def test_a_login_reads_and_writes_its_own_area(self, harness: Harness, made: object) -> None:
        with harness.provisioner() as prov:
            login, secret = self._account(harness, prov, made)
        harness.seed(login, "given", "from the platform")
        assert harness.read(login, secret, login, "given") == "from the platform"
        harness.write(login, secret, login, "own", "by the department")
        assert harness.read(login, secret, login, "own") == "by the department"

    def test_a_login_is_refused_on_another_area(self, harness: Harness, made: object) -> None:
        with harness.provisioner() as prov:
            a, a_secret = self._account(harness, prov, made)
            b, b_secret = self._account(harness, prov, made)
        harness.seed(b, "theirs", "department b's")
        with pytest.raises(Refused):
            harness.read(a, a_secret, b, "theirs")
        with pytest.raises(Refused):
            harness.write(a, a_secret, b, "planted", "by a")
        assert harness.read(b, b_secret, b, "theirs") == "department b's"

    def test_an_area_name_is_no_pattern(self, harness: Harness, made: object) -> None:
        """``d_tX_1`` must not reach ``d_tXz1``: MariaDB reads ``_`` in a database grant as a
        wildcard unless it is escaped."""
        logins, areas = made  # type: ignore[misc]
        stem = fresh_name()
        a, b = f"{stem}_1", f"{stem}z1"
        logins += [a, b]
        areas += [a, b]
        with harness.provisioner() as prov:
            for name in (a, b):
                prov.ensure_area(name)
            cred, secret = credential_for(prov, a)
            prov.set_login(a, a, cred)
            assert prov.reach(a).areas == (a,)  # type: ignore[union-attr]
        harness.seed(b, "theirs", "department b's")
        with pytest.raises(Refused):
            harness.read(a, secret, b, "theirs")
        with pytest.raises(Refused):
            harness.write(a, secret, b, "planted", "by a")

    def test_reach_is_the_own_area_alone(self, harness: Harness, made: object) -> None:
        with harness.provisioner() as prov:
            a, _ = self._account(harness, prov, made)
            b, _ = self._account(harness, prov, made)
            assert prov.reach(a) is not None and prov.reach(a).areas == (a,)  # type: ignore[union-attr]
            assert prov.reach(b).areas == (b,)  # type: ignore[union-attr]
            assert prov.reach(fresh_name()) is None
            assert prov.describe(a) == f"{prov.area_word} {a} on node {prov.node}"

    def test_a_reset_invalidates_the_old_credential(self, harness: Harness, made: object) -> None:
        with harness.provisioner() as prov:
            login, old = self._account(harness, prov, made)
            harness.write(login, old, login, "before", "x")
            cred, new = credential_for(prov, login)
            prov.set_login(login, login, cred)
            assert prov.reach(login).areas == (login,)  # type: ignore[union-attr]
        with pytest.raises(Refused):
            harness.read(login, old, login, "before")
        assert harness.read(login, new, login, "before") == "x"

    def test_revoke_removes_the_login_and_keeps_the_area(
        self, harness: Harness, made: object
    ) -> None:
        with harness.provisioner() as prov:
            login, secret = self._account(harness, prov, made)
            harness.write(login, secret, login, "kept", "data")
            prov.revoke(login)
            assert prov.reach(login) is None
            prov.revoke(login)  # a second revoke is a no-op
            assert prov.ensure_area(login) is False  # the area and its data stay
        with pytest.raises(Refused):
            harness.read(login, secret, login, "kept")

    def test_ensure_area_is_idempotent(self, harness: Harness, made: object) -> None:
        logins, areas = made  # type: ignore[misc]
        area = fresh_name()
        areas.append(area)
        with harness.provisioner() as prov:
            assert prov.ensure_area(area) is True
            assert prov.ensure_area(area) is False

    @pytest.mark.parametrize("bad", ["Robert'); DROP", "a b", "../up", "x" * 64, "1abc", ""])
    def test_a_name_that_is_no_identifier_is_refused(self, harness: Harness, bad: str) -> None:
        with harness.provisioner() as prov:
            cred, _ = credential_for(prov, "x")
            with pytest.raises(BadInput):
                prov.ensure_area(bad)
            with pytest.raises(BadInput):
                prov.set_login(bad, bad, cred)
            with pytest.raises(BadInput):
                prov.reach(bad)
