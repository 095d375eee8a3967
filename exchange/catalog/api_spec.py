"""Upstream interfaces in the catalog: http nodes (an upstream platform's gateway) and ``api``
resources (its operations, their params, the response's fields and the quotas), as typed
objects, and the checks the JSON Schema cannot express.

    nodes:
      - {name: prov_gw, kind: http, base_url: https://prov.example/api,
         auth: {scheme: tif, paasid: city-exchange, credential: {env: PROV_TIF_TOKEN}}}
    resources:
      - code: 410000-SCJG-API-0001
        kind: api
        provider: prov_gw
        operations:
          - name: by_uscc
            method: GET
            path: /ent/{uscc}
            params: [{name: uscc, in: path, pattern: "^[0-9A-Z]{18}$"}]
        fields: [{name: uscc, type: varchar, path: data.uscc}]
        quota: {daily: 10000, per_second: 20, lowered_daily: 1000}

Every message names what is wrong without echoing a value that could hold a secret (a
base URL with a password or a token in its query is described, never quoted; so are a
header option and the credential reference).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

from exchange.kernel.kinds import HTTP_NODE_KINDS, RESOURCE_KINDS

API_METHODS: tuple[str, ...] = ("GET", "POST")
PARAM_LOCATIONS: tuple[str, ...] = ("path", "query")
PARAM_TYPES: tuple[str, ...] = ("string", "integer", "number", "boolean")
ORIGIN_LEVELS: tuple[str, ...] = ("national", "provincial")

#: Each scheme's options (the keys of ``auth`` besides ``scheme`` and ``credential``):
#: (required, optional), one entry per ``kinds.AUTH_SCHEMES`` (``tests/test_registries.py``).
AUTH_OPTIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "none": ((), ()),
    "header": (("header",), ("prefix",)),
    "tif": (("paasid",), ()),
}

#: A response path: keys joined by dots, a key followed by ``[]`` walks every item of a list.
_KEY = r"[^.\[\]\s]+"
RESPONSE_PATH = re.compile(rf"^(?:{_KEY}(?:\[\])?\.)*{_KEY}$")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
# Headers the HTTP client sets itself: a scheme that wrote them would corrupt the request.
_CLIENT_HEADERS = frozenset(
    {"host", "content-length", "content-type", "transfer-encoding", "connection"}
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Keys of a table resource that mean nothing for a resource served on request.
_NOT_FOR_API = (
    "source",
    "mode",
    "primary_key",
    "cursor",
    "cursor_lag",
    "batch_size",
    "target_columns",
    "quality",
)
_HTTP_ONLY = ("base_url", "auth", "timeout_s", "plain_http")
# Hosts a credential may be sent to over plain http: the request never leaves the machine.
_LOOPBACK_NAMES = frozenset({"localhost"})

DEFAULT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ApiParam:
    """One param of an operation: in the path template (``{name}``) or the query string."""

    name: str
    location: str  # "path" | "query" (the YAML key ``in``)
    type: str = "string"  # string | integer | number | boolean
    required: bool = True  # path params are always required
    pattern: str | None = None
    max_length: int | None = None


@dataclass(frozen=True)
class ApiOperation:
    """One upstream call a subscriber may make: ``method base_url+path`` with its params."""

    name: str
    method: str
    path: str
    params: tuple[ApiParam, ...] = ()

    def param(self, name: str) -> ApiParam:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)


@dataclass(frozen=True)
class ApiQuota:
    """Calls allowed per authorization code: per day (Asia/Shanghai), per second, and per
    day while the code's department is suspended."""

    daily: int = 10000
    per_second: int = 20
    lowered_daily: int = 1000


def api_operations(docs: Any) -> tuple[ApiOperation, ...]:
    """From a schema-valid ``operations:`` list (empty when absent)."""
    return tuple(
        ApiOperation(
            name=op["name"],
            method=op["method"],
            path=op["path"],
            params=tuple(
                ApiParam(
                    name=p["name"],
                    location=p["in"],
                    type=p.get("type", "string"),
                    required=True if p["in"] == "path" else p.get("required", True),
                    pattern=p.get("pattern"),
                    max_length=p.get("max_length"),
                )
                for p in op.get("params", ())
            ),
        )
        for op in docs or ()
    )


def api_quota(doc: dict[str, Any] | None) -> ApiQuota:
    """From a schema-valid ``quota:`` mapping (the defaults when absent)."""
    q = doc or {}
    default = ApiQuota()
    daily = q.get("daily", default.daily)
    return ApiQuota(
        daily=daily,
        per_second=q.get("per_second", default.per_second),
        lowered_daily=q.get("lowered_daily", _lowered_default(daily)),
    )


