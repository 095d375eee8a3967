"""Everything that talks to the outside: front-end databases (one module per dialect)."""

from connectors.base import DatabaseConnector, DeliveryMarker, SinceFilter, TableSpec
from connectors.registry import open_database

__all__ = ["DatabaseConnector", "DeliveryMarker", "SinceFilter", "TableSpec", "open_database"]
