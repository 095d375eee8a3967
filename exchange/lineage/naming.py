"""Dataset names of the OpenLineage naming spec, for every kind of node the catalog declares.

A dataset is ``namespace`` + ``name``: ``postgres://host:port`` + ``db.schema.table``,
``mysql://host:port`` + ``db.table``, ``oracle://host:port`` + ``service.schema.table``,
``sqlite://<absolute file path>`` + ``table``, ``sftp://host:port`` (``ftp``, ``ftps``) or
``file`` + the path, and ``https://host`` + the path of an api operation. A name never holds a
credential: only the host, port, database and path of a node's connection are read, and the
user and password are dropped. A connection that cannot be resolved here (an unset variable, an
Airflow connection outside a task) is named by the node instead (``postgresql://node-name``),
so that an event is never lost for want of a URL.
"""

from __future__ import annotations

import logging
import posixpath
from pathlib import Path
from urllib.parse import unquote, urlsplit

from openlineage.client.naming import dataset as ol_naming
from sqlalchemy.engine import make_url

from connectors.resolve import resolve_url
from exchange.catalog.model import ApiOperation, Catalog, FrontEnd, Resource
from exchange.lineage.refs import DatasetRef

log = logging.getLogger(__name__)

DEFAULT_PORTS: dict[str, int] = {
    "postgresql": 5432,
    "mysql": 3306,
    "oracle": 1521,
    "sftp": 22,
    "ftp": 21,
    "ftps": 21,
    "https": 443,
    "http": 80,
}


def _url(catalog: Catalog, node: FrontEnd) -> str | None:
    """The node's connection URL, or None when it cannot be resolved in this process."""
    base = Path(catalog.path).parent if catalog.path else Path(".")
    try:
        return resolve_url(node, base)
    except Exception as exc:  # never the message: it may quote the URL
        log.info(
            "lineage: node %r has no resolvable connection here (%s)", node.name, type(exc).__name__
        )
        return None


def _fallback(node: FrontEnd, name: str) -> DatasetRef:
    return DatasetRef(f"{node.kind}://{node.name}", name)


def table_dataset(catalog: Catalog, node_name: str, schema: str | None, table: str) -> DatasetRef:
    """A table on a database node (the provider's source table or a subscriber's target)."""
    node = catalog.node(node_name)
    raw = _url(catalog, node)
    qualified = f"{schema}.{table}" if schema else table
    if raw is None:
        return _fallback(node, qualified)
    url = make_url(raw)
    host, port = url.host or "localhost", str(url.port or DEFAULT_PORTS.get(node.kind) or "")
    if node.kind == "postgresql":
        pg = ol_naming.Postgres(host, port, url.database or "postgres", schema or "public", table)
        return DatasetRef(pg.get_namespace(), pg.get_name())
    if node.kind == "mysql":  # a MySQL schema is its database
        my = ol_naming.MySQL(host, port, schema or url.database or "mysql", table)
        return DatasetRef(my.get_namespace(), my.get_name())
    if node.kind == "oracle":
        service = str(url.query.get("service_name") or url.database or "ORCL")
        # An Oracle user's tables are in the schema of its own name: the schema, not the login.
        owner = schema or (url.username or "").upper() or "DEFAULT"
        ora = ol_naming.Oracle(host, port, service, owner, table)
        return DatasetRef(ora.get_namespace(), ora.get_name())
    if node.kind == "sqlite":
        path = url.database or ":memory:"
        return DatasetRef(
            f"sqlite://{Path(path).resolve() if path != ':memory:' else path}", qualified
        )
    return _fallback(node, qualified)


def file_dataset(catalog: Catalog, node_name: str, path: str) -> DatasetRef:
    """A file or directory on a file node, ``path`` relative to the node's base directory."""
    node = catalog.node(node_name)
    raw = _url(catalog, node)
    if raw is None:
        return _fallback(node, "/" + path.strip("/"))
    parts = urlsplit(raw)
    full = (
        posixpath.normpath(posixpath.join(unquote(parts.path) or "/", path))
        if path
        else (unquote(parts.path) or "/")
    )
    if node.kind == "local":
        local = ol_naming.LocalFileSystem(full)
        return DatasetRef(local.get_namespace(), local.get_name())
    port = parts.port or DEFAULT_PORTS.get(node.kind)
    host = parts.hostname or "localhost"  # user and password are in netloc: never read
    return DatasetRef(f"{node.kind}://{host}:{port}", full)


def api_dataset(node: FrontEnd, operation: ApiOperation) -> DatasetRef:
    """An upstream api operation: ``https://host`` (a port when not the scheme's) + its path."""
    parts = urlsplit(node.base_url)
    if not parts.hostname:
        return _fallback(node, operation.path)
    scheme = parts.scheme or "https"
    port = f":{parts.port}" if parts.port and parts.port != DEFAULT_PORTS.get(scheme) else ""
    path = posixpath.join(parts.path or "/", operation.path.lstrip("/"))
    return DatasetRef(f"{scheme}://{parts.hostname}{port}", path)


def source_dataset(catalog: Catalog, resource: Resource) -> DatasetRef:
    """The provider's dataset of a table, file or folder resource."""
    if resource.kind == "table":
        assert resource.source_table is not None
        return table_dataset(
            catalog, resource.provider, resource.source_schema, resource.source_table
        )
    if resource.files is not None:
        return file_dataset(catalog, resource.provider, resource.files.path)
    node = catalog.node(resource.provider)
    return DatasetRef(f"{node.kind}://{node.name}", resource.code)
