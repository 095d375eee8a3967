"""Which connector serves which kind of front-end node, and how URLs name their drivers."""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url

from connectors.base import DatabaseConnector
from connectors.mysql import MySQLConnector
from connectors.oracle import OracleConnector
from connectors.postgresql import PostgreSQLConnector
from connectors.sqlite import SQLiteConnector
from exchange.kernel.errors import BadInput

CONNECTORS: dict[str, type[DatabaseConnector]] = {
    "postgresql": PostgreSQLConnector,
    "mysql": MySQLConnector,
    "oracle": OracleConnector,
    "sqlite": SQLiteConnector,
}

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
    try:
        cls = CONNECTORS[kind]
    except KeyError:
        raise BadInput(f"node {node!r}: kind {kind!r} is not a database") from None
    u = normalise_url(url)
    if CONNECTORS.get(u.get_backend_name()) is not cls:
        raise BadInput(f"node {node!r} is declared {kind} but its URL is {u.get_backend_name()}")
    return cls(node, u)
