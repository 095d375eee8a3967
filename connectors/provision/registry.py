"""Which provisioner serves which kind of node.

One line per kind (``exchange.kernel.kinds.PROVISIONED_KINDS``): ``"module:Class"``, imported
on first use (paramiko and the database drivers load only where their node is provisioned).
Adding one is its module under ``connectors/provision/`` and one line in ``PROVISIONERS``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from exchange.kernel.errors import BadInput

if TYPE_CHECKING:
    from connectors.provision.base import AccountProvisioner

PROVISIONERS: dict[str, str] = {
    "postgresql": "connectors.provision.postgresql:PostgreSQLProvisioner",
    "mysql": "connectors.provision.mysql:MySQLProvisioner",
    "sftp": "connectors.provision.files:SFTPProvisioner",
    "ftp": "connectors.provision.files:FTPProvisioner",
}


def provisioner_class(kind: str) -> type[AccountProvisioner]:
    """The provisioner of a node kind (``BadInput`` for a kind the engine cannot provision)."""
    try:
        module, _, name = PROVISIONERS[kind].partition(":")
    except KeyError:
        raise BadInput(
            f"accounts cannot be provisioned on a {kind} node "
            f"(provisioned kinds: {', '.join(PROVISIONERS)})"
        ) from None
    cls: type[AccountProvisioner] = getattr(importlib.import_module(module), name)
    return cls


def open_provisioner(node: str, kind: str, admin_url: str) -> AccountProvisioner:
    """A provisioner for ``node`` through its admin connection URL (never log the URL)."""
    return provisioner_class(kind)(node, admin_url)
