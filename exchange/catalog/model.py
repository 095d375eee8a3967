"""The catalog as typed, immutable objects (built only from a validated document)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from exchange.catalog.files_spec import FilesSpec, files_spec
from exchange.catalog.quality_spec import (
    FieldRules,
    ResourceQuality,
    field_rules,
    resource_quality,
)


@dataclass(frozen=True)
class ConnectionRef:
    """Where a node's connection comes from; never the secret itself."""

    env: str | None = None
    airflow_conn_id: str | None = None
    path: str | None = None

    def describe(self) -> str:
        if self.env:
            return f"env ${self.env}"
        if self.airflow_conn_id:
            return f"airflow connection {self.airflow_conn_id!r}"
        return f"path {self.path!r}"


@dataclass(frozen=True)
class FrontEnd:
    """A front-end node (前置机/前置库) of a department."""

    name: str
    kind: str  # one of kinds.NODE_KINDS (the schema's enum)
    connection: ConnectionRef
    title: str = ""
    department: str = ""
    max_concurrent_extracts: int = 2


@dataclass(frozen=True)
class Field:
    """One field (信息项) of a resource, with its logical type."""

    name: str
    type: str
    nullable: bool = True
    length: int | None = None
    precision: int | None = None
    scale: int | None = None
    title: str = ""
    rules: FieldRules = FieldRules()


@dataclass(frozen=True)
class Resource:
    """A catalog resource (资源); for now tables are what the engine moves."""

    code: str
    name: str
    kind: str
    provider: str
    share: str
    update_cycle: str = "daily"
    source_schema: str | None = None
    source_table: str | None = None
    mode: Literal["incremental", "snapshot"] = "snapshot"
    primary_key: tuple[str, ...] = ()
    cursor: str | None = None
    cursor_lag: str | int = 0  # look-back window below each watermark (README, The catalog)
    batch_size: int = 50_000
    fields: tuple[Field, ...] = ()
    quality: ResourceQuality = ResourceQuality()
    files: FilesSpec | None = None  # file and folder resources
    #: A granted column a subscriber's existing table lacks: ``add`` it (and say so) or
    #: ``refuse`` that subscriber.
    target_columns: Literal["add", "refuse"] = "add"

    @property
    def delivers_table(self) -> bool:
        """A table, or a tabular file (csv/xlsx with fields): subscribers can get a table."""
        return self.kind == "table" or (
            self.files is not None and self.files.tabular and bool(self.fields)
        )

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)


@dataclass(frozen=True)
class Catalog:
    """Every node and resource declared in one catalog file."""

    nodes: dict[str, FrontEnd] = field(default_factory=dict)
    resources: dict[str, Resource] = field(default_factory=dict)
    path: str = ""

    def node(self, name: str) -> FrontEnd:
        from exchange.kernel.errors import NotFound

        try:
            return self.nodes[name]
        except KeyError:
            raise NotFound(f"no front-end node {name!r} in catalog {self.path}") from None

    def resource(self, code: str) -> Resource:
        from exchange.kernel.errors import NotFound

        try:
            return self.resources[code]
        except KeyError:
            known = ", ".join(sorted(self.resources)) or "none"
            raise NotFound(
                f"no resource {code!r} in catalog {self.path} (known: {known})"
            ) from None


def build_catalog(doc: dict[str, Any], path: str) -> Catalog:
    """Turn a schema-valid document into a Catalog."""
    nodes = {
        n["name"]: FrontEnd(
            name=n["name"],
            kind=n["kind"],
            connection=ConnectionRef(**n["connection"]),
            title=n.get("title", ""),
            department=n.get("department", ""),
            max_concurrent_extracts=n.get("max_concurrent_extracts", 2),
        )
        for n in doc.get("nodes", [])
    }
    resources = {}
    for r in doc.get("resources", []):
        source = r.get("source", {})
        resources[r["code"]] = Resource(
            code=r["code"],
            name=r["name"],
            kind=r["kind"],
            provider=r["provider"],
            share=r["share"],
            update_cycle=r.get("update_cycle", "daily"),
            source_schema=source.get("schema"),
            source_table=source.get("table"),
            mode=r.get("mode", "incremental" if r.get("cursor") else "snapshot"),
            primary_key=tuple(r.get("primary_key", ())),
            cursor=r.get("cursor"),
            cursor_lag=r.get("cursor_lag", 0),
            batch_size=r.get("batch_size", 50_000),
            fields=tuple(
                Field(
                    name=f["name"],
                    type=f["type"],
                    nullable=f.get("nullable", True),
                    length=f.get("length"),
                    precision=f.get("precision"),
                    scale=f.get("scale"),
                    title=f.get("title", ""),
                    rules=field_rules(f.get("rules")),
                )
                for f in r.get("fields", [])
            ),
            quality=resource_quality(r.get("quality")),
            files=files_spec(r.get("files"), r["kind"]),
            target_columns=r.get("target_columns", "add"),
        )
    return Catalog(nodes=nodes, resources=resources, path=path)
