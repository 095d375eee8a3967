"""Alembic environment: the engine comes from the caller (``exchange db upgrade`` or Store)."""

from __future__ import annotations

from alembic import context

from exchange.store.all_models import Base

config = context.config
engine = config.attributes["engine"]

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    context.run_migrations()
