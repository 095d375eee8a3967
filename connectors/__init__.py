"""Everything that talks to the outside: front-end databases (one module per dialect)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from connectors.base import DatabaseConnector, DeliveryMarker, SinceFilter, TableSpec
    from connectors.registry import open_database

__all__ = ["DatabaseConnector", "DeliveryMarker", "SinceFilter", "TableSpec", "open_database"]


def __getattr__(name: str) -> Any:
    """The names above, imported when first asked for: importing any module of the package
    (``connectors.secrets`` for the metadata store's URL) must not load pyarrow and Alembic."""
    if name == "open_database":
        from connectors import registry

        return registry.open_database
    if name in __all__:
        from connectors import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
