"""Upstream resources in the catalog: http nodes, api resources and origins load as typed
objects, and every mistake in them is reported as ``file:line key.path: message``."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import msgspec
import pytest

from connectors.resolve import resolve_url
from exchange import flow
from exchange.catalog import (
    ApiOperation,
    ApiParam,
    ApiQuota,
    ConnectionRef,
    HttpAuth,
    Origin,
    load_catalog,
)
from exchange.catalog.loader import validate_document
from exchange.gateway.filter import FieldFilter
from exchange.kernel.errors import BadInput, CatalogError, NotFound
from exchange.orchestration import dag_resources
from tests.test_catalog import edit, line_of, locations, problems_in, run_cli

REPO = Path(__file__).resolve().parents[1]
UPSTREAM = REPO / "schemas" / "examples" / "upstream.yaml"

# A valid catalog; the line numbers quoted in the tests below refer to this text.
VALID = """\
version: 1
departments: {CITY: 市政务服务和大数据管理局}
nodes:
  - name: prov_gw
    kind: http
    department: CITY
    base_url: https://prov.example/api/
    auth:
      scheme: tif
      paasid: city-exchange
      credential: {env: PROV_TIF_TOKEN}
  - name: city_fe
    kind: sqlite
    connection: {path: city.db}
resources:
  - code: 410000-SCJG-API-0001
    name: 企业基本信息查询
    kind: api
    provider: prov_gw
    share: conditional
    origin: {level: provincial, platform: 河南省共享平台, upstream_code: "41000000SCJG/00012"}
    operations:
      - name: by_uscc
        method: GET
        path: /ent/{uscc}
        params:
          - {name: uscc, in: path, pattern: "^[0-9A-Z]{18}$"}
          - {name: page, in: query, type: integer, required: false}
    fields:
      - {name: uscc, type: varchar, path: data.uscc}
      - {name: ent_name, type: varchar, path: data.name}
      - {name: shareholders, type: varchar, path: "data.shareholders[].name"}
    quota: {daily: 10000, per_second: 20, lowered_daily: 1000}
  - code: 410000-SCJG-0003
    name: 全省企业年报信息
    kind: table
    provider: city_fe
    share: conditional
    origin: {level: provincial, platform: 河南省共享平台, upstream_code: "41000000SCJG/00031"}
    source: {table: prov_annual_report}
    primary_key: [id]
    fields:
      - {name: id, type: bigint, nullable: false}
"""

API = "410000-SCJG-API-0001"
TABLE = "410000-SCJG-0003"
AUTH_BLOCK = """\
    auth:
      scheme: tif
      paasid: city-exchange
      credential: {env: PROV_TIF_TOKEN}
