"""The declarative catalog: front-end nodes and resources, loaded from YAML."""

from exchange.catalog.loader import load_catalog
from exchange.catalog.model import (
    ApiOperation,
    ApiParam,
    ApiQuota,
    Catalog,
    ConnectionRef,
    Field,
    FrontEnd,
    HttpAuth,
    Origin,
    Resource,
)

__all__ = [
    "ApiOperation",
    "ApiParam",
    "ApiQuota",
    "Catalog",
    "ConnectionRef",
    "Field",
    "FrontEnd",
    "HttpAuth",
    "Origin",
    "Resource",
    "load_catalog",
]
