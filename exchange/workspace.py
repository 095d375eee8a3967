"""A workspace: the catalog, the metadata store and the staging area that every step uses."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from connectors.base import DatabaseConnector, TableSpec
from connectors.registry import open_database
from connectors.resolve import resolve_url
from exchange.catalog import Catalog, Resource, load_catalog
from exchange.kernel.settings import Settings
from exchange.store import Store


@dataclass
class Workspace:
    """What a step needs besides the run id."""

    catalog: Catalog
    store: Store
    settings: Settings

    @classmethod
    def open(cls, catalog_path: str | Path, settings: Settings | None = None) -> Workspace:
        use_returning_allocator()
        settings = settings or Settings.from_env()
        return cls(load_catalog(catalog_path), Store(settings.db_url), settings)

    def database(self, node_name: str) -> DatabaseConnector:
        """A connector for a database node, its URL resolved from the node's reference now."""
        node = self.catalog.node(node_name)
        base = Path(self.catalog.path).parent if self.catalog.path else Path(".")
        connector = open_database(node.name, node.kind, resolve_url(node, base))
        # Its delivery markers are this installation's own (two stores may share a target).
        connector.installation = self.installation_id
        return connector

    @property
    def installation_id(self) -> str:
        """The metadata store's installation id (``Store.installation_id``)."""
        return self.store.installation_id

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def use_returning_allocator() -> None:
    """Have Arrow allocate with jemalloc and give freed pages back at once.

    Arrow's default allocator here (mimalloc) keeps what a batch freed, so a long run's RSS
    crept towards twice the working set; with jemalloc and no decay it stays near the batch
    size (docs/performance.md). Process-wide, so it is set where every step starts: opening a
    workspace.
    """
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
        pa.jemalloc_set_decay_ms(0)
    except NotImplementedError:  # a pyarrow built without jemalloc: keep its default
        pass


def source_spec(resource: Resource) -> TableSpec:
    """The provider's table as declared in the catalog."""
    assert resource.source_table is not None
    return TableSpec(
        name=resource.source_table,
        fields=resource.fields,
        primary_key=resource.primary_key,
        schema=resource.source_schema,
    )
