"""Opening the metadata store and bringing its schema to the latest migration."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from connectors.registry import normalise_url
from connectors.secrets import safe_url
from exchange.kernel.errors import ConnectionFailed

MIGRATIONS = Path(__file__).parent / "migrations"


def _alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def create_store_engine(url: str) -> Engine:
    """An engine for the metadata store (SQLite file by default, PostgreSQL in production)."""
    u = normalise_url(url)
    kwargs: dict[str, Any] = {}
    if u.get_backend_name() == "sqlite":
        Path(u.database or ".").parent.mkdir(parents=True, exist_ok=True)
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
    cfg = _alembic_config(engine)
    heads = set(ScriptDirectory.from_config(cfg).get_heads())
    try:
        with engine.connect() as conn:
            current = set(MigrationContext.configure(conn).get_current_heads())
    except sa.exc.OperationalError as exc:
        raise ConnectionFailed(
            f"cannot open the metadata store ({safe_url(engine.url)}): {exc.orig}"
        ) from None
    if current == heads:
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

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose work commits on success and rolls back on error."""
        with self._sessions() as s, s.begin():
            yield s

    def close(self) -> None:
        self.engine.dispose()
