"""A workspace: the catalog, the metadata store and the staging area that every step uses.

Opening one loads no connector: the dialect modules (pyarrow, each driver) are imported when a
step first opens a node, so that ``exchange status`` and the other store-only commands start
without them.
"""

from __future__ import annotations

import importlib.abc
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from exchange.catalog import Catalog, Resource, load_catalog
from exchange.kernel.settings import Settings
from exchange.store import Store

if TYPE_CHECKING:
    from connectors.base import DatabaseConnector, TableSpec


@dataclass
class Workspace:
    """What a step needs besides the run id."""

    catalog: Catalog
    store: Store
    settings: Settings

    @classmethod
    def open(cls, catalog_path: str | Path, settings: Settings | None = None) -> Workspace:
        use_returning_allocator(only_if_loaded=True)
        settings = settings or Settings.from_env()
        return cls(load_catalog(catalog_path), Store(settings.db_url), settings)

    def database(self, node_name: str) -> DatabaseConnector:
        """A connector for a database node, its URL resolved from the node's reference now."""
        from connectors.registry import open_database
        from connectors.resolve import resolve_url

        use_returning_allocator()
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


def use_returning_allocator(only_if_loaded: bool = False) -> None:
    """Have Arrow allocate with jemalloc and give freed pages back at once.

    Arrow's default allocator here (mimalloc) keeps what a batch freed, so a long run's RSS
    crept towards twice the working set; with jemalloc and no decay it stays near the batch
    size (docs/performance.md). Process-wide, so it is set where every step starts: opening a
    workspace and opening a node. ``only_if_loaded``: a workspace opened where pyarrow is not
    loaded yet (a store-only command) does not import it for this; every data step has it
    loaded by then (``exchange.flow`` imports it), or sets it when it opens a node.
    """
    if only_if_loaded and "pyarrow" not in sys.modules:
        return
    import pyarrow as pa

    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
        pa.jemalloc_set_decay_ms(0)
    except NotImplementedError:  # a pyarrow built without jemalloc: keep its default
        pass


def arrow_without_pandas() -> None:
    """Have pyarrow take pandas for not installed, until a call that needs it imports it.

    pandas is here only for Great Expectations (``exchange quality gx``), yet pyarrow imports
    it (0.4 s and more) the first time it converts any Python value, or when pyarrow.dataset
    is loaded (ADBC loads it), only to ask whether that value is a pandas object: no object
    on a run's path is one. Made while ``import pandas`` fails, that first probe records "no
    pandas", which is a setup pyarrow supports; a later call that needs pandas by name
    (``Table.to_pandas``) still imports it then, as pyarrow retries wherever pandas is
    required. For processes that run steps (``exchange run``); a no-op where pandas is
    already imported.
    """
    if "pandas" in sys.modules:
        return
    import pyarrow as pa

    refuse = _Refuse("pandas")
    sys.meta_path.insert(0, refuse)
    try:
        pa.array([0])  # the first probe, which pyarrow remembers
    finally:
        sys.meta_path.remove(refuse)


class _Refuse(importlib.abc.MetaPathFinder):
    """While on ``sys.meta_path``: importing ``name`` fails as if it were not installed."""

    def __init__(self, name: str) -> None:
        self.name = name

    def find_spec(self, fullname: str, path: object, target: object = None) -> None:
        if fullname == self.name:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


def source_spec(resource: Resource) -> TableSpec:
    """The provider's table as declared in the catalog."""
    from connectors.base import TableSpec

    assert resource.source_table is not None
    return TableSpec(
        name=resource.source_table,
        fields=resource.fields,
        primary_key=resource.primary_key,
        schema=resource.source_schema,
    )
