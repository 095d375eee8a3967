"""The declarative catalog: front-end nodes and resources, loaded from YAML."""

from exchange.catalog.loader import load_catalog
from exchange.catalog.model import Catalog, ConnectionRef, Field, FrontEnd, Resource

__all__ = ["Catalog", "ConnectionRef", "Field", "FrontEnd", "Resource", "load_catalog"]
