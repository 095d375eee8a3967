"""Load a catalog YAML file, validate it, and report every problem with file:line and key path."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from exchange.catalog.files_spec import files_problems
from exchange.catalog.model import Catalog, build_catalog
from exchange.catalog.quality_spec import quality_problems
from exchange.kernel.errors import CatalogError
from exchange.kernel.kinds import FILE_NODE_KINDS
from schemas import load_schema

_VALIDATOR = jsonschema.Draft202012Validator(load_schema())


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


def _semantic_problems(doc: dict[str, Any]) -> Iterator[tuple[list[str | int], str]]:
    """Cross-reference checks that JSON Schema cannot express.

    They run even when the schema found problems (so one pass reports everything), and so
    they read every key defensively.
    """
    nodes = {n.get("name"): n for _, n in _dicts(doc.get("nodes")) if isinstance(n, dict)}
    seen_nodes: set[Any] = set()
    for i, n in _dicts(doc.get("nodes")):
        if not isinstance(n, dict):
            continue
        if n.get("name") in seen_nodes:
            yield ["nodes", i, "name"], f"duplicate node name {n.get('name')!r}"
        seen_nodes.add(n.get("name"))
        conn = n.get("connection")
        if isinstance(conn, dict) and "path" in conn and n.get("kind") not in ("sqlite", "local"):
            yield (
                ["nodes", i, "connection", "path"],
                f"a {n.get('kind')} node needs 'env' or 'airflow_conn_id', not a path",
            )
    seen_codes: set[Any] = set()
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
        elif r.get("kind") == "table" and provider.get("kind") in FILE_NODE_KINDS:
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
            if ftype in ("varchar", "char") and "length" not in f:
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
        yield from ((here + p, m) for p, m in quality_problems(r))
        yield from ((here + p, m) for p, m in files_problems(r, provider))


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


def validate_document(doc: Any, root: yaml.Node | None, filename: str) -> list[str]:
    """Every problem in ``doc`` as ``file:line path: message``, sorted by line."""
    found: list[tuple[int, str]] = []
    for err in _VALIDATOR.iter_errors(doc):
        parts = list(err.absolute_path)
        found.append((_line_of(root, parts), f"{format_path(parts)}: {err.message}"))
    if isinstance(doc, dict):
        for parts, msg in _semantic_problems(doc):
            found.append((_line_of(root, parts), f"{format_path(parts)}: {msg}"))
    found.sort(key=lambda x: x[0])
    return [f"{filename}:{line} {msg}" for line, msg in found]


def load_catalog(path: str | Path) -> Catalog:
    """Read and validate a catalog file; raise CatalogError listing every problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError([f"{p}: cannot read catalog: {exc.strerror}"]) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise CatalogError([f"{p.name}:{line} not valid YAML: {exc}"]) from None
    if doc is None:
        doc = {}
    problems = validate_document(doc, root, p.name)
    if problems:
        raise CatalogError(problems)
    return build_catalog(doc, str(p))
