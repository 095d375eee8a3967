"""Which connector serves which kind of front-end node, and how URLs name their drivers."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from sqlalchemy.engine import URL, make_url

from exchange.kernel.errors import BadInput

if TYPE_CHECKING:
    from connectors.base import DatabaseConnector


#: Each database kind's connector class, by module and name: a module is imported when a node
#: of its kind is first opened (the metadata store normalises its URL here without loading
#: pyarrow and every driver; a run on SQLite nodes loads neither PyMySQL nor oracledb).
_CLASSES = {
    "postgresql": ("connectors.postgresql", "PostgreSQLConnector"),
    "mysql": ("connectors.mysql", "MySQLConnector"),
    "oracle": ("connectors.oracle", "OracleConnector"),
    "sqlite": ("connectors.sqlite", "SQLiteConnector"),
}


def connector_class(kind: str) -> type[DatabaseConnector]:
    """The connector of a database kind (``KeyError`` for a kind that is none)."""
    module, name = _CLASSES[kind]
    cls: type[DatabaseConnector] = getattr(import_module(module), name)
    return cls


def connectors() -> dict[str, type[DatabaseConnector]]:
    """Every database kind's connector (``CONNECTORS``), all imported."""
    return {kind: connector_class(kind) for kind in _CLASSES}


def __getattr__(name: str) -> dict[str, type[DatabaseConnector]]:
    if name == "CONNECTORS":
        return connectors()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# The driver each dialect uses, whatever scheme the operator wrote (postgres://, mysql://, ...).
_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
    "oracle": "oracle+oracledb",
    "sqlite": "sqlite",
}


def normalise_url(url: str | URL) -> URL:
    """Pin the driver the project ships for the URL's dialect."""
    u = make_url(url)
    backend = u.get_backend_name()
    if backend not in _DRIVERS:
        raise BadInput(f"unsupported database URL scheme {u.drivername!r}")
    return u.set(drivername=_DRIVERS[backend])


def open_database(node: str, kind: str, url: str | URL) -> DatabaseConnector:
    """A connector for a database node of the given kind."""
    if kind not in _CLASSES:
        raise BadInput(f"node {node!r}: kind {kind!r} is not a database")
    u = normalise_url(url)
    if u.get_backend_name() != kind:  # one kind per backend: its connector is another
        raise BadInput(f"node {node!r} is declared {kind} but its URL is {u.get_backend_name()}")
    return connector_class(kind)(node, u)
