"""PostgreSQL: a department's area is a schema; its login a LOGIN role that reaches it alone.

What a login gets: CONNECT on the database, USAGE and CREATE on its own schema, SELECT, INSERT,
UPDATE and DELETE on the schema's tables (and the same by default on the tables the admin
role creates there later), USAGE and SELECT on its sequences. What it is denied besides what
PostgreSQL denies by default: CREATE in ``public`` (revoked from PUBLIC, as PostgreSQL 15 does
itself); every other schema is created here without a grant to PUBLIC, so another department's
login finds nothing there. The role is NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
NOBYPASSRLS NOINHERIT.

The password never reaches the server: the role's ``PASSWORD`` is a SCRAM-SHA-256 verifier
computed here (what the server would store), passed as a quoted literal (a utility statement
takes no bound parameters), so neither the statement log nor ``pg_stat_statements`` holds the
password. A reset also ends the role's open sessions. Identifiers go through
``psycopg.sql.Identifier``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from connectors.provision.base import AccountProvisioner, Credential, Reach, checked_name
from exchange.kernel.errors import BadInput, ConnectionFailed

_TABLE_RIGHTS = sql.SQL("SELECT, INSERT, UPDATE, DELETE")
_SEQUENCE_RIGHTS = sql.SQL("USAGE, SELECT")


def scram_verifier(password: str, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password`` (RFC 5802/7677)."""
    if not password.isascii():  # the server SASLpreps a non-ASCII one: refuse to guess it
        raise BadInput("a PostgreSQL password made here is ASCII")
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(b: bytes) -> str:
        return base64.b64encode(b).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


class PostgreSQLProvisioner(AccountProvisioner):
    kind = "postgresql"
    area_word = "schema"

    def __init__(self, node: str, admin_url: str) -> None:
        super().__init__(node, admin_url)
        u = make_url(admin_url)
        self._conninfo: dict[str, Any] = {
            "host": u.host,
            "port": u.port,
            "user": u.username,
            "password": u.password,
            "dbname": u.database,
        }
        self._conn: psycopg.Connection[Any] | None = None

    def _c(self) -> psycopg.Connection[Any]:
        if self._conn is None:
            try:
                args = {k: v for k, v in self._conninfo.items() if v is not None}
                self._conn = psycopg.connect(**args, autocommit=True, connect_timeout=10)
            except psycopg.OperationalError:
                # the driver's message may quote the connection string: said without it
                raise ConnectionFailed(
                    f"node {self.node!r}: the admin connection to PostgreSQL failed"
                ) from None
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _role_exists(self, login: str) -> bool:
        row = self._c().execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (login,)).fetchone()
        return row is not None

    def ensure_area(self, area: str) -> bool:
        checked_name(area, "schema")
        c = self._c()
        if c.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (area,)).fetchone():
            return False
        c.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(area)))
        return True

    def set_login(self, login: str, area: str, credential: Credential) -> None:
        checked_name(login, "login")
        checked_name(area, "schema")
        verifier = sql.Literal(scram_verifier(self._credential(credential)))
        role = sql.Identifier(login)
        c = self._c()
        with c.transaction():
            if self._role_exists(login):
                c.execute(sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(role, verifier))
            else:
                c.execute(
                    sql.SQL(
                        "CREATE ROLE {} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
                        "NOREPLICATION NOBYPASSRLS NOINHERIT PASSWORD {}"
                    ).format(role, verifier)
                )
            self._confine(login, area)
        # A reset leaves no session open on the old password.
        c.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE usename = %s AND pid <> pg_backend_pid()",
            (login,),
        )

    def _confine(self, login: str, area: str) -> None:
        """The grants that make ``area`` the role's reach, and the one default it must lose."""
        c = self._c()
        role, schema = sql.Identifier(login), sql.Identifier(area)
        db = c.execute("SELECT current_database()").fetchone()
        assert db is not None
        # Other schemas' grants it may hold from an earlier area (a reset re-confines).
        for (other,) in c.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname <> %s AND nspname NOT LIKE 'pg\\_%%' "
            "AND nspname <> 'information_schema' AND has_schema_privilege(%s, oid, 'CREATE')",
            (area, login),
        ).fetchall():
            c.execute(
                sql.SQL("REVOKE ALL ON SCHEMA {} FROM {}").format(sql.Identifier(other), role)
            )
        c.execute(sql.SQL("REVOKE CREATE ON SCHEMA public FROM PUBLIC"))
        c.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(db[0]), role))
        c.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA {} TO {}").format(schema, role))
        c.execute(
            sql.SQL("GRANT {} ON ALL TABLES IN SCHEMA {} TO {}").format(_TABLE_RIGHTS, schema, role)
        )
        c.execute(
            sql.SQL("GRANT {} ON ALL SEQUENCES IN SCHEMA {} TO {}").format(
                _SEQUENCE_RIGHTS, schema, role
            )
        )
        c.execute(
            sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT {} ON TABLES TO {}").format(
                schema, _TABLE_RIGHTS, role
            )
        )
        c.execute(
            sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT {} ON SEQUENCES TO {}").format(
                schema, _SEQUENCE_RIGHTS, role
            )
        )
        # The tables are the department's, wherever its role is looked up from.
        c.execute(sql.SQL("ALTER ROLE {} SET search_path = {}").format(role, schema))

    def revoke(self, login: str) -> None:
        checked_name(login, "login")
        c = self._c()
        if not self._role_exists(login):
            return
        role = sql.Identifier(login)
        with c.transaction():
            c.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(role))
            # Its grants and default privileges here; tables it created pass to the admin.
            c.execute(sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(role))
            c.execute(sql.SQL("DROP OWNED BY {}").format(role))
            c.execute(sql.SQL("DROP ROLE {}").format(role))
        c.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
            (login,),
        )

    def reach(self, login: str) -> Reach | None:
        checked_name(login, "login")
        c = self._c()
        if not self._role_exists(login):
            return None
        # Schemas it may create in, or whose tables it holds a right on (``public``'s USAGE
        # is PUBLIC's and reaches no table by itself).
        rows = c.execute(
            "SELECT n.nspname FROM pg_namespace n WHERE n.nspname NOT LIKE 'pg\\_%%' "
            "AND n.nspname <> 'information_schema' AND (has_schema_privilege(%s, n.oid, 'CREATE') "
            "OR EXISTS (SELECT 1 FROM pg_class t WHERE t.relnamespace = n.oid "
            "AND t.relkind IN ('r', 'p', 'v', 'm') AND has_table_privilege(%s, t.oid, "
            "'SELECT, INSERT, UPDATE, DELETE'))) ORDER BY 1",
            (login, login),
        ).fetchall()
        return Reach(login, tuple(r[0] for r in rows))
