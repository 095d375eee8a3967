"""Every mapped table of the metadata store, imported so that Alembic and ``Base.metadata``
see them all. A feature that adds tables in its own ``models`` module adds one import here."""

from exchange.store.models import Base

__all__ = ["Base"]
