"""Which transport serves which kind of file node, and which URL schemes each kind accepts.

Each kind of file node (``exchange.kernel.kinds.FILE_NODE_KINDS``) has one line here: the URL
schemes it accepts and its factory, ``"module:function"``, a function of the transport's own
module that builds the connected transport from the node's ``NodeURL`` (options from the
query string). A factory's module is imported on first use, so paramiko loads only where an
SFTP node is opened. Adding a transport is its module under ``connectors/files/`` and one line
in ``TRANSPORTS``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Protocol, cast

from connectors.files.base import FileTransport, NodeURL
from exchange.kernel.errors import BadInput


class Factory(Protocol):
    """Builds a connected transport from a node's URL (see ``open_sftp`` and the others)."""

    def __call__(
        self, url: NodeURL, *, known_hosts: str | None = None, **tuning: int | str
    ) -> FileTransport: ...


@dataclass(frozen=True)
class TransportKind:
    """One kind of file node: the URL schemes it accepts and where its factory lives."""

    schemes: tuple[str, ...]
    factory: str  # "module:function", imported on first use

    def load(self) -> Factory:
        module, _, name = self.factory.partition(":")
        return cast(Factory, getattr(importlib.import_module(module), name))

    def open(
        self, kind: str, url: NodeURL, *, known_hosts: str | None = None, **tuning: int | str
    ) -> FileTransport:
        if url.scheme not in self.schemes:
            raise BadInput(
                f"node {url.node!r} is declared {kind} but its URL scheme is {url.scheme!r}"
            )
        return self.load()(url, known_hosts=known_hosts, **tuning)


TRANSPORTS: dict[str, TransportKind] = {
    "sftp": TransportKind(("sftp", "ssh"), "connectors.files.sftp:open_sftp"),
    "ftp": TransportKind(("ftp",), "connectors.files.ftp:open_ftp"),
    "ftps": TransportKind(("ftps",), "connectors.files.ftp:open_ftps"),
    "local": TransportKind(("file",), "connectors.files.local:open_local"),
}


def open_transport(
    node: str, kind: str, url: str, *, known_hosts: str | None = None, **tuning: int | str
) -> FileTransport:
    """A connected transport for a file node; ``known_hosts`` is the platform's default file."""
    parsed = NodeURL.parse(node, url)
    try:
        entry = TRANSPORTS[kind]
    except KeyError:
        raise BadInput(f"node {node!r}: kind {kind!r} is not a file node") from None
    return entry.open(kind, parsed, known_hosts=known_hosts, **tuning)
