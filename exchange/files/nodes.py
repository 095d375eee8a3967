"""Opening file nodes of the catalog: URL from the node's reference, the platform's known_hosts."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from connectors.files import FILE_KINDS, FileTransport, open_transport
from connectors.files.transfer import Session
from connectors.resolve import resolve_url
from exchange.kernel.errors import BadInput
from exchange.workspace import Workspace

KNOWN_HOSTS_ENV = "EXCHANGE_KNOWN_HOSTS"


def known_hosts(ws: Workspace) -> str:
    """The platform's known_hosts: $EXCHANGE_KNOWN_HOSTS, else $EXCHANGE_HOME/known_hosts.

    A node may name its own file with ``?known_hosts=`` in its connection URL.
    """
    return os.environ.get(KNOWN_HOSTS_ENV) or str(ws.settings.home / "known_hosts")


def connector(ws: Workspace, node_name: str) -> Callable[[], FileTransport]:
    """A function that opens a fresh connection to a file node (for reconnecting)."""
    node = ws.catalog.node(node_name)
    if node.kind not in FILE_KINDS:
        raise BadInput(f"node {node_name!r} is {node.kind}, not a file node")
    base = Path(ws.catalog.path).parent if ws.catalog.path else Path(".")
    url = resolve_url(node, base)
    hosts = known_hosts(ws)
    return lambda: open_transport(node.name, node.kind, url, known_hosts=hosts)


def session(ws: Workspace, node_name: str) -> Session:
    """A reconnecting session to a file node (connects on first use)."""
    return Session(connector(ws, node_name))
