"""Load a catalog YAML file, validate it, and report every problem with file:line and key path.

A message never repeats a value that may be a secret written by mistake (a token where a
credential reference belongs, a database URL where a variable name belongs): the schema's
errors under ``auth``, ``credential``, ``connection`` and ``base_url`` say what is wrong
without the value, and a YAML syntax error names its line and column, not the line's text.

Every DAG parse and every Airflow task start loads the catalog, so the file is read once with
libyaml's parser where PyYAML has it; the node tree that gives a problem its line is composed only
when there is a problem to place, and a syntax error is re-read with PyYAML's own parser so its
message is the same with or without libyaml.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from exchange.catalog.api_spec import api_problems, http_node_problems
from exchange.catalog.files_spec import files_problems
from exchange.catalog.model import UNIT_LEVELS, Catalog, build_catalog, department_list
from exchange.catalog.quality_spec import quality_problems
from exchange.kernel.errors import CatalogError
from exchange.kernel.kinds import DATABASE_KINDS, NODE_KINDS
from exchange.kernel.text import a_or_an
from schemas import load_schema

_VALIDATOR = jsonschema.Draft202012Validator(load_schema())

#: libyaml's safe loader where PyYAML was built with it (its parser is C, bench/dag_parse.py
#: shows what that saves); both construct the same values: the constructor and the resolver
#: are PyYAML's in either.
_FAST_LOADER: Any = yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader


def format_path(parts: list[str | int] | tuple[str | int, ...]) -> str:
    """``['resources', 2, 'fields', 5, 'type']`` -> ``resources[2].fields[5].type``."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out or "(top level)"


def _line_of(root: yaml.Node | None, parts: list[str | int] | tuple[str | int, ...]) -> int:
    """The 1-based line of the deepest node along ``parts`` that exists in the YAML tree."""
    node = root
    line = node.start_mark.line + 1 if node is not None else 1
    for p in parts:
        nxt: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode) and isinstance(p, str):
            for k, v in node.value:
                if k.value == p:
                    nxt = v
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(p, int) and p < len(node.value):
            nxt = node.value[p]
        if nxt is None:
            break
        node = nxt
        line = node.start_mark.line + 1
    return line


def _dicts(value: Any) -> list[tuple[int, dict[str, Any]]]:
    """The mapping items of a list, with their indexes (anything else is the schema's to flag)."""
    return [(i, v) for i, v in enumerate(value)] if isinstance(value, list) else []


def _strings(value: Any) -> list[tuple[int, str]]:
    return (
        [(i, v) for i, v in enumerate(value) if isinstance(v, str)]
        if isinstance(value, list)
        else []
    )


_IDENTIFIER = re.compile(load_schema()["$defs"]["identifier"]["pattern"])

#: Keys under which a value may be a secret written by mistake.
_SECRET_KEYS = frozenset({"auth", "credential", "connection", "base_url", "admin"})
# A key an "unexpected key" message may quote: a name, not a pasted value.
_QUOTABLE_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_TYPE_WORDS = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "null": "empty",
}
_REFERENCE_FORMS = {
    "env": "{env: VAR}",
    "airflow_conn_id": "{airflow_conn_id: ID}",
    "path": "{path: FILE}",
}
_BOUNDS = {
    "minimum": "less than the minimum of",
    "maximum": "greater than the maximum of",
    "exclusiveMinimum": "less than or equal to the minimum of",
    "exclusiveMaximum": "greater than or equal to the maximum of",
}


