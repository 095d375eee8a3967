"""File transports (SFTP, FTP, FTPS, local directories) behind one interface.

``open_transport(node, kind, url)`` turns a node's resolved connection URL into a connected
transport:

    file:///srv/exchange/market                     (local)
    sftp://user:pw@host:22/base/dir?known_hosts=/etc/exchange/known_hosts&key_file=/etc/k
    sftp://user@host/base/dir?key_file=/etc/k&client=paramiko  (SSH layer: auto|openssh|paramiko)
    ftp://user:pw@host:21/base/dir
    ftps://user:pw@host:990/base/dir?ca_file=/etc/exchange/ca.pem

The URL may hold a password: never log it (see ``connectors.secrets.redact``).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from connectors.files.base import (
    AccessDenied,
    ConnectionLost,
    FileInfo,
    FileMissing,
    FileTransport,
    HostKeyRejected,
    TransferError,
    clean_path,
    join,
)
from exchange.kernel.errors import BadInput

#: Which SSH layer carries SFTP where a node's URL has no ``?client=``: auto|openssh|paramiko.
SFTP_CLIENT_ENV = "EXCHANGE_SFTP_CLIENT"
FILE_KINDS: frozenset[str] = frozenset({"sftp", "ftp", "ftps", "local"})
_SCHEMES = {"sftp": {"sftp", "ssh"}, "ftp": {"ftp"}, "ftps": {"ftps"}, "local": {"file"}}

__all__ = [
    "FILE_KINDS",
    "AccessDenied",
    "ConnectionLost",
    "FileInfo",
    "FileMissing",
    "FileTransport",
    "HostKeyRejected",
    "TransferError",
    "clean_path",
    "join",
    "open_transport",
]


def open_transport(
    node: str, kind: str, url: str, *, known_hosts: str | None = None, **tuning: int | str
) -> FileTransport:
    """A connected transport for a file node; ``known_hosts`` is the platform's default file."""
    parts = urlsplit(url)
    if kind not in _SCHEMES:
        raise BadInput(f"node {node!r}: kind {kind!r} is not a file node")
    if parts.scheme not in _SCHEMES[kind]:
        raise BadInput(f"node {node!r} is declared {kind} but its URL scheme is {parts.scheme!r}")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    base = unquote(parts.path) or "/"
    if kind == "local":
        from connectors.files.local import LocalTransport

        return LocalTransport(node, Path(base))
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    host = parts.hostname or ""
    if not host:
        raise BadInput(f"node {node!r}: the connection URL names no host")
    if kind == "sftp":
        from connectors.files.sftp import SFTPOptions, SFTPTransport

        opts = SFTPOptions(
            host=host,
            port=parts.port or 22,
            username=user or "",
            password=password,
            base=base,
            known_hosts=query.get("known_hosts") or known_hosts or "~/.ssh/known_hosts",
            key_file=query.get("key_file"),
            client=query.get("client") or os.environ.get(SFTP_CLIENT_ENV) or "auto",
            **tuning,  # type: ignore[arg-type]
        )
        return SFTPTransport(node, opts)
    from connectors.files.ftp import FTPOptions, FTPTransport

    return FTPTransport(
        node,
        FTPOptions(
            host=host,
            port=parts.port or 21,
            username=user or "anonymous",
            password=password,
            base=base,
            tls=kind == "ftps",
            ca_file=query.get("ca_file"),
        ),
    )