def _lowered_default(daily: Any) -> Any:
    """A daily quota given without ``lowered_daily``: the default lowered quota, but never
    above the daily one (``daily: 300`` lowers to 300, not to a 1,000 it never had)."""
    default = ApiQuota().lowered_daily
    return min(daily, default) if isinstance(daily, int) else default


def auth_options(doc: dict[str, Any]) -> dict[str, str]:
    """Every key of a schema-valid ``auth:`` mapping but the scheme and the credential."""
    return {k: str(v) for k, v in doc.items() if k not in ("scheme", "credential")}


def _dicts(value: Any) -> list[tuple[int, dict[str, Any]]]:
    return (
        [(i, v) for i, v in enumerate(value) if isinstance(v, dict)]
        if isinstance(value, list)
        else []
    )


Problems = Iterator[tuple[list[str | int], str]]


# -- nodes ------------------------------------------------------------------------------------


def http_node_problems(n: dict[str, Any]) -> Problems:
    """An http node's base URL and auth; the keys only http nodes take, on other nodes
    (paths relative to the node)."""
    kind = n.get("kind")
    if kind not in HTTP_NODE_KINDS:
        if isinstance(kind, str):
            for key in _HTTP_ONLY:
                if key in n:
                    yield [key], f"{key} is for http nodes, not {kind} nodes"
        return
    if "connection" in n:
        yield (
            ["connection"],
            "an http node has no connection: base_url says where, auth how "
            "(auth.credential names the secret)",
        )
    if "max_concurrent_extracts" in n:
        yield (
            ["max_concurrent_extracts"],
            "an http node is called, not extracted: each api resource's quota limits the calls",
        )
    if isinstance(n.get("base_url"), str):
        found = list(base_url_problems(n["base_url"]))
        for msg in found:
            yield ["base_url"], msg
        if not found:
            yield from _plain_http_problems(n, urlsplit(n["base_url"]))
    if isinstance(n.get("auth"), dict):
        yield from ((["auth", *p], m) for p, m in auth_problems(n["auth"]))


def base_url_problems(url: str) -> Iterator[str]:
    """What is wrong with a base URL, never quoting it (it may hold a password or token)."""
    if _CONTROL.search(url) or any(c.isspace() for c in url):
        yield "base_url must not contain spaces, line breaks or control characters"
        return
    try:
        parts = urlsplit(url)
    except ValueError:  # a malformed bracketed host ("https://[::1/x")
        yield "base_url is not a valid URL (a host in [ ] must be an IPv6 address)"
        return
    if parts.scheme.lower() not in ("http", "https"):
        yield "base_url must start with http:// or https://"
        return
    if "@" in parts.netloc:
        yield (
            "base_url must not carry a user name or password: "
            "name the credential in auth.credential"
        )
    if not parts.hostname:
        yield "base_url names no host"
    try:
        _ = parts.port  # urlsplit checks the port only when it is read
    except ValueError:
        yield "base_url has a port that is not a number from 0 to 65535"
    if "?" in url:
        yield (
            "base_url must not carry a query (a token there ends up in logs): "
            "declare query params in the operations"
        )
    if "#" in url:
        yield "base_url must not carry a fragment"


def _plain_http_problems(n: dict[str, Any], url: SplitResult) -> Problems:
    """A scheme that sends a credential needs https: over plain http anyone on the path
    reads the token (header) or can replay the signed headers (tif). Loopback hosts and a
    node that says ``plain_http: true`` (a private government network) are the exceptions."""
    auth = n.get("auth")
    scheme = auth.get("scheme") if isinstance(auth, dict) else None
    if scheme not in AUTH_OPTIONS or scheme == "none" or url.scheme.lower() == "https":
        return
    if n.get("plain_http") is True or _is_loopback(url.hostname):
        return
    yield (
        ["base_url"],
        f"scheme {scheme} sends the credential on every call: base_url must be https:// "
        "(on a private network that has no TLS, say plain_http: true on the node)",
    )


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def auth_problems(auth: dict[str, Any]) -> Problems:
    """A scheme's credential and options (paths relative to ``auth``)."""
    scheme = auth.get("scheme")
    if scheme not in AUTH_OPTIONS:
        return  # the schema's enum reports it
    required, optional = AUTH_OPTIONS[scheme]
    if scheme == "none":
        if "credential" in auth:
            yield ["credential"], "scheme none takes no credential"
    elif "credential" not in auth:
        yield (
            [],
            f"scheme {scheme} needs a credential: {{env: VAR}} or {{airflow_conn_id: ID}}",
        )
    options = auth_options(auth)
    for key in required:
        if key not in options:
            yield [], f"scheme {scheme} needs {key!r}"
        elif not options[key].strip():
            yield [key], f"{key} must not be empty"
    takes = ", ".join(required + optional) or "none"
    for key, value in options.items():
        if key not in required + optional:
            yield [key], f"scheme {scheme} takes no option {key!r} (it takes: {takes})"
        elif _CONTROL.search(value):
            # A line break in a header value would let the catalog inject headers.
            yield [key], f"{key} must not contain a line break or control character"
    header = options.get("header")
    if scheme == "header" and header is not None and header.strip():
        if not _HEADER_NAME.fullmatch(header):
            # Not quoted: "Authorization: Bearer <token>" is the likely mistake here.
            yield (
                ["header"],
                "header is not an HTTP header name (letters, digits and !#$%&'*+-.^_`|~; "
                "no space or colon; the value goes in the credential)",
            )
        elif header.lower() in _CLIENT_HEADERS:
            yield ["header"], f"{header} is set by the HTTP client: name another header"


