"""Every registry equals its one declaration in ``exchange.kernel.kinds``.

Adding a dialect, a transport, a validator or a resource kind is its module plus one
registry line; these tests say which registry, schema enum or mapping was forgotten.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from connectors.arrow_types import arrow_type
from connectors.columns import ColumnSpec
from connectors.files.registry import TRANSPORTS
from connectors.http.registry import SCHEMES
from connectors.registry import CONNECTORS, normalise_url
from connectors.resolve import _CONN_TYPES
from exchange import flow
from exchange.catalog import api_spec
from exchange.kernel import kinds
from quality.validators import VALIDATORS
from schemas import load_schema


def schema_enum(*path: str) -> list[str]:
    node: Any = load_schema()["$defs"]
    for key in path:
        node = node[key]
    return list(node["enum"])


def test_the_dialect_registry_is_the_database_kinds() -> None:
    assert tuple(CONNECTORS) == kinds.DATABASE_KINDS
    assert {k: c.dialect for k, c in CONNECTORS.items()} == {k: k for k in kinds.DATABASE_KINDS}


def test_the_transport_registry_is_the_file_node_kinds() -> None:
    assert tuple(TRANSPORTS) == kinds.FILE_NODE_KINDS


def test_the_provisioner_registry_is_the_provisioned_kinds() -> None:
    from connectors.provision.registry import PROVISIONERS, provisioner_class

    assert tuple(PROVISIONERS) == kinds.PROVISIONED_KINDS
    assert set(kinds.PROVISIONED_KINDS) <= set(kinds.NODE_KINDS)
    assert {k: provisioner_class(k).kind for k in PROVISIONERS} == {k: k for k in PROVISIONERS}


def test_airflow_connection_types_reach_every_node_kind_that_has_a_connection() -> None:
    # A local directory is a path in the catalog, never a connection.
    assert set(_CONN_TYPES.values()) == set(kinds.NODE_KINDS) - {"local"}


def test_the_catalog_schema_enums_are_the_declarations() -> None:
    assert schema_enum("node", "properties", "kind") == list(kinds.NODE_KINDS)
    assert schema_enum("resource", "properties", "kind") == list(kinds.RESOURCE_KINDS)
    assert schema_enum("field", "properties", "type") == list(kinds.LOGICAL_TYPES)
    assert schema_enum("field_rules", "properties", "validator") == list(kinds.VALIDATOR_NAMES)
    assert schema_enum("http_auth", "properties", "scheme") == list(kinds.AUTH_SCHEMES)
    assert schema_enum("origin", "properties", "level") == list(api_spec.ORIGIN_LEVELS)
    assert schema_enum("api_operation", "properties", "method") == list(api_spec.API_METHODS)
    assert schema_enum("api_param", "properties", "in") == list(api_spec.PARAM_LOCATIONS)
    assert schema_enum("api_param", "properties", "type") == list(api_spec.PARAM_TYPES)


def test_the_auth_scheme_registry_is_the_declared_schemes_with_the_catalogs_options() -> None:
    # The catalog checks a node's auth without importing connectors (it sits below them in
    # the layers): its table of options must be the one each scheme reads.
    assert tuple(SCHEMES) == kinds.AUTH_SCHEMES
    assert tuple(api_spec.AUTH_OPTIONS) == kinds.AUTH_SCHEMES
    assert {n: (s.required, s.optional) for n, s in SCHEMES.items()} == api_spec.AUTH_OPTIONS
    assert {n: s.takes_secret for n, s in SCHEMES.items()} == {
        n: n != "none" for n in kinds.AUTH_SCHEMES
    }


def test_the_validators_are_the_declared_names() -> None:
    assert tuple(VALIDATORS) == kinds.VALIDATOR_NAMES


def test_every_resource_kind_has_steps_or_is_served_on_request() -> None:
    served = {"api"}  # proxied by the gateway on each call, never run as a batch
    assert set(flow.STEPS) | served == set(kinds.RESOURCE_KINDS)
    assert not set(flow.STEPS) & served


@pytest.mark.parametrize("dialect", kinds.DATABASE_KINDS)
@pytest.mark.parametrize("logical", kinds.LOGICAL_TYPES)
def test_every_dialect_and_arrow_map_every_logical_type(
    dialect: str, logical: str, tmp_path: Path
) -> None:
    column = ColumnSpec("c", logical, length=10, precision=12, scale=2)
    # Engines connect lazily: no server or file is touched to map a type.
    url = {"sqlite": f"sqlite:///{tmp_path / 'x.db'}"}.get(dialect, f"{dialect}://u@h/db")
    connector = CONNECTORS[dialect]("n", normalise_url(url))
    try:
        assert connector.column_type(column) is not None
    finally:
        connector.close()
    assert arrow_type(column) is not None
