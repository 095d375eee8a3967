"""Opening the metadata store and bringing its schema to the latest migration.

Alembic is imported only when the store is behind (or its version cannot be told cheaply):
a store already at head is recognised by reading ``alembic_version`` against the heads the
migration files declare, without loading Alembic or the migrations (0.3 s of every start).
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from connectors.registry import normalise_url
from connectors.secrets import safe_url
from exchange.kernel.errors import ConnectionFailed, NotFound
from exchange.kernel.modes import private_file
from exchange.store.models import Installation

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"

#: Alembic's default version table, which the store's environment (migrations/env.py) keeps.
VERSION_TABLE = "alembic_version"


def _alembic_config(engine: Engine) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


#: A migration file's own ``revision = "0007"`` and ``down_revision = ("0005", ...)`` lines.
_REVISION_LINE = re.compile(
    r"^(revision|down_revision)\s*(?::[^=\n]*)?=\s*(.+?)\s*(?:#[^\n]*)?$", re.MULTILINE
)


def declared_heads(versions: Path = MIGRATIONS / "versions") -> set[str] | None:
    """The head revisions the migration files declare, read from their ``revision`` and
    ``down_revision`` lines without importing them; ``None`` when a file says it in a way this
    reading does not follow (a value over several lines, say: Alembic then decides)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in sorted(versions.glob("*.py")):
        found: dict[str, Any] = {}
        for name, value in _REVISION_LINE.findall(path.read_text(encoding="utf-8")):
            try:
                found[name] = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                return None
        revision, down = found.get("revision"), found.get("down_revision")
        downs = (down,) if isinstance(down, str) else down or ()
        if not isinstance(revision, str) or not isinstance(downs, tuple | list):
            return None
        if not all(isinstance(d, str) for d in downs):
            return None
        revisions.add(revision)
        parents.update(downs)
    return revisions - parents or None


def current_heads(conn: Connection) -> set[str]:
    """The revisions the store records (none for a store that was never migrated)."""
    if not sa.inspect(conn).has_table(VERSION_TABLE):
        return set()
    version = sa.table(VERSION_TABLE, sa.column("version_num"))
    return set(conn.execute(sa.select(version.c.version_num)).scalars())


def create_store_engine(url: str) -> Engine:
    """An engine for the metadata store (SQLite file by default, PostgreSQL in production)."""
    u = normalise_url(url)
    kwargs: dict[str, Any] = {}
    if u.get_backend_name() == "sqlite" and u.database not in (None, "", ":memory:"):
        # The store holds quarantine indexes, codes' digests and the audit log: made 0600
        # before SQLite creates it (its -wal and -shm files take the database file's mode).
        db = Path(u.database)
        db.parent.mkdir(parents=True, exist_ok=True)
        if not db.exists():
            os.close(private_file(db, os.O_WRONLY | os.O_CREAT))
    if u.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"timeout": 30}
    engine = sa.create_engine(u, **kwargs)
    if u.get_backend_name() == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _: Any) -> None:
            dbapi_conn.execute("PRAGMA foreign_keys=ON")
            dbapi_conn.execute("PRAGMA journal_mode=WAL")

    return engine


def upgrade(engine: Engine) -> bool:
    """Apply pending migrations; return whether anything was applied."""
    try:
        with engine.connect() as conn:
            current = current_heads(conn)
    except sa.exc.OperationalError as exc:
        raise ConnectionFailed(
            f"cannot open the metadata store ({safe_url(engine.url)}): {exc.orig}"
        ) from None
    if current and current == declared_heads():
        return False
    from alembic import command
    from alembic.script import ScriptDirectory

    cfg = _alembic_config(engine)
    if current == set(ScriptDirectory.from_config(cfg).get_heads()):
        return False
    # Features add their tables on their own migration branches off 0001: upgrade all heads.
    command.upgrade(cfg, "heads")
    return True


class Store:
    """The metadata store: a session factory over an up-to-date schema."""

    def __init__(self, url: str, *, migrate: bool = True):
        self.engine = create_store_engine(url)
        if migrate:
            upgrade(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._installation_id: str | None = None

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose work commits on success and rolls back on error. It carries the
        store (``s.info["store"]``): the audit log's sealer, run after a commit that appended
        events, opens its own transaction on it."""
        with self._sessions() as s:
            s.info["store"] = self
            with s.begin():
                yield s

    @property
    def installation_id(self) -> str:
        """This store's installation id: generated once (migration 0007), read ever after.
        It keys the delivery markers this installation writes in every target database."""
        if self._installation_id is None:
            self._installation_id = self._read_installation_id()
        return self._installation_id

    def _read_installation_id(self) -> str:
        with self.session() as s:
            found = s.execute(sa.select(Installation.installation_id)).scalar()
        if found is None:
            # Never a new one: the markers this installation wrote in every subscriber's
            # database carry the lost id, and a new id would disown them all.
            raise NotFound(
                f"the metadata store ({safe_url(self.engine.url)}) has no installation id: its "
                "table 'installation' is empty. Restore that row from a backup of this store; "
                "the id keys the delivery markers this installation wrote in every "
                "subscriber's database"
            )
        return found

    def close(self) -> None:
        self.engine.dispose()
