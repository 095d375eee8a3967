"""MariaDB (and MySQL): a department's area is a database; its login a user with grants on that
database alone.

What a login gets on its database: SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, INDEX,
CREATE TEMPORARY TABLES and LOCK TABLES (no DROP: at database level it would drop the database
itself), no global privilege and no GRANT OPTION. A reset revokes everything first and grants
the database again, so an earlier grant elsewhere does not survive it, and ends the user's
open sessions.

The password reaches the server as its ``mysql_native_password`` hash (``IDENTIFIED BY
PASSWORD '*...'``), so the general and slow query logs never hold it. User names, hosts and
the hash are bound parameters (PyMySQL quotes them as literals); the database name is quoted
by SQLAlchemy's MySQL identifier preparer.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pymysql
from sqlalchemy.dialects.mysql import dialect as mysql_dialect
from sqlalchemy.engine import make_url

from connectors.provision.base import AccountProvisioner, Credential, Reach, checked_name
from exchange.kernel.errors import ConnectionFailed

_RIGHTS = (
    "SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, INDEX, CREATE TEMPORARY TABLES, LOCK TABLES"
)
#: Where the department's user may connect from (the front-end machines' network is the
#: firewall's to narrow; a host pattern per department is a later refinement).
HOST = "%"


def native_password_hash(password: str) -> str:
    """What ``PASSWORD(password)`` gives for ``mysql_native_password``: ``*`` and the upper-case
    hex of SHA1(SHA1(password))."""
    inner = hashlib.sha1(password.encode()).digest()  # noqa: S324 - the server's own scheme
    return "*" + hashlib.sha1(inner).hexdigest().upper()  # noqa: S324


class MySQLProvisioner(AccountProvisioner):
    kind = "mysql"
    area_word = "database"

    def __init__(self, node: str, admin_url: str) -> None:
        super().__init__(node, admin_url)
        u = make_url(admin_url)
        self._args: dict[str, Any] = {
            "host": u.host or "127.0.0.1",
            "port": u.port or 3306,
            "user": u.username,
            "password": u.password or "",
        }
        self._conn: pymysql.connections.Connection[Any] | None = None
        self._quote = mysql_dialect().identifier_preparer.quote_identifier

    def _exec(self, statement: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self._conn is None:
            try:
                self._conn = pymysql.connect(**self._args, autocommit=True, connect_timeout=10)
            except pymysql.err.OperationalError:
                raise ConnectionFailed(
                    f"node {self.node!r}: the admin connection to MariaDB failed"
                ) from None
        with self._conn.cursor() as cur:
            cur.execute(statement, args or None)
            return list(cur.fetchall())

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _exists(self, login: str) -> bool:
        return bool(
            self._exec("SELECT 1 FROM mysql.user WHERE User = %s AND Host = %s", (login, HOST))
        )

    def ensure_area(self, area: str) -> bool:
        checked_name(area, "database")
        if self._exec("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (area,)):
            return False
        self._exec(f"CREATE DATABASE IF NOT EXISTS {self._quote(area)}")
        return True

    def set_login(self, login: str, area: str, credential: Credential) -> None:
        checked_name(login, "login")
        checked_name(area, "database")
        digest = native_password_hash(self._credential(credential))
        user = (login, HOST)
        if self._exists(login):
            self._exec("ALTER USER %s@%s IDENTIFIED BY PASSWORD %s", (*user, digest))
            self._exec("REVOKE ALL PRIVILEGES, GRANT OPTION FROM %s@%s", user)
        else:
            self._exec("CREATE USER %s@%s IDENTIFIED BY PASSWORD %s", (*user, digest))
        self._exec(f"GRANT {_RIGHTS} ON {self._quote(_literal(area))}.* TO %s@%s", user)
        self._end_sessions(login)

    def _end_sessions(self, login: str) -> None:
        for (pid,) in self._exec(
            "SELECT ID FROM information_schema.PROCESSLIST "
            "WHERE USER = %s AND ID <> CONNECTION_ID()",
            (login,),
        ):
            try:
                self._exec("KILL CONNECTION %s", (int(pid),))
            except pymysql.err.OperationalError:  # it ended meanwhile
                pass

    def revoke(self, login: str) -> None:
        checked_name(login, "login")
        self._exec("DROP USER IF EXISTS %s@%s", (login, HOST))
        self._end_sessions(login)

    def reach(self, login: str) -> Reach | None:
        checked_name(login, "login")
        if not self._exists(login):
            return None
        grantee = f"'{login}'@'{HOST}'"  # information_schema's spelling, compared as a value
        glob = self._exec(
            "SELECT 1 FROM information_schema.USER_PRIVILEGES "
            "WHERE GRANTEE = %s AND PRIVILEGE_TYPE <> 'USAGE'",
            (grantee,),
        )
        rows = self._exec(
            "SELECT TABLE_SCHEMA FROM information_schema.SCHEMA_PRIVILEGES WHERE GRANTEE = %s "
            "UNION SELECT TABLE_SCHEMA FROM information_schema.TABLE_PRIVILEGES WHERE GRANTEE = %s "
            "ORDER BY 1",
            (grantee, grantee),
        )
        areas = tuple(str(r[0]).replace("\\_", "_") for r in rows)  # as _literal wrote them
        return Reach(login, (("*",) if glob else ()) + areas)


def _literal(area: str) -> str:
    """``area`` as a database-level GRANT names it: there ``_`` and ``%`` are wildcards even
    inside backticks (a grant on `d_edu_1`.* would reach department edu21's `d_edu21`), so
    they are escaped (area names hold no ``%``: ``base.NAME``)."""
    return area.replace("_", "\\_")