def _holds_secret_key(value: Any) -> bool:
    if isinstance(value, dict):
        return any(k in _SECRET_KEYS or _holds_secret_key(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_secret_key(v) for v in value)
    return False


def _schema_message(err: jsonschema.ValidationError) -> str:
    """jsonschema's message, or, where the value checked may hold a secret, one that says
    the same without it (jsonschema's messages quote the value they checked)."""
    parts = list(err.absolute_path)
    if not any(p in _SECRET_KEYS for p in parts) and not _holds_secret_key(err.instance):
        return err.message
    return _value_free_message(err, parts)


def _value_free_message(err: jsonschema.ValidationError, parts: list[Any]) -> str:
    rule: Any = err.validator
    limit: Any = err.validator_value
    schema: dict[str, Any] = err.schema if isinstance(err.schema, dict) else {}
    if rule == "required":
        return err.message  # names the missing key, from the schema
    if rule == "type":
        wanted = " or ".join(
            _TYPE_WORDS.get(t, t) for t in ([limit] if isinstance(limit, str) else limit)
        )
        if parts and parts[-1] in ("credential", "connection", "admin") and limit == "object":
            forms = " or ".join(_REFERENCE_FORMS.get(k, k) for k in schema.get("properties", {}))
            return f"must be a mapping ({forms}), never the secret itself"
        return f"the value must be {wanted}"
    if rule == "additionalProperties" and isinstance(err.instance, dict):
        known = schema.get("properties", {})
        extra = [str(k) for k in err.instance if k not in known]
        named = [repr(k) for k in extra if _QUOTABLE_KEY.fullmatch(k)]
        others = len(extra) - len(named)
        if others:
            named.append(
                "1 key that is no name" if others == 1 else f"{others} keys that are no names"
            )
        takes = ", ".join(known) or "no keys"
        return f"unexpected {', '.join(named) or 'keys'} (it takes: {takes})"
    if rule in ("minProperties", "maxProperties"):
        keys = list(schema.get("properties", {}))
        if schema.get("minProperties") == schema.get("maxProperties") == 1 and keys:
            return f"must have exactly one key: {' or '.join(keys)}"
        return f"must have {'at least' if rule == 'minProperties' else 'at most'} {limit} keys"
    if rule == "pattern":
        return f"the value does not match {limit!r}"
    if rule == "maxLength":
        return f"the value is longer than {limit} characters"
    if rule == "minLength":
        return (
            "the value must not be empty"
            if limit == 1
            else f"the value is shorter than {limit} characters"
        )
    if rule == "enum":
        return f"the value is not one of {limit!r}"
    if rule == "const":
        return f"the value must be {limit!r}"
    if rule in _BOUNDS:
        return f"the value is {_BOUNDS[rule]} {limit}"
    if rule in ("oneOf", "anyOf"):
        return "the value matches none of the allowed forms"
    return f"the value is not valid ({rule})"


def _semantic_problems(doc: dict[str, Any]) -> Iterator[tuple[list[str | int], str]]:
    """Cross-reference checks that JSON Schema cannot express.

    They run even when the schema found problems (so one pass reports everything), and so
    they read every key defensively.
    """
    nodes = {n.get("name"): n for _, n in _dicts(doc.get("nodes")) if isinstance(n, dict)}
    yield from _node_problems(doc)
    yield from _department_problems(doc)
    seen_codes: set[Any] = set()
    upstream: dict[Any, Any] = {}
    for i, r in _dicts(doc.get("resources")):
        if not isinstance(r, dict):
            continue
        here: list[str | int] = ["resources", i]
        if r.get("code") in seen_codes:
            yield here + ["code"], f"duplicate resource code {r.get('code')!r}"
        seen_codes.add(r.get("code"))
        provider = nodes.get(r.get("provider"))
        if provider is None:
            yield here + ["provider"], f"unknown node {r.get('provider')!r}"
        elif (
            r.get("kind") == "table"
            and provider.get("kind") in NODE_KINDS
            and provider.get("kind") not in DATABASE_KINDS
        ):
            yield (
                here + ["provider"],
                f"a table resource needs a database node, {r.get('provider')!r} "
                f"is {provider.get('kind')}",
            )
        yield from _trailing_newlines(r, here)
        names: list[str] = []
        for j, f in _dicts(r.get("fields")):
            if not isinstance(f, dict) or not isinstance(f.get("name"), str):
                continue
            at = here + ["fields", j]
            name, ftype = f["name"], f.get("type")
            if name.lower() in (n.lower() for n in names):
                yield at + ["name"], f"duplicate field {name!r}"
            names.append(name)
            # An api field describes a response value: its length is the upstream's business.
            if ftype in ("varchar", "char") and "length" not in f and r.get("kind") != "api":
                yield at, f"field {name!r} of type {ftype} needs a length"
            if ftype == "decimal":
                if "precision" not in f:
                    yield at, f"field {name!r} of type decimal needs a precision"
                elif isinstance(f.get("scale", 0), int) and isinstance(f["precision"], int):
                    if f.get("scale", 0) > f["precision"]:
                        yield at + ["scale"], "scale is larger than precision"
        for j, key in _strings(r.get("primary_key")):
            if key not in names:
                yield here + ["primary_key", j], f"{key!r} is not a field of the resource"
        if isinstance(r.get("cursor"), str) and r["cursor"] not in names:
            yield here + ["cursor"], f"{r['cursor']!r} is not a field of the resource"
        yield from _cursor_lag_problems(r, here)
        yield from _split_problems(r, here)
        yield from ((here + p, m) for p, m in quality_problems(r))
        yield from ((here + p, m) for p, m in files_problems(r, provider))
        yield from ((here + p, m) for p, m in api_problems(r, provider))
        yield from _origin_problems(r, here, upstream)
        yield from _authorization_problems(r, here, doc.get("departments"))


def _authorization_problems(
    r: dict[str, Any], here: list[str | int], declared: Any
) -> Iterator[tuple[list[str | int], str]]:
    """A joint resource's ``sources`` and a dedicated resource's ``dedicated_to`` are declared
    departments: an undeclared code would be a reviewer nobody can be, or a requester nobody is."""
    departments = declared if isinstance(declared, dict) else {}
    known = (
        f"declared: {department_list(departments)}"
        if departments
        else "the catalog declares no departments"
    )
    named: list[tuple[list[str | int], str]] = [
        (["sources", j], code) for j, code in _strings(r.get("sources"))
    ]
    if isinstance(r.get("dedicated_to"), str):
        named.append((["dedicated_to"], r["dedicated_to"]))
    for at, code in named:
        if code not in departments:
            yield here + at, f"department {code!r} is not declared in departments ({known})"


def _origin_problems(
    r: dict[str, Any], here: list[str | int], seen: dict[Any, Any]
) -> Iterator[tuple[list[str | int], str]]:
    """One catalog resource per upstream resource: an upstream application that has been
    proxied names the resource by its upstream code."""
    origin = r.get("origin")
    code = origin.get("upstream_code") if isinstance(origin, dict) else None
    if not isinstance(code, str):
        return
    if code in seen:
        yield (
            here + ["origin", "upstream_code"],
            f"upstream code {code!r} is already that of resource {seen[code]!r}",
        )
    else:
        seen[code] = r.get("code")


def _department_problems(doc: dict[str, Any]) -> Iterator[tuple[list[str | int], str]]:
    """The hierarchy: a supervisor is a declared department other than itself, no chain of
    supervisors comes back to where it started, and a unit (second-level unit, county
    department) names the department it gets its accounts through."""
    declared = doc.get("departments")
    if not isinstance(declared, dict):
        return
    entries = {c: v for c, v in declared.items() if isinstance(v, dict)}
    for code, entry in entries.items():
        at: list[str | int] = ["departments", code]
        boss = entry.get("supervisor")
        if entry.get("level") in UNIT_LEVELS and boss is None:
            level = entry["level"]
            yield at, f"department {code!r} is a {level}: name its supervisor (its code)"
        if not isinstance(boss, str):
            continue
        if boss == code:
            yield at + ["supervisor"], f"department {code!r} cannot supervise itself"
        elif boss not in declared:
            known = department_list(declared)
            message = f"supervisor {boss!r} is not declared in departments (declared: {known})"
            yield at + ["supervisor"], f"department {code!r}: {message}"
        else:
            seen: set[Any] = {code}
            up: Any = boss
            while isinstance(up, str) and up in entries and up not in seen:
                seen.add(up)
                up = entries[up].get("supervisor")
            if up == code:
                yield at + ["supervisor"], f"department {code!r}: its supervisors form a cycle"


def _node_problems(doc: dict[str, Any]) -> Iterator[tuple[list[str | int], str]]:
    """The nodes' own checks: unique names, a declared department, a path only for files,
    an http node's base URL and auth (and those keys on no other node)."""
    declared = doc.get("departments")
    departments = declared if isinstance(declared, dict) else {}
    seen_nodes: set[Any] = set()
    for i, n in _dicts(doc.get("nodes")):
        if not isinstance(n, dict):
            continue
        if n.get("name") in seen_nodes:
            yield ["nodes", i, "name"], f"duplicate node name {n.get('name')!r}"
        seen_nodes.add(n.get("name"))
        # A node's owner decides who may receive data on it: an undeclared code is a typo
        # that would leave the node nobody's (or someone else's), so it is refused here.
        dept = n.get("department")
        if isinstance(dept, str) and dept not in departments:
            yield (
                ["nodes", i, "department"],
                f"node {n.get('name')!r}: department {dept!r} is not declared in "
                + (
                    f"departments (declared: {department_list(departments)})"
                    if departments
                    else "departments (the catalog declares none)"
                ),
            )
        yield from ((["nodes", i, *p], m) for p, m in http_node_problems(n))
        conn = n.get("connection")
        if (
            isinstance(conn, dict)
            and "path" in conn
            and n.get("kind") not in ("sqlite", "local", "http")  # http: no connection at all
        ):
            yield (
                ["nodes", i, "connection", "path"],
                f"{a_or_an(str(n.get('kind')))} node needs 'env' or 'airflow_conn_id', not a path",
            )


_TIME_CURSORS = ("date", "timestamp", "timestamptz")
_NUMERIC_CURSORS = ("smallint", "integer", "bigint", "decimal", "double")


def _cursor_lag_problems(
    r: dict[str, Any], here: list[str | int]
) -> Iterator[tuple[list[str | int], str]]:
    """A look-back window needs a cursor it can be measured on: a duration for a date or
    timestamp cursor, a whole number for a numeric one."""
    lag = r.get("cursor_lag")
    if lag in (None, 0, "0") or isinstance(lag, bool):
        return
    fields = [f for _, f in _dicts(r.get("fields")) if isinstance(f, dict)]
    ctype = {f.get("name"): f.get("type") for f in fields}.get(r.get("cursor"))
    if r.get("cursor") is None:
        yield here + ["cursor_lag"], "a look-back window needs a cursor"
    elif isinstance(lag, str) and ctype not in _TIME_CURSORS and ctype is not None:
        fix = "give a number" if ctype in _NUMERIC_CURSORS else "it takes no lag"
        what = f"{lag!r} is a duration, but cursor {r['cursor']!r} is {ctype}"
        yield here + ["cursor_lag"], f"{what}: {fix}"
    elif isinstance(lag, int) and ctype not in _NUMERIC_CURSORS and ctype is not None:
        fix = "give a duration such as 10m" if ctype in _TIME_CURSORS else "it takes no lag"
        what = f"{lag} is a number, but cursor {r['cursor']!r} is {ctype}"
        yield here + ["cursor_lag"], f"{what}: {fix}"


def _split_problems(
    r: dict[str, Any], here: list[str | int]
) -> Iterator[tuple[list[str | int], str]]:
    """``split.by`` must be the primary key's (first) column: a key then never spans two
    ranges, so the duplicate-key check and each range's merge see all of a key's rows."""
    split, key = r.get("split"), r.get("primary_key")
    if not isinstance(split, dict) or not isinstance(split.get("by"), str):
        return
    by, code = split["by"], r.get("code")
    names = [f.get("name") for _, f in _dicts(r.get("fields")) if isinstance(f, dict)]
    if r.get("kind") != "table":
        yield here + ["split"], f"resource {code}: only a table resource can be split"
    elif by not in names:
        yield here + ["split", "by"], f"resource {code}: split by {by!r}, not a field of it"
    elif not isinstance(key, list) or not key or key[0] != by:
        yield (
            here + ["split", "by"],
            f"resource {code}: split by {by!r}, which is not its primary key or the first "
            f"column of it (primary_key: {key!r})",
        )


def _trailing_newlines(
    r: dict[str, Any], here: list[str | int]
) -> Iterator[tuple[list[str | int], str]]:
    """Names the schema's pattern lets through because ``$`` also matches before a final
    newline (a YAML block scalar makes one): they are no identifiers either."""
    raw_source = r.get("source")
    source: dict[str, Any] = raw_source if isinstance(raw_source, dict) else {}
    candidates: list[tuple[list[str | int], Any]] = [
        (here + ["source", k], source.get(k)) for k in ("schema", "table")
    ]
    candidates += [
        (here + ["fields", j, "name"], f.get("name"))
        for j, f in _dicts(r.get("fields"))
        if isinstance(f, dict)
    ]
    candidates += [(here + ["primary_key", j], k) for j, k in _strings(r.get("primary_key"))]
    candidates.append((here + ["cursor"], r.get("cursor")))
    for path, value in candidates:
        if (
            isinstance(value, str)
            and _IDENTIFIER.search(value)
            and not _IDENTIFIER.fullmatch(value)
        ):
            yield path, f"{value!r} is not a valid identifier (it ends with a line break)"


def _document_problems(doc: Any) -> list[tuple[list[str | int], str]]:
    """Every problem in ``doc`` as (key path, message), in the order the checks find them."""
    found: list[tuple[list[str | int], str]] = []
    for err in _VALIDATOR.iter_errors(doc):
        parts = list(err.absolute_path)
        found.append((parts, f"{format_path(parts)}: {_schema_message(err)}"))
    if isinstance(doc, dict):
        found += [(parts, f"{format_path(parts)}: {msg}") for parts, msg in _semantic_problems(doc)]
    return found


def _place_problems(
    problems: list[tuple[list[str | int], str]], root: yaml.Node | None, filename: str
) -> list[str]:
    """``problems`` as ``file:line path: message``, sorted by line."""
    found = [(_line_of(root, parts), msg) for parts, msg in problems]
    found.sort(key=lambda x: x[0])
    return [f"{filename}:{line} {msg}" for line, msg in found]


def validate_document(doc: Any, root: yaml.Node | None, filename: str) -> list[str]:
    """Every problem in ``doc`` as ``file:line path: message``, sorted by line."""
    return _place_problems(_document_problems(doc), root, filename)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """``line not valid YAML: what (column N)``, without the snippet of the line that
    PyYAML's own message quotes (the line may be the one that holds a pasted secret)."""
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark is not None else 1
    if not isinstance(exc, yaml.MarkedYAMLError):
        return f"{line} not valid YAML"
    what = "; ".join(x for x in (exc.context, exc.problem) if x) or "cannot parse"
    column = f" (column {mark.column + 1})" if mark is not None else ""
    return f"{line} not valid YAML: {what}{column}"


def _parse(text: str, filename: str) -> Any:
    """The YAML document in ``text`` (``{}`` when empty), or CatalogError naming the line."""
    try:
        doc = yaml.load(text, Loader=_FAST_LOADER)
    except yaml.YAMLError:
        # libyaml words its errors its own way: PyYAML's parser gives the message the
        # catalog's authors know, at the same line (and, were the two ever to disagree on a
        # document, PyYAML's reading is the one the catalog has always had).
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise CatalogError([f"{filename}:{_yaml_problem(exc)}"]) from None
    return {} if doc is None else doc


def _compose(text: str) -> yaml.Node | None:
    """The node tree of a document ``_parse`` read (with the parser that read it)."""
    try:
        return yaml.compose(text, Loader=_FAST_LOADER)
    except yaml.YAMLError:
        return yaml.compose(text, Loader=yaml.SafeLoader)


def load_catalog(path: str | Path) -> Catalog:
    """Read and validate a catalog file; raise CatalogError listing every problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError([f"{p}: cannot read catalog: {exc.strerror}"]) from None
    doc = _parse(text, p.name)
    problems = _document_problems(doc)
    if problems:
        # Only now the node tree: it is what knows each key's line.
        root = _compose(text)
        raise CatalogError(_place_problems(problems, root, p.name))
    return build_catalog(doc, str(p))
