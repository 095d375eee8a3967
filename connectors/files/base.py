"""The one interface every file transport implements: SFTP, FTP/FTPS and a local directory.

A transport moves bytes and knows nothing of resources, subscriptions or manifests. Paths are
POSIX paths relative to the node's base directory (the path of its connection URL); the
transport maps them under that base and never lets ``..`` climb out of it.

What a transport must offer is small: list and stat, read from an offset, write from an offset
(so that an interrupted transfer resumes instead of starting over), rename over an existing
file atomically, remove, make directories, and optionally a server-side sha256.

Errors say what a scheduler should do: a ``TransferError`` (access denied, a missing file, a
rejected host key) is ``terminal``, the same on every try; a ``ConnectionLost`` is
``Retriable``: reconnect and resume.

Each kind of file node has a factory (``open_<kind>(url, known_hosts=..., **tuning)``) that
builds its transport from the node's ``NodeURL``; ``connectors/files/registry.py`` maps the
node kinds to them.
"""

from __future__ import annotations

import posixpath
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

from exchange.kernel.errors import BadInput, ConnectionFailed, ExchangeError

CHUNK = 1 << 20  # 1 MiB: streaming copies hold at most a few of these in memory


@dataclass(frozen=True)
class FileInfo:
    """A file as a listing shows it: path relative to the node's base, size, mtime (epoch s)."""

    path: str
    size: int
    mtime: float


class TransferError(ExchangeError):
    """A file operation failed for a reason that retrying will not fix (the message says why)."""

    terminal = True


class AccessDenied(TransferError):
    """The server refused the operation: permissions of the account on that path."""


class FileMissing(TransferError):
    """The path does not exist on the node."""


class ConnectionLost(ConnectionFailed):
    """The connection dropped (or timed out) mid-operation: reconnect and resume."""


class HostKeyRejected(TransferError):
    """An SFTP server's host key is not the one in the platform's known_hosts (or is absent)."""


@dataclass(frozen=True)
class NodeURL:
    """A file node's connection URL, split for its transport's factory.

    ``file:///srv/base``, ``sftp://user:pw@host:22/base?key_file=...``: the path is the node's
    base directory, the query holds the transport's options. The URL may hold a password: never
    log it (see ``connectors.secrets.redact``).
    """

    node: str
    parts: SplitResult

    @classmethod
    def parse(cls, node: str, url: str) -> NodeURL:
        return cls(node, urlsplit(url))

    @property
    def scheme(self) -> str:
        return self.parts.scheme

    @property
    def query(self) -> dict[str, str]:
        """The query's options (the last value of a repeated one)."""
        return {k: v[-1] for k, v in parse_qs(self.parts.query).items()}

    @property
    def base(self) -> str:
        """The node's base directory (``/`` if the URL names none)."""
        return unquote(self.parts.path) or "/"

    @property
    def username(self) -> str | None:
        return unquote(self.parts.username) if self.parts.username else None

    @property
    def password(self) -> str | None:
        return unquote(self.parts.password) if self.parts.password is not None else None

    @property
    def host(self) -> str:
        """The server's host name; a URL without one is bad input."""
        if not self.parts.hostname:
            raise BadInput(f"node {self.node!r}: the connection URL names no host")
        return self.parts.hostname

    @property
    def port(self) -> int | None:
        return self.parts.port


def clean_path(path: str) -> str:
    """A relative POSIX path inside the node's base: ``/out/a/../b.csv`` -> ``out/b.csv``.

    A leading ``/`` is the base itself; a ``..`` that would climb above the base is bad input.
    """
    rel = path.replace("\\", "/").lstrip("/")
    norm = posixpath.normpath(rel) if rel else ""
    if norm in ("", "."):
        return ""
    if norm.startswith("..") or "\x00" in norm:
        raise BadInput(f"path {path!r} leaves the node's base directory")
    return norm


def join(*parts: str) -> str:
    """Join relative paths and clean the result."""
    return clean_path("/".join(p.strip("/") for p in parts if p and p.strip("/")))


class FileTransport(ABC):
    """A connection to one file node. Use as a context manager or call ``close``."""

    #: Whether ``rename`` replaces an existing target atomically (else remove-then-rename).
    atomic_replace: bool = True

    def __init__(self, node: str):
        self.node = node

    def __enter__(self) -> FileTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def stat(self, path: str) -> FileInfo | None:
        """Size and mtime of a regular file, or None if nothing is there."""

    @abstractmethod
    def list_dir(self, path: str) -> Iterator[tuple[FileInfo, bool]]:
        """Entries of one directory: (info, is_dir). Missing directory: FileMissing."""

    def walk(self, path: str, recursive: bool) -> Iterator[FileInfo]:
        """Every regular file under ``path`` (its subdirectories too if ``recursive``)."""
        pending = [clean_path(path)]
        while pending:
            here = pending.pop()
            for info, is_dir in sorted(self.list_dir(here), key=lambda e: e[0].path):
                if is_dir:
                    if recursive:
                        pending.append(info.path)
                else:
                    yield info

    @abstractmethod
    def open_read(self, path: str, offset: int = 0) -> BinaryIO:
        """A stream of the file's bytes from ``offset``; close it when done."""

    @abstractmethod
    def open_write(self, path: str, offset: int = 0) -> BinaryIO:
        """A stream that writes the file from ``offset`` (0 truncates; >0 keeps the prefix)."""

    @abstractmethod
    def rename(self, src: str, dst: str) -> None:
        """Move ``src`` to ``dst``, replacing ``dst`` atomically where the server can."""

    @abstractmethod
    def remove(self, path: str) -> None:
        """Delete a file; a missing file is not an error."""

    @abstractmethod
    def makedirs(self, path: str) -> None:
        """Create a directory and its parents; existing ones are fine."""

    def sha256(self, path: str) -> str | None:
        """A server-side sha256 of the file if the server offers one, else None."""
        return None

    def read_text(self, path: str, limit: int = 4096) -> str:
        """The first ``limit`` bytes of a small file as text (a completion marker)."""
        with self.open_read(path) as fh:
            return fh.read(limit).decode("utf-8", errors="replace")

    @abstractmethod
    def close(self) -> None:
        """Release the connection."""