# -- resources --------------------------------------------------------------------------------


def api_problems(r: dict[str, Any], provider: dict[str, Any] | None) -> Problems:
    """An api resource's provider, fields, operations and quota; the api-only keys on
    resources of other kinds (paths relative to the resource)."""
    kind = r.get("kind")
    if kind != "api":
        if kind in RESOURCE_KINDS:
            yield from _not_api_problems(r, str(kind))
        return
    if provider is not None and provider.get("kind") not in HTTP_NODE_KINDS:
        yield (
            ["provider"],
            f"an api resource needs an http node, {r.get('provider')!r} is {provider.get('kind')}",
        )
    for key in _NOT_FOR_API:
        if key in r:
            yield [key], f"an api resource is served on request: it has no {key}"
    yield from _response_field_problems(r.get("fields"))
    names: set[Any] = set()
    for k, op in _dicts(r.get("operations")):
        if op.get("name") in names:
            yield ["operations", k, "name"], f"duplicate operation {op.get('name')!r}"
        names.add(op.get("name"))
        yield from ((["operations", k, *p], m) for p, m in operation_problems(op))
    yield from _quota_problems(r.get("quota"))


def _not_api_problems(r: dict[str, Any], kind: str) -> Problems:
    for key in ("operations", "quota"):
        if key in r:
            yield [key], f"only api resources have {key}, not {kind} resources"
    for j, f in _dicts(r.get("fields")):
        if "path" in f:
            yield (
                ["fields", j, "path"],
                f"only an api resource's fields have a response path, not a {kind}'s",
            )


def _response_field_problems(fields: Any) -> Problems:
    """Every field of an api resource says where it lies in the response, each elsewhere:
    no path inside another (a grant of the outer one would hand out the inner one too), no
    two paths that take one key for a list and for an object."""
    seen: list[_ResponsePath] = []
    for j, f in _dicts(fields):
        name, path = f.get("name"), f.get("path")
        if "rules" in f:
            yield (
                ["fields", j, "rules"],
                "an api resource's responses are passed through, not validated: no rules",
            )
        if path is None:
            yield (
                ["fields", j],
                f"field {name!r} of an api resource needs a path: where it lies in the "
                "response (a.b, a[].b)",
            )
            continue
        if not isinstance(path, str):
            continue  # the schema reports it
        if not RESPONSE_PATH.fullmatch(path):
            yield (
                ["fields", j, "path"],
                f"{path!r} is not a response path: keys joined by dots, [] after a list "
                "(data.uscc, data.shareholders[].name)",
            )
        else:
            here = _ResponsePath(path, name)
            for other in seen:
                clash = _path_clash(here, other)
                if clash is not None:
                    yield ["fields", j, "path"], clash
            seen.append(here)


@dataclass(frozen=True)
class _ResponsePath:
    """A field's response path as (key, is a list) segments: ``a[].b`` is ``a`` (a list),
    then ``b``."""

    path: str
    name: Any

    @property
    def segments(self) -> list[tuple[str, bool]]:
        return [(part.removesuffix("[]"), part.endswith("[]")) for part in self.path.split(".")]

    def describe(self) -> str:
        return f"{self.path!r} (field {self.name!r})"


