"""Load a catalog YAML file, validate it, and report every problem with file:line and key path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from exchange.catalog.model import DATABASE_KINDS, Catalog, build_catalog
from exchange.errors import CatalogError
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


def _semantic_problems(doc: dict[str, Any]) -> Iterator[tuple[list[str | int], str]]:
    """Cross-reference checks that JSON Schema cannot express."""
    nodes = {n.get("name"): n for n in doc.get("nodes", [])}
    seen_nodes: set[str] = set()
    for i, n in enumerate(doc.get("nodes", [])):
        if n["name"] in seen_nodes:
            yield ["nodes", i, "name"], f"duplicate node name {n['name']!r}"
        seen_nodes.add(n["name"])
        if "path" in n["connection"] and n["kind"] not in ("sqlite", "local"):
            yield (
                ["nodes", i, "connection", "path"],
                f"a {n['kind']} node needs 'env' or 'airflow_conn_id', not a path",
            )
    seen_codes: set[str] = set()
    for i, r in enumerate(doc.get("resources", [])):
        here: list[str | int] = ["resources", i]
        if r["code"] in seen_codes:
            yield here + ["code"], f"duplicate resource code {r['code']!r}"
        seen_codes.add(r["code"])
        provider = nodes.get(r["provider"])
        if provider is None:
            yield here + ["provider"], f"unknown node {r['provider']!r}"
        elif r["kind"] == "table" and provider["kind"] not in DATABASE_KINDS:
            yield (
                here + ["provider"],
                f"a table resource needs a database node, {r['provider']!r} is {provider['kind']}",
            )
        names: list[str] = []
        for j, f in enumerate(r.get("fields", [])):
            at = here + ["fields", j]
            if f["name"].lower() in (n.lower() for n in names):
                yield at + ["name"], f"duplicate field {f['name']!r}"
            names.append(f["name"])
            if f["type"] in ("varchar", "char") and "length" not in f:
                yield at, f"field {f['name']!r} of type {f['type']} needs a length"
            if f["type"] == "decimal":
                if "precision" not in f:
                    yield at, f"field {f['name']!r} of type decimal needs a precision"
                elif f.get("scale", 0) > f["precision"]:
                    yield at + ["scale"], "scale is larger than precision"
        for j, key in enumerate(r.get("primary_key", [])):
            if key not in names:
                yield here + ["primary_key", j], f"{key!r} is not a field of the resource"
        if "cursor" in r and r["cursor"] not in names:
            yield here + ["cursor"], f"{r['cursor']!r} is not a field of the resource"


def validate_document(doc: Any, root: yaml.Node | None, filename: str) -> list[str]:
    """Every problem in ``doc`` as ``file:line path: message``, sorted by line."""
    found: list[tuple[int, str]] = []
    for err in _VALIDATOR.iter_errors(doc):
        parts = list(err.absolute_path)
        found.append((_line_of(root, parts), f"{format_path(parts)}: {err.message}"))
    if not found and isinstance(doc, dict):
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
