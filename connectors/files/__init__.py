"""File transports (SFTP, FTP, FTPS, local directories) behind one interface.

``open_transport(node, kind, url)`` turns a node's resolved connection URL into a connected
transport, through the transport registry (``connectors/files/registry.py``):

    file:///srv/exchange/market                     (local)
    sftp://user:pw@host:22/base/dir?known_hosts=/etc/exchange/known_hosts&key_file=/etc/k
    sftp://user@host/base/dir?key_file=/etc/k&client=paramiko  (SSH layer: auto|openssh|paramiko)
    ftp://user:pw@host:21/base/dir
    ftps://user:pw@host:990/base/dir?ca_file=/etc/exchange/ca.pem

The URL may hold a password: never log it (see ``connectors.secrets.redact``).
"""

from __future__ import annotations

from typing import Any

from connectors.files.base import (
    AccessDenied,
    ConnectionLost,
    FileInfo,
    FileMissing,
    FileTransport,
    HostKeyRejected,
    NodeURL,
    TransferError,
    clean_path,
    join,
)
from connectors.files.registry import TRANSPORTS, open_transport

#: The kinds of file node, one per entry of the transport registry.
FILE_KINDS: frozenset[str] = frozenset(TRANSPORTS)

__all__ = [
    "FILE_KINDS",
    "SFTP_CLIENT_ENV",
    "AccessDenied",
    "ConnectionLost",
    "FileInfo",
    "FileMissing",
    "FileTransport",
    "HostKeyRejected",
    "NodeURL",
    "TransferError",
    "clean_path",
    "join",
    "open_transport",
]


def __getattr__(name: str) -> Any:
    # SFTP_CLIENT_ENV lives with the SFTP transport, which is imported only when asked for
    # (it brings paramiko).
    if name == "SFTP_CLIENT_ENV":
        from connectors.files.sftp import SFTP_CLIENT_ENV

        return SFTP_CLIENT_ENV
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
