"""The catalog as typed, immutable objects (built only from a validated document)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from exchange.catalog.api_spec import (
    DEFAULT_TIMEOUT_S,
    ApiOperation,
    ApiQuota,
    api_operations,
    api_quota,
    auth_options,
)
from exchange.catalog.api_spec import (
    ApiParam as ApiParam,  # re-exported: the catalog's objects all come from here
)
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
        if self.path:
            return f"path {self.path!r}"
        return "no connection"

    @property
    def empty(self) -> bool:
        """An http node's: it has a base URL and auth instead."""
        return self.env is None and self.airflow_conn_id is None and self.path is None


@dataclass(frozen=True)
class HttpAuth:
    """How the city authenticates to an http node: the scheme (``kinds.AUTH_SCHEMES``), its
    options and where the credential comes from; never the credential itself."""

    scheme: str  # none | header | tif
    credential: ConnectionRef | None = None  # None only for scheme none
    #: Every other key of ``auth``: ``header`` and ``prefix`` (header), ``paasid`` (tif).
    #: Left out of the hash (a dict has none), so that a node can still key a cache.
    options: Mapping[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Origin:
    """Where a proxied resource comes from: a national or provincial platform's catalog."""

    level: str  # national | provincial
    platform: str
    upstream_code: str
    approval_ref: str = ""

    def describe(self) -> str:
        """``provincial 河南省… 41000000SCJG/00012 (approval 豫数共享〔2026〕12号)``: how a list
        or a status shows where a proxied resource comes from."""
        approval = f" (approval {self.approval_ref})" if self.approval_ref else ""
        return f"{self.level} {self.platform} {self.upstream_code}{approval}"


@dataclass(frozen=True)
class FrontEnd:
    """A front-end node (前置机/前置库) of a department."""

    name: str
    kind: str  # one of kinds.NODE_KINDS (the schema's enum)
    #: Empty (``ConnectionRef().empty``) for an http node, which has base_url and auth instead.
    connection: ConnectionRef = ConnectionRef()
    title: str = ""
    #: The code of the department that owns the node (the catalog's ``departments``); only
    #: that department's subscriptions may target it. Empty: a node of no department.
    department: str = ""
    max_concurrent_extracts: int = 2
    #: An http node's base URL (no trailing slash; an operation's path is appended to it).
    base_url: str = ""
    auth: HttpAuth | None = None  # http nodes only
    timeout_s: float = DEFAULT_TIMEOUT_S
    #: The node's opt-in to a credential sent over an http:// base_url (a private network).
    plain_http: bool = False
    #: An administrative connection (a reference, never the secret) through which the engine
    #: provisions departments' accounts on the node (docs/provisioning.md); None: it does not.
    admin: ConnectionRef | None = None


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
    #: An api resource's field: where it lies in the response (``data.uscc``,
    #: ``data.shareholders[].name``); None for every other kind.
    path: str | None = None


@dataclass(frozen=True)
class Split:
    """How a full extract of a table is cut: ``chunks`` ranges of the key column ``by`` (the
    primary key, or the first column of a composite one, so no key spans two ranges)."""

    by: str
    chunks: int


@dataclass(frozen=True)
class Resource:
    """A catalog resource (资源): tables, files and folders are moved by runs; an api is
    served on each call by the gateway."""

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
    cursor_lag: str | int = 0  # look-back window below each watermark (docs/catalog.md)
    batch_size: int = 50_000
    fields: tuple[Field, ...] = ()
    quality: ResourceQuality = ResourceQuality()
    files: FilesSpec | None = None  # file and folder resources
    #: A granted column a subscriber's existing table lacks: ``add`` it (and say so) or
    #: ``refuse`` that subscriber.
    target_columns: Literal["add", "refuse"] = "add"
    #: A resource proxied from a national or provincial platform (any kind).
    origin: Origin | None = None
    operations: tuple[ApiOperation, ...] = ()  # api resources
    quota: ApiQuota = ApiQuota()  # api resources: calls per authorization code
    #: A full extract cut into key ranges, each extracted and loaded on its own (tables).
    split: Split | None = None
    #: Joint authorization (003 §15): the departments whose data the resource fuses; each
    #: reviews a conditional request, and it is approved only when all of them have.
    sources: tuple[str, ...] = ()
    #: A dedicated resource ("-xx 专用"): only this department may request it.
    dedicated_to: str | None = None

    def operation(self, name: str) -> ApiOperation:
        """The api resource's operation ``name``; NotFound naming the known ones."""
        from exchange.kernel.errors import NotFound

        for op in self.operations:
            if op.name == name:
                return op
        known = ", ".join(op.name for op in self.operations) or "none"
        raise NotFound(f"resource {self.code} has no operation {name!r} (known: {known})")

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


#: A department's level (使用对象: 市直部门, 二级机构, 县区大数据管理部门, 县区部门, 民生企业).
DEPARTMENT_LEVELS = (
    "city_department",
    "second_level_unit",
    "county_bureau",
    "county_department",
    "public_utility",
)
#: The levels that get accounts through (or with the consent of) a supervising department.
UNIT_LEVELS = frozenset({"second_level_unit", "county_department"})


@dataclass(frozen=True)
class Department:
    """A department as the catalog declares it: its code (the unified social credit code
    where it has one), name, level and supervising department's code (units have one)."""

    code: str
    name: str
    level: str = "city_department"
    supervisor: str | None = None


def department_list(departments: Mapping[Any, Any]) -> str:
    """``CODE (name), ...`` in code order, or ``none declared``: how every message that
    names the catalog's departments lists them (a value is a name or ``{name: ...}``)."""
    named = {c: (n.get("name") if isinstance(n, dict) else n) for c, n in departments.items()}
    shown = (f"{c} ({n})" if n and n != c else str(c) for c, n in named.items())
    return ", ".join(sorted(shown)) or "none declared"


@dataclass(frozen=True)
class Catalog:
    """Every department, node and resource declared in one catalog file."""

    nodes: dict[str, FrontEnd] = field(default_factory=dict)
    resources: dict[str, Resource] = field(default_factory=dict)
    path: str = ""
    #: Department code -> name (使用部门代码 -> 名称); names shown to people come from here.
    departments: dict[str, str] = field(default_factory=dict)
    #: Department code -> its level and supervisor (a code declared only by name is a
    #: ``city_department`` of no supervisor).
    department_info: dict[str, Department] = field(default_factory=dict)

    def department_name(self, code: str) -> str:
        """The declared name of a department, or the code itself if the catalog has none."""
        return self.departments.get(code, code)

    def describe_department(self, code: str) -> str:
        """``name (CODE)`` for messages, or just the code when no name is declared."""
        name = self.departments.get(code)
        return f"{name} ({code})" if name and name != code else code

    def department_list(self) -> str:
        """Every declared department, for a message that names the choices."""
        return department_list(self.departments)

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


def _front_end(n: dict[str, Any]) -> FrontEnd:
    auth = n.get("auth")
    return FrontEnd(
        name=n["name"],
        kind=n["kind"],
        connection=ConnectionRef(**n["connection"]) if "connection" in n else ConnectionRef(),
        title=n.get("title", ""),
        department=n.get("department", ""),
        max_concurrent_extracts=n.get("max_concurrent_extracts", 2),
        # One form for joining: base_url + "/ent/{uscc}" never gives a double slash.
        base_url=str(n.get("base_url", "")).rstrip("/"),
        auth=(
            HttpAuth(
                scheme=auth["scheme"],
                credential=ConnectionRef(**auth["credential"]) if "credential" in auth else None,
                options=auth_options(auth),
            )
            if auth
            else None
        ),
        timeout_s=float(n.get("timeout_s", DEFAULT_TIMEOUT_S)),
        plain_http=bool(n.get("plain_http", False)),
        admin=ConnectionRef(**n["admin"]) if "admin" in n else None,
    )


def _origin(doc: dict[str, Any] | None) -> Origin | None:
    if not doc:
        return None
    return Origin(
        level=doc["level"],
        platform=doc["platform"],
        upstream_code=doc["upstream_code"],
        approval_ref=doc.get("approval_ref", ""),
    )


def build_catalog(doc: dict[str, Any], path: str) -> Catalog:
    """Turn a schema-valid document into a Catalog."""
    nodes = {n["name"]: _front_end(n) for n in doc.get("nodes", [])}
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
                    path=f.get("path"),
                )
                for f in r.get("fields", [])
            ),
            quality=resource_quality(r.get("quality")),
            files=files_spec(r.get("files"), r["kind"]),
            target_columns=r.get("target_columns", "add"),
            origin=_origin(r.get("origin")),
            operations=api_operations(r.get("operations")),
            quota=api_quota(r.get("quota")),
            split=Split(r["split"]["by"], r["split"]["chunks"]) if r.get("split") else None,
            sources=tuple(r.get("sources", ())),
            dedicated_to=r.get("dedicated_to"),
        )
    info = {
        str(code): _department(str(code), value)
        for code, value in (doc.get("departments") or {}).items()
    }
    departments = {code: d.name for code, d in info.items()}
    return Catalog(
        nodes=nodes, resources=resources, path=path, departments=departments, department_info=info
    )


def _department(code: str, value: str | dict[str, Any]) -> Department:
    """A ``departments`` entry: ``CODE: name`` or ``CODE: {name, level, supervisor}``."""
    if isinstance(value, str):
        return Department(code, value)
    return Department(
        code, value["name"], value.get("level", "city_department"), value.get("supervisor")
    )