"""


def test_the_line_numbers_quoted_below_are_those_of_the_valid_catalog() -> None:
    assert line_of(VALID, "name: prov_gw") == 4
    assert line_of(VALID, "base_url:") == 7
    assert line_of(VALID, "auth:") == 8
    assert line_of(VALID, "name: city_fe") == 12
    assert line_of(VALID, f"code: {API}") == 16
    assert line_of(VALID, "path: /ent/{uscc}") == 25
    assert line_of(VALID, "{name: ent_name") == 31
    assert line_of(VALID, "quota:") == 33
    assert line_of(VALID, f"code: {TABLE}") == 34
    assert line_of(VALID, "41000000SCJG/00031") == 39


# -- valid catalogs ---------------------------------------------------------------------------


def test_an_http_node_loads_with_its_base_url_auth_and_no_connection(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(VALID, encoding="utf-8")

    node = load_catalog(path).node("prov_gw")

    assert node.kind == "http"
    assert node.base_url == "https://prov.example/api"  # the trailing slash dropped
    assert node.auth == HttpAuth(
        scheme="tif",
        credential=ConnectionRef(env="PROV_TIF_TOKEN"),
        options={"paasid": "city-exchange"},
    )
    assert node.timeout_s == 10.0
    assert node.connection.empty
    assert hash(node) == hash(node)  # a node can key a cache of clients
    assert node.department == "CITY"


def test_an_http_node_has_no_connection_to_open() -> None:
    node = load_catalog(UPSTREAM).node("prov_gw")

    with pytest.raises(BadInput, match="node 'prov_gw' is http: it has no connection to open"):
        resolve_url(node)


def test_an_api_resource_loads_with_its_operations_response_paths_and_quota(
    tmp_path: Path,
) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(VALID, encoding="utf-8")

    api = load_catalog(path).resource(API)

    assert api.kind == "api" and api.provider == "prov_gw"
    assert api.origin == Origin(
        level="provincial", platform="河南省共享平台", upstream_code="41000000SCJG/00012"
    )
    assert api.operations == (
        ApiOperation(
            name="by_uscc",
            method="GET",
            path="/ent/{uscc}",
            params=(
                ApiParam(name="uscc", location="path", pattern="^[0-9A-Z]{18}$"),
                ApiParam(name="page", location="query", type="integer", required=False),
            ),
        ),
    )
    assert api.operation("by_uscc").param("uscc").required
    assert [(f.name, f.path, f.length) for f in api.fields] == [
        ("uscc", "data.uscc", None),  # an api's varchar needs no length
        ("ent_name", "data.name", None),
        ("shareholders", "data.shareholders[].name", None),
    ]
    assert api.quota == ApiQuota(daily=10000, per_second=20, lowered_daily=1000)


def test_an_unknown_operation_is_not_found_naming_the_known_ones(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(VALID, encoding="utf-8")
    api = load_catalog(path).resource(API)

    with pytest.raises(NotFound, match=r"no operation 'by_name' \(known: by_uscc\)"):
        api.operation("by_name")


def test_a_quota_left_out_is_the_default_one(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(
        edit(VALID, "    quota: {daily: 10000, per_second: 20, lowered_daily: 1000}\n", ""),
        encoding="utf-8",
    )

    assert load_catalog(path).resource(API).quota == ApiQuota(10000, 20, 1000)


def test_a_small_daily_quota_alone_lowers_to_itself_not_to_the_larger_default(
    tmp_path: Path,
) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(
        edit(VALID, "{daily: 10000, per_second: 20, lowered_daily: 1000}", "{daily: 3}"),
        encoding="utf-8",
    )

    assert load_catalog(path).resource(API).quota == ApiQuota(3, 20, 3)


def test_a_proxied_table_is_an_ordinary_table_resource_carrying_its_origin(
    tmp_path: Path,
) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(VALID, encoding="utf-8")

    catalog = load_catalog(path)
    table = catalog.resource(TABLE)

    assert table.origin is not None and table.origin.upstream_code == "41000000SCJG/00031"
    assert table.origin.approval_ref == ""
    assert table.operations == () and all(f.path is None for f in table.fields)
    assert catalog.node(table.provider).kind == "sqlite"


def test_a_resource_without_origin_has_none(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    text = edit(
        VALID,
        "    origin: {level: provincial, platform: 河南省共享平台, "
        'upstream_code: "41000000SCJG/00031"}\n',
        "",
    )
    path.write_text(text, encoding="utf-8")

    assert load_catalog(path).resource(TABLE).origin is None


def test_a_header_scheme_keeps_its_options_and_scheme_none_needs_no_credential(
    tmp_path: Path,
) -> None:
    path = tmp_path / "catalog.yaml"
    header = (
        '    auth: {scheme: header, header: Authorization, prefix: "Bearer ",\n'
        "           credential: {airflow_conn_id: prov_gw}}\n"
        "    timeout_s: 2.5\n"
    )
    path.write_text(edit(VALID, AUTH_BLOCK, header), encoding="utf-8")
    node = load_catalog(path).node("prov_gw")
    assert node.auth is not None and node.auth.credential is not None
    assert (node.auth.scheme, dict(node.auth.options)) == (
        "header",
        {"header": "Authorization", "prefix": "Bearer "},
    )
    assert node.auth.credential.airflow_conn_id == "prov_gw"
    assert node.timeout_s == 2.5

    path.write_text(edit(VALID, AUTH_BLOCK, "    auth: {scheme: none}\n"), encoding="utf-8")
    assert load_catalog(path).node("prov_gw").auth == HttpAuth(scheme="none")


def test_the_upstream_example_catalog_loads() -> None:
    catalog = load_catalog(UPSTREAM)

    assert {n: catalog.node(n).kind for n in catalog.nodes} == {
        "prov_gw": "http",
        "nation_gw": "http",
        "city_fe": "sqlite",
        "tax_fe": "sqlite",
    }
    api = catalog.resource("410000-SCJG-API-0001")
    assert api.origin is not None and api.origin.approval_ref == "豫数共享〔2026〕12号"
    assert api.operation("by_uscc").path == "/ent/{uscc}"
    table = catalog.resource("410000-SCJG-0003")
    assert table.kind == "table" and table.origin is not None
    assert catalog.node(table.provider).department == "CITY"  # the city's own front-end node


def test_cli_validate_accepts_the_upstream_example_catalog() -> None:
    result = run_cli("catalog", "validate", str(UPSTREAM))

    assert result.returncode == 0, result.stderr
    assert "valid (4 nodes, 3 resources)" in result.stdout
    assert result.stderr == ""


def test_an_api_resource_is_served_on_request_never_run_nor_scheduled() -> None:
    catalog = load_catalog(UPSTREAM)

    with pytest.raises(BadInput, match="is served on request, not run"):
        flow.steps_for(catalog.resource("410000-SCJG-API-0001"))
    assert [r.code for r in dag_resources(catalog)] == ["410000-SCJG-0003"]


# -- nodes ------------------------------------------------------------------------------------

NODE_PROBLEMS = {
    "http node with a connection": (
        [("    department: CITY\n", "    connection: {env: PROV_URL}\n")],
        [
            "catalog.yaml:6 nodes[0].connection: an http node has no connection: base_url "
            "says where, auth how (auth.credential names the secret)"
        ],
    ),
    "http node without a base_url": (
        [("    base_url: https://prov.example/api/\n", "")],
        ["catalog.yaml:4 nodes[0]: 'base_url' is a required property"],
    ),
    "http node without auth": (
        [(AUTH_BLOCK, "")],
        ["catalog.yaml:4 nodes[0]: 'auth' is a required property"],
    ),
    "database node without a connection": (
        [("    connection: {path: city.db}\n", "")],
        ["catalog.yaml:12 nodes[1]: 'connection' is a required property"],
    ),
    "base_url on a database node": (
        [
            (
                "    connection: {path: city.db}\n",
                "    connection: {path: city.db}\n    timeout_s: 3\n",
            )
        ],
        ["catalog.yaml:15 nodes[1].timeout_s: timeout_s is for http nodes, not sqlite nodes"],
    ),
    "base_url of another protocol": (
        [("https://prov.example/api/", "ftp://prov.example/api/")],
        ["catalog.yaml:7 nodes[0].base_url: base_url must start with http:// or https://"],
    ),
    "base_url without a host": (
        [("https://prov.example/api/", "https:///api/")],
        ["catalog.yaml:7 nodes[0].base_url: base_url names no host"],
    ),
    "base_url with a port out of range": (
        [("https://prov.example/api/", "https://prov.example:99999/api/")],
        [
            "catalog.yaml:7 nodes[0].base_url: "
            "base_url has a port that is not a number from 0 to 65535"
        ],
    ),
    "base_url with a fragment": (
        [("https://prov.example/api/", "https://prov.example/api/#top")],
        ["catalog.yaml:7 nodes[0].base_url: base_url must not carry a fragment"],
    ),
    "base_url with a space": (
        [("https://prov.example/api/", '"https://prov.example/my api/"')],
        [
            "catalog.yaml:7 nodes[0].base_url: "
            "base_url must not contain spaces, line breaks or control characters"
        ],
    ),
    "unknown auth scheme": (
        [("scheme: tif", "scheme: oauth")],
        ["catalog.yaml:9 nodes[0].auth.scheme: the value is not one of ['none', 'header', 'tif']"],
    ),
    "scheme none with a credential": (
        [(AUTH_BLOCK, "    auth: {scheme: none, credential: {env: PROV_TIF_TOKEN}}\n")],
        ["catalog.yaml:8 nodes[0].auth.credential: scheme none takes no credential"],
    ),
    "scheme tif without a credential": (
        [("      credential: {env: PROV_TIF_TOKEN}\n", "")],
        [
            "catalog.yaml:9 nodes[0].auth: scheme tif needs a credential: "
            "{env: VAR} or {airflow_conn_id: ID}"
        ],
    ),
    "scheme tif without a paasid": (
        [("      paasid: city-exchange\n", "")],
        ["catalog.yaml:9 nodes[0].auth: scheme tif needs 'paasid'"],
    ),
    "scheme tif with an empty paasid": (
        [("paasid: city-exchange", "paasid: ''")],
        ["catalog.yaml:10 nodes[0].auth.paasid: paasid must not be empty"],
    ),
    "scheme tif with an option of another scheme": (
        [("paasid: city-exchange", "paasid: city-exchange\n      header: X-Key")],
        [
            "catalog.yaml:11 nodes[0].auth.header: "
            "scheme tif takes no option 'header' (it takes: paasid)"
        ],
    ),
    "scheme header without a header": (
        [(AUTH_BLOCK, "    auth: {scheme: header, credential: {env: K}}\n")],
        ["catalog.yaml:8 nodes[0].auth: scheme header needs 'header'"],
    ),
    "scheme header with a header name that is no token": (
        [(AUTH_BLOCK, "    auth: {scheme: header, header: X Api Key, credential: {env: K}}\n")],
        [
            "catalog.yaml:8 nodes[0].auth.header: header is not an HTTP header name (letters, "
            "digits and !#$%&'*+-.^_`|~; no space or colon; the value goes in the credential)"
        ],
    ),
    "scheme header naming a header the client sets": (
        [(AUTH_BLOCK, "    auth: {scheme: header, header: Host, credential: {env: K}}\n")],
        [
            "catalog.yaml:8 nodes[0].auth.header: "
            "Host is set by the HTTP client: name another header"
        ],
    ),
    "scheme header with a line break in its prefix": (
        [
            (
                AUTH_BLOCK,
                '    auth: {scheme: header, header: X-Key, prefix: "k\\r\\nX-Evil: 1",'
                " credential: {env: K}}\n",
            )
        ],
        [
            "catalog.yaml:8 nodes[0].auth.prefix: "
            "prefix must not contain a line break or control character"
        ],
    ),
    "a credential in a file": (
        [("credential: {env: PROV_TIF_TOKEN}", "credential: {path: token.txt}")],
        [
            "catalog.yaml:11 nodes[0].auth.credential: "
            "unexpected 'path' (it takes: env, airflow_conn_id)"
        ],
    ),
    "base_url with a bracketed host that is no IPv6 address": (
        [("https://prov.example/api/", "https://[::1/api/")],
        [
            "catalog.yaml:7 nodes[0].base_url: "
            "base_url is not a valid URL (a host in [ ] must be an IPv6 address)"
        ],
    ),
    "base_url with a bracketed name": (
        [("https://prov.example/api/", "https://[prov.example]/api/")],
        [
            "catalog.yaml:7 nodes[0].base_url: "
            "base_url is not a valid URL (a host in [ ] must be an IPv6 address)"
        ],
    ),
    "a credential sent over plain http": (
        [("https://prov.example/api/", "http://prov.example/api/")],
        [
            "catalog.yaml:7 nodes[0].base_url: scheme tif sends the credential on every call: "
            "base_url must be https:// (on a private network that has no TLS, say "
            "plain_http: true on the node)"
        ],
    ),
    "plain_http on a database node": (
        [
            (
                "    connection: {path: city.db}\n",
                "    connection: {path: city.db}\n    plain_http: true\n",
            )
        ],
        ["catalog.yaml:15 nodes[1].plain_http: plain_http is for http nodes, not sqlite nodes"],
    ),
    "a timeout of zero": (
        [("    department: CITY\n", "    timeout_s: 0\n")],
        ["catalog.yaml:6 nodes[0].timeout_s: 0 is less than or equal to the minimum of 0"],
    ),
}


@pytest.mark.parametrize(
    ("replacements", "expected"), NODE_PROBLEMS.values(), ids=NODE_PROBLEMS.keys()
)
def test_a_node_problem_is_reported_with_its_path(
    tmp_path: Path, replacements: list[tuple[str, str]], expected: list[str]
) -> None:
    text = VALID
    for old, new in replacements:
        text = edit(text, old, new)

    assert problems_in(tmp_path, text) == expected


@pytest.mark.parametrize(
    "url",
    [
        "https://reader:s3cret-value@prov.example/api",
        "https://prov.example/api?access_token=s3cret-value",
    ],
    ids=["user-info", "query"],
)
def test_a_base_url_holding_a_secret_is_refused_without_quoting_it(
    tmp_path: Path, url: str
) -> None:
    problems = problems_in(tmp_path, edit(VALID, "https://prov.example/api/", url))

    assert locations(problems) == ["catalog.yaml:7 nodes[0].base_url"]
    assert "user name or password" in problems[0] or "must not carry a query" in problems[0]
    assert "s3cret" not in problems[0] and "prov.example" not in problems[0]


SECRET = "S3cr3t-Sentinel-7f3a"
DB_NODE = "    connection: {path: city.db}\n"

# A secret written where the catalog expects something else: each edit of VALID, and the
# place the problem is reported at.
SECRET_MISTAKES = {
    "the token as the credential": (
        "credential: {env: PROV_TIF_TOKEN}",
        f"credential: {SECRET}",
        "catalog.yaml:11 nodes[0].auth.credential",
    ),
    "the token as the variable's name": (
        "credential: {env: PROV_TIF_TOKEN}",
        f"credential: {{env: '{SECRET}+/=='}}",
        "catalog.yaml:11 nodes[0].auth.credential.env",
    ),
    "the token as the Airflow connection id": (
        "credential: {env: PROV_TIF_TOKEN}",
        f"credential: {{airflow_conn_id: '{SECRET}/=='}}",
        "catalog.yaml:11 nodes[0].auth.credential.airflow_conn_id",
    ),
    "the token beside the variable's name": (
        "credential: {env: PROV_TIF_TOKEN}",
        f"credential: {{env: PROV_TIF_TOKEN, value: {SECRET}}}",
        "catalog.yaml:11 nodes[0].auth.credential",
    ),
    "the token as the credential mapping's key": (
        "credential: {env: PROV_TIF_TOKEN}",
        f"credential: {{'{SECRET}=': x}}",
        "catalog.yaml:11 nodes[0].auth.credential",
    ),
    "the token as the scheme": (
        "scheme: tif",
        f"scheme: Bearer {SECRET}",
        "catalog.yaml:9 nodes[0].auth.scheme",
    ),
    "a long token as an option": (
        "paasid: city-exchange",
        f"paasid: {SECRET * 20}",
        "catalog.yaml:10 nodes[0].auth.paasid",
    ),
    "a numeric token as an option": (
        "paasid: city-exchange",
        "paasid: 98765432101234567",
        "catalog.yaml:10 nodes[0].auth.paasid",
    ),
    "the whole header line as the header name": (
        AUTH_BLOCK,
        f'    auth: {{scheme: header, header: "Authorization: Bearer {SECRET}",'
        " credential: {env: K}}\n",
        "catalog.yaml:8 nodes[0].auth.header",
    ),
    "the token as auth": (
        AUTH_BLOCK,
        f"    auth: Bearer {SECRET}\n",
        "catalog.yaml:8 nodes[0].auth",
    ),
    "a base URL with a password, too long": (
        "https://prov.example/api/",
        f"https://reader:{SECRET}@prov.example/{'a' * 2000}",
        "catalog.yaml:7 nodes[0].base_url",
    ),
    "a database URL as the connection's variable": (
        DB_NODE,
        f"    connection: {{env: 'postgresql://reader:{SECRET}@db/x'}}\n",
        "catalog.yaml:14 nodes[1].connection.env",
    ),
    "a database URL as the connection": (
        DB_NODE,
        f"    connection: 'postgresql://reader:{SECRET}@db/x'\n",
        "catalog.yaml:14 nodes[1].connection",
    ),
    "a node written as a mapping, not a list": (
        "  - name: city_fe\n    kind: sqlite\n" + DB_NODE,
        "",
        "catalog.yaml:4 nodes",
    ),
}


@pytest.mark.parametrize(
    ("old", "new", "where"), SECRET_MISTAKES.values(), ids=SECRET_MISTAKES.keys()
)
def test_a_secret_written_by_mistake_is_never_repeated_in_a_problem(
    tmp_path: Path, old: str, new: str, where: str
) -> None:
    text = edit(VALID, old, new)
    if where.endswith(" nodes"):  # the first node's items, dedented out of the list
        text = edit(text, "nodes:\n  - name: prov_gw\n", "nodes:\n    name: prov_gw\n")
        text = edit(text, "credential: {env: PROV_TIF_TOKEN}", f"credential: {{env: {SECRET}}}")

    problems = problems_in(tmp_path, text)

    assert where in locations(problems)
    assert not [p for p in problems if SECRET in p or "98765432101234567" in p]


def test_a_yaml_syntax_error_names_the_line_not_its_text(tmp_path: Path) -> None:
    text = edit(VALID, "credential: {env: PROV_TIF_TOKEN}", f"credential: {{env: [{SECRET}}}")

    problems = problems_in(tmp_path, text)

    assert problems == [
        "catalog.yaml:11 not valid YAML: while parsing a flow sequence; "
        "expected ',' or ']', but got '}' (column 46)"
    ]


@pytest.mark.parametrize(
    ("base_url", "plain_http"),
    [
        ("http://127.0.0.1:8080/api", ""),
        ("http://127.9.9.9/api", ""),
        ("http://localhost/api", ""),
        ("http://[::1]:8080/api", ""),
        ("http://10.20.0.7/api", "    plain_http: true\n"),
    ],
    ids=["127.0.0.1", "127.0.0.0/8", "localhost", "::1", "plain_http"],
)
def test_a_credential_travels_over_plain_http_only_on_loopback_or_by_the_nodes_opt_in(
    tmp_path: Path, base_url: str, plain_http: str
) -> None:
    path = tmp_path / "catalog.yaml"
    text = edit(VALID, "https://prov.example/api/", base_url)
    path.write_text(edit(text, AUTH_BLOCK, AUTH_BLOCK + plain_http), encoding="utf-8")

    node = load_catalog(path).node("prov_gw")

    assert node.base_url == base_url and node.plain_http == bool(plain_http)


@pytest.mark.parametrize(
    ("auth", "plain_http", "refused"),
    [
        ("{scheme: header, header: X-Api-Key, credential: {env: K}}", "", True),
        ("{scheme: header, header: X-Api-Key, credential: {env: K}}", "false", True),
        ("{scheme: tif, paasid: x, credential: {env: K}}", "", True),
        ("{scheme: none}", "", False),
        ("{scheme: header, header: X-Api-Key, credential: {env: K}}", "true", False),
    ],
    ids=["header", "header, plain_http false", "tif", "none", "header, plain_http true"],
)
def test_a_scheme_that_sends_a_credential_needs_https_on_another_host(
    tmp_path: Path, auth: str, plain_http: str, refused: bool
) -> None:
    text = edit(VALID, "https://prov.example/api/", "http://prov.example/api/")
    opt_in = f"    plain_http: {plain_http}\n" if plain_http else ""
    text = edit(text, AUTH_BLOCK, f"    auth: {auth}\n{opt_in}")
    path = tmp_path / "catalog.yaml"
    path.write_text(text, encoding="utf-8")

    if not refused:
        assert load_catalog(path).node("prov_gw").base_url == "http://prov.example/api"
        return
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    assert locations(info.value.problems) == ["catalog.yaml:7 nodes[0].base_url"]
    assert "base_url must be https://" in info.value.problems[0]


# -- resources --------------------------------------------------------------------------------

RESOURCE_PROBLEMS = {
    "api resource on a database node": (
        [("provider: prov_gw", "provider: city_fe")],
        [
            "catalog.yaml:19 resources[0].provider: "
            "an api resource needs an http node, 'city_fe' is sqlite"
        ],
    ),
    "table resource on an http node": (
        [("provider: city_fe", "provider: prov_gw")],
        [
            "catalog.yaml:37 resources[1].provider: "
            "a table resource needs a database node, 'prov_gw' is http"
        ],
    ),
    "api resource without operations": (
        [
            (
                "    operations:\n      - name: by_uscc\n        method: GET\n"
                "        path: /ent/{uscc}\n        params:\n"
                '          - {name: uscc, in: path, pattern: "^[0-9A-Z]{18}$"}\n'
                "          - {name: page, in: query, type: integer, required: false}\n",
                "",
            )
        ],
        ["catalog.yaml:16 resources[0]: 'operations' is a required property"],
    ),
    "operation named twice": (
        [
            (
                "required: false}\n",
                "required: false}\n      - {name: by_uscc, method: GET, path: /ent2}\n",
            )
        ],
        ["catalog.yaml:29 resources[0].operations[1].name: duplicate operation 'by_uscc'"],
    ),
    "method other than GET and POST": (
        [("method: GET", "method: DELETE")],
        [
            "catalog.yaml:24 resources[0].operations[0].method: "
            "'DELETE' is not one of ['GET', 'POST']"
        ],
    ),
    "template naming an undeclared param": (
        [("path: /ent/{uscc}", "path: /ent/{uscc}/{year}")],
        [
            "catalog.yaml:25 resources[0].operations[0].path: "
            "{year} is not a param of operation 'by_uscc': declare it with in: path"
        ],
    ),
    "template naming a query param": (
        [("path: /ent/{uscc}", "path: /ent/{uscc}/{page}")],
        [
            "catalog.yaml:25 resources[0].operations[0].path: "
            "{page} is a query param of operation 'by_uscc': make it in: path"
        ],
    ),
    "path param missing from the template": (
        [("path: /ent/{uscc}", "path: /ent")],
        [
            "catalog.yaml:27 resources[0].operations[0].params[0].name: "
            "path param 'uscc' does not appear in the path '/ent': write {uscc}"
        ],
    ),
    "template with a query": (
        [("path: /ent/{uscc}", "path: /ent/{uscc}?full=1")],
        [
            "catalog.yaml:25 resources[0].operations[0].path: "
            "the path carries no query or fragment: declare query params with in: query"
        ],
    ),
    "template climbing out of the base URL": (
        [("path: /ent/{uscc}", "path: /../admin/{uscc}")],
        [
            "catalog.yaml:25 resources[0].operations[0].path: "
            "the path must not climb out of the node's base_url with '.' or '..'"
        ],
    ),
    "template climbing out with percent-encoded dots": (
        [("path: /ent/{uscc}", "path: /ent/%2e%2E/{uscc}")],
        [
            "catalog.yaml:25 resources[0].operations[0].path: "
            "the path must not climb out of the node's base_url with '.' or '..'",
            "catalog.yaml:25 resources[0].operations[0].path: the path must not "
            "percent-encode (%): write the characters themselves, the client encodes them",
        ],
    ),
    "template climbing out with one dot encoded": (
        [("path: /ent/{uscc}", "path: /ent/.%2e/{uscc}")],
        [
            "catalog.yaml:25 resources[0].operations[0].path: "
            "the path must not climb out of the node's base_url with '.' or '..'",
            "catalog.yaml:25 resources[0].operations[0].path: the path must not "
            "percent-encode (%): write the characters themselves, the client encodes them",
        ],
    ),
    "template with a percent-encoded character": (
        [("path: /ent/{uscc}", "path: /ent%2Fx/{uscc}")],
        [
            "catalog.yaml:25 resources[0].operations[0].path: the path must not "
            "percent-encode (%): write the characters themselves, the client encodes them"
        ],
    ),
    "template with backslashes": (
        [("path: /ent/{uscc}", "path: '/ent/{uscc}\\..\\x'")],
        [
            "catalog.yaml:25 resources[0].operations[0].path: "
            "the path must not contain a backslash: some upstreams take it for a /"
        ],
    ),
    "template with an empty segment": (
        [("path: /ent/{uscc}", "path: //evil.example/{uscc}")],
        [
            "catalog.yaml:25 resources[0].operations[0].path: "
            "the path must not contain an empty segment (//)"
        ],
    ),
    "template with a stray brace": (
        [("path: /ent/{uscc}", "path: /ent/{uscc}}")],
        [
            "catalog.yaml:25 resources[0].operations[0].path: "
            "the path has a { or } that opens or closes no {param}"
        ],
    ),
    "template not starting with a slash": (
        [("path: /ent/{uscc}", "path: ent/{uscc}")],
        ["catalog.yaml:25 resources[0].operations[0].path: 'ent/{uscc}' does not match '^/'"],
    ),
    "param named twice": (
        [("{name: page, in: query", "{name: uscc, in: query")],
        ["catalog.yaml:28 resources[0].operations[0].params[1].name: duplicate param 'uscc'"],
    ),
    "optional path param": (
        [("{name: uscc, in: path,", "{name: uscc, in: path, required: false,")],
        [
            "catalog.yaml:27 resources[0].operations[0].params[0].required: "
            "a path param is always required"
        ],
    ),
    "pattern on an integer param": (
        [("type: integer, required: false}", "type: integer, required: false, max_length: 3}")],
        [
            "catalog.yaml:28 resources[0].operations[0].params[1].max_length: "
            "max_length applies to string params, 'page' is integer"
        ],
    ),
    "param in the body": (
        [("{name: page, in: query", "{name: page, in: body")],
        [
            "catalog.yaml:28 resources[0].operations[0].params[1].in: "
            "'body' is not one of ['path', 'query']"
        ],
    ),
    "api field without a path": (
        [("{name: ent_name, type: varchar, path: data.name}", "{name: ent_name, type: varchar}")],
        [
            "catalog.yaml:31 resources[0].fields[1]: field 'ent_name' of an api resource "
            "needs a path: where it lies in the response (a.b, a[].b)"
        ],
    ),
    "two api fields at one path": (
        [("path: data.name}", "path: data.uscc}")],
        [
            "catalog.yaml:31 resources[0].fields[1].path: "
            "duplicate path 'data.uscc' (also field 'uscc')"
        ],
    ),
    "a field path inside another field's": (
        [
            (
                '      - {name: shareholders, type: varchar, path: "data.shareholders[].name"}\n',
                '      - {name: shareholders, type: varchar, path: "data.shareholders"}\n'
                "      - {name: shareholder_ids, type: varchar,"
                ' path: "data.shareholders[].id_card"}\n',
            )
        ],
        [
            "catalog.yaml:33 resources[0].fields[3].path: paths 'data.shareholders[].id_card' "
            "(field 'shareholder_ids') and 'data.shareholders' (field 'shareholders') overlap: "
            "a department granted 'shareholders' would also get 'shareholder_ids'; "
            "give each field a value of its own"
        ],
    ),
    "a field path holding every other": (
        [("path: data.name}", "path: data}")],
        [
            "catalog.yaml:31 resources[0].fields[1].path: paths 'data' (field 'ent_name') and "
            "'data.uscc' (field 'uscc') overlap: a department granted 'ent_name' would also "
            "get 'uscc'; give each field a value of its own",
            "catalog.yaml:32 resources[0].fields[2].path: paths 'data.shareholders[].name' "
            "(field 'shareholders') and 'data' (field 'ent_name') overlap: a department "
            "granted 'ent_name' would also get 'shareholders'; give each field a value of its own",
        ],
    ),
    "two field paths taking one key for a list and an object": (
        [("path: data.name}", "path: data.shareholders.count}")],
        [
            "catalog.yaml:32 resources[0].fields[2].path: paths 'data.shareholders[].name' "
            "(field 'shareholders') and 'data.shareholders.count' (field 'ent_name') disagree: "
            "the first takes 'shareholders' for a list, the second for an object"
        ],
    ),
    "response path with an index": (
        [('"data.shareholders[].name"', '"data.shareholders[0].name"')],
        [
            "catalog.yaml:32 resources[0].fields[2].path: 'data.shareholders[0].name' is not "
            "a response path: keys joined by dots, [] after a list "
            "(data.uscc, data.shareholders[].name)"
        ],
    ),
    "api field with quality rules": (
        [("path: data.name}", "path: data.name, rules: {unique: true}}")],
        [
            "catalog.yaml:31 resources[0].fields[1].rules: "
            "an api resource's responses are passed through, not validated: no rules"
        ],
    ),
    "table field with a response path": (
        [("{name: id, type: bigint, nullable: false}", "{name: id, type: bigint, path: id}")],
        [
            "catalog.yaml:43 resources[1].fields[0].path: "
            "only an api resource's fields have a response path, not a table's"
        ],
    ),
    "table resource with a quota": (
        [("    primary_key: [id]\n", "    primary_key: [id]\n    quota: {daily: 5}\n")],
        ["catalog.yaml:42 resources[1].quota: only api resources have quota, not table resources"],
    ),
    "api resource with a primary key": (
        [("    quota: {", "    primary_key: [uscc]\n    quota: {")],
        [
            "catalog.yaml:33 resources[0].primary_key: "
            "an api resource is served on request: it has no primary_key"
        ],
    ),
    "lowered daily quota above the daily one": (
        [("lowered_daily: 1000}", "lowered_daily: 20000}")],
        [
            "catalog.yaml:33 resources[0].quota.lowered_daily: "
            "lowered_daily (20000) is larger than daily (10000)"
        ],
    ),
    "quota of zero per second": (
        [("per_second: 20", "per_second: 0")],
        ["catalog.yaml:33 resources[0].quota.per_second: 0 is less than the minimum of 1"],
    ),
    "origin without an upstream code": (
        [(', upstream_code: "41000000SCJG/00031"}', "}")],
        ["catalog.yaml:39 resources[1].origin: 'upstream_code' is a required property"],
    ),
    "origin of a municipal platform": (
        [
            (
                'level: provincial, platform: 河南省共享平台, upstream_code: "41000000SCJG/00031"',
                'level: municipal, platform: 河南省共享平台, upstream_code: "41000000SCJG/00031"',
            )
        ],
        [
            "catalog.yaml:39 resources[1].origin.level: "
            "'municipal' is not one of ['national', 'provincial']"
        ],
    ),
    "two resources of one upstream code": (
        [('"41000000SCJG/00031"', '"41000000SCJG/00012"')],
        [
            "catalog.yaml:39 resources[1].origin.upstream_code: upstream code "
            "'41000000SCJG/00012' is already that of resource '410000-SCJG-API-0001'"
        ],
    ),
}


@pytest.mark.parametrize(
    ("replacements", "expected"), RESOURCE_PROBLEMS.values(), ids=RESOURCE_PROBLEMS.keys()
)
def test_a_resource_problem_is_reported_with_its_path(
    tmp_path: Path, replacements: list[tuple[str, str]], expected: list[str]
) -> None:
    text = VALID
    for old, new in replacements:
        text = edit(text, old, new)

    assert problems_in(tmp_path, text) == expected


# Response paths, among them paths inside others and paths that disagree on a key's shape.
CANDIDATE_PATHS = [
    "data",
    "data.uscc",
    "data.name",
    "data.shareholders",
    "data.shareholders.count",
    "data.shareholders[].name",
    "data.shareholders[].id_card",
    "data.shareholders[].cards[].no",
    "data.uscc_en",
    "total",
]


def _body_of(paths: list[str]) -> dict[str, Any]:
    """An answer holding a value at each path, ``<path>``, one element per list."""
    doc: dict[str, Any] = {}
    for path in paths:
        node = doc
        parts = path.split(".")
        for part in parts[:-1]:
            key = part.removesuffix("[]")
            if part.endswith("[]"):
                node = node.setdefault(key, [{}])[0]
            else:
                node = node.setdefault(key, {})
        node[parts[-1]] = f"<{path}>"
    return doc


def _api_fields(paths: tuple[str, ...]) -> dict[str, Any]:
    doc = {
        "nodes": [
            {
                "name": "gw",
                "kind": "http",
                "base_url": "https://x.example",
                "auth": {"scheme": "none"},
            }
        ],
        "resources": [
            {
                "code": "API-1",
                "name": "api",
                "kind": "api",
                "provider": "gw",
                "share": "unconditional",
                "operations": [{"name": "get", "method": "GET", "path": "/x"}],
                "fields": [
                    {"name": f"f{i}", "type": "varchar", "path": p} for i, p in enumerate(paths)
                ],
            }
        ],
    }
    return doc


def test_whatever_two_paths_the_catalog_accepts_the_gateway_filters_apart() -> None:
    refused = set()
    for pair in itertools.permutations(CANDIDATE_PATHS, 2):
        if validate_document(_api_fields(pair), None, "c.yaml"):
            refused.add(frozenset(pair))
            continue
        body = msgspec.json.encode(_body_of(list(pair)))
        both = FieldFilter(list(pair)).apply(body)  # compiles: the shapes agree
        assert f"<{pair[0]}>".encode() in both and f"<{pair[1]}>".encode() in both
        # a grant of the one field never hands out the other
        assert f"<{pair[1]}>".encode() not in FieldFilter([pair[0]]).apply(body), pair

    inside_data = [p for p in CANDIDATE_PATHS if p.startswith("data.")]
    list_items = ["data.shareholders[].name", "data.shareholders[].id_card"]
    list_items.append("data.shareholders[].cards[].no")
    assert refused == {
        # a path inside another
        *(frozenset({"data", p}) for p in inside_data),
        *(frozenset({"data.shareholders", p}) for p in ["data.shareholders.count", *list_items]),
        # shareholders an object for the one, a list for the other
        *(frozenset({"data.shareholders.count", p}) for p in list_items),
    }
    assert len(refused) == 15


def test_a_pattern_that_does_not_compile_is_reported_with_the_reason(tmp_path: Path) -> None:
    problems = problems_in(tmp_path, edit(VALID, '"^[0-9A-Z]{18}$"', '"^[0-9A-Z{18}$"'))

    assert locations(problems) == ["catalog.yaml:27 resources[0].operations[0].params[0].pattern"]
    assert "not a valid regular expression: unterminated character set" in problems[0]


def test_every_problem_of_an_upstream_catalog_is_reported_at_once_sorted_by_line(
    tmp_path: Path,
) -> None:
    text = VALID
    text = edit(text, "lowered_daily: 1000}", "lowered_daily: 20000}")  # line 33
    text = edit(text, "path: data.name}", "path: data.uscc}")  # line 31
    text = edit(text, "path: /ent/{uscc}", "path: /ent/{uscc}/{year}")  # line 25
    text = edit(text, "      paasid: city-exchange\n", "      paasid: ''\n")  # line 10
    text = edit(text, "https://prov.example/api/", "ftp://prov.example/api/")  # line 7

    assert locations(problems_in(tmp_path, text)) == [
        "catalog.yaml:7 nodes[0].base_url",
        "catalog.yaml:10 nodes[0].auth.paasid",
        "catalog.yaml:25 resources[0].operations[0].path",
        "catalog.yaml:31 resources[0].fields[1].path",
        "catalog.yaml:33 resources[0].quota.lowered_daily",
    ]


def test_cli_validate_lists_the_upstream_problems_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    text = edit(VALID, "provider: prov_gw", "provider: city_fe")
    path.write_text(edit(text, "scheme: tif", "scheme: oauth"), encoding="utf-8")

    result = run_cli("catalog", "validate", str(path))

    assert result.returncode == 2
    assert locations(result.stderr.splitlines()) == [
        "catalog.yaml:9 nodes[0].auth.scheme",
        "catalog.yaml:19 resources[0].provider",
    ]