def _path_clash(here: _ResponsePath, other: _ResponsePath) -> str | None:
    """Why ``here`` cannot stand beside ``other`` (a field's path checked against an earlier
    one), or None. The gateway filters an answer on the granted paths only, so each field
    must name a value of its own: a path that holds another would pass the inner field to a
    department granted only the outer one."""
    if here.path == other.path:
        return f"duplicate path {here.path!r} (also field {other.name!r})"
    a, b = here.segments, other.segments
    shared = min(len(a), len(b))
    for i in range(shared):
        (key, a_list), (b_key, b_list) = a[i], b[i]
        if key != b_key:
            return None  # they part here: two separate values
        if a_list != b_list and i < shared - 1:
            shapes = ("a list", "an object") if a_list else ("an object", "a list")
            return (
                f"paths {here.describe()} and {other.describe()} disagree: the first takes "
                f"{key!r} for {shapes[0]}, the second for {shapes[1]}"
            )
    if len(a) == len(b):  # the same keys, one ending in [] (kept whole by the filter)
        return f"paths {here.describe()} and {other.describe()} name the same value"
    outer, inner = (here, other) if len(a) < len(b) else (other, here)
    return (
        f"paths {here.describe()} and {other.describe()} overlap: a department granted "
        f"{outer.name!r} would also get {inner.name!r}; give each field a value of its own"
    )


def operation_problems(op: dict[str, Any]) -> Problems:
    """One operation's params and path template (paths relative to the operation)."""
    name = op.get("name")
    declared: dict[Any, tuple[int, dict[str, Any]]] = {}
    for m, p in _dicts(op.get("params")):
        pname = p.get("name")
        if pname in declared:
            yield ["params", m, "name"], f"duplicate param {pname!r}"
            continue
        declared[pname] = (m, p)
        yield from ((["params", m, *q], msg) for q, msg in param_problems(p))
    path = op.get("path")
    if not isinstance(path, str):
        return
    for msg in _template_problems(path):
        yield ["path"], msg
    placeholders = _PLACEHOLDER.findall(path)
    for x in sorted(set(placeholders)):
        if placeholders.count(x) > 1:
            yield ["path"], f"{{{x}}} appears {placeholders.count(x)} times in the path"
        found = declared.get(x)
        if found is None:
            yield (
                ["path"],
                f"{{{x}}} is not a param of operation {name!r}: declare it with in: path",
            )
        elif found[1].get("in") != "path":
            yield ["path"], f"{{{x}}} is a query param of operation {name!r}: make it in: path"
    for pname, (m, p) in declared.items():
        if p.get("in") == "path" and pname not in placeholders:
            yield (
                ["params", m, "name"],
                f"path param {pname!r} does not appear in the path {path!r}: write {{{pname}}}",
            )


def _template_problems(path: str) -> Iterator[str]:
    if _CONTROL.search(path) or any(c.isspace() for c in path):
        yield "the path must not contain spaces, line breaks or control characters"
    if "?" in path or "#" in path:
        yield "the path carries no query or fragment: declare query params with in: query"
    if _PLACEHOLDER.sub("", path).count("{") or _PLACEHOLDER.sub("", path).count("}"):
        yield "the path has a { or } that opens or closes no {param}"
    # Decoded first: an upstream that decodes %2e%2e before routing climbs all the same.
    if any(unquote(seg) in (".", "..") for seg in path.split("/")):
        yield "the path must not climb out of the node's base_url with '.' or '..'"
    if "%" in path:
        yield (
            "the path must not percent-encode (%): write the characters themselves, "
            "the client encodes them"
        )
    if "\\" in path:
        yield "the path must not contain a backslash: some upstreams take it for a /"
    if "//" in path:
        # With a host-only base_url, //host/... would read as another host.
        yield "the path must not contain an empty segment (//)"


def param_problems(p: dict[str, Any]) -> Problems:
    """One param's own keys (paths relative to the param)."""
    if p.get("in") == "path" and p.get("required") is False:
        yield ["required"], "a path param is always required"
    ptype = p.get("type", "string")
    for key in ("pattern", "max_length"):
        if key in p and ptype != "string":
            yield [key], f"{key} applies to string params, {p.get('name')!r} is {ptype}"
    pattern = p.get("pattern")
    if isinstance(pattern, str):
        try:
            re.compile(pattern)
        except re.error as exc:
            yield ["pattern"], f"not a valid regular expression: {exc}"


def _quota_problems(q: Any) -> Problems:
    if not isinstance(q, dict):
        return
    default = ApiQuota()
    daily = q.get("daily", default.daily)
    lowered = q.get("lowered_daily", _lowered_default(daily))
    if isinstance(daily, int) and isinstance(lowered, int) and lowered > daily:
        where: list[str | int] = ["quota", "lowered_daily"] if "lowered_daily" in q else ["quota"]
        yield where, f"lowered_daily ({lowered}) is larger than daily ({daily})"
