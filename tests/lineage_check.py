"""A checker of emitted OpenLineage events, for the tests and CI (docs/lineage.md says what
it checks).

``check_event(doc)`` returns what is wrong with one event (an empty list: nothing):

1. it round-trips through openlineage-python's generated classes, strictly
   (``exchange.lineage.structure``): every facet is the class its ``_schemaURL`` names, under
   the spec's key, with no key the class does not declare (unless the spec lets that object
   carry more), every required key present, enums and ids valid (a UUID run id, an ISO-8601
   event time with a time); and the classes serialise it back to the same JSON;
2. the run event's own rules: START, COMPLETE or FAIL; a FAIL has an ``errorMessage``; every
   column-lineage input names a dataset among the event's inputs and a field of its schema;
3. with ``$OPENLINEAGE_SPEC_DIR`` naming a directory with the spec's JSON schemas
   (``OpenLineage.json`` and ``facets/*.json``), it validates against them with jsonschema.

``read_events(path)`` reads a file transport's output (one event per line, or a directory of
them); ``assert_valid(events)`` raises naming every problem.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from openlineage.client.serde import Serde

from exchange.lineage.structure import NotAnEvent, event_from_dict

STATES = ("START", "COMPLETE", "FAIL")


def read_events(path: Path) -> list[dict[str, Any]]:
    """Every event a file transport wrote to ``path`` (a file, or a directory of files)."""
    files = sorted(path.iterdir()) if path.is_dir() else [path] if path.exists() else []
    out = []
    for f in files:
        for line in f.read_text(encoding="utf-8").splitlines():
            if line.strip():
                out.append(json.loads(line))
    return out


def _round_trip(doc: dict[str, Any]) -> list[str]:
    try:
        event = event_from_dict(doc, strict=True)
    except NotAnEvent as exc:
        return [str(exc)]
    again = Serde.to_dict(event)
    if again != doc:
        return [f"$: does not serialise back to itself ({_diff(doc, again, '$')})"]
    return []


def _diff(a: Any, b: Any, where: str) -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return _diff(a.get(k), b.get(k), f"{where}.{k}")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return _diff(x, y, f"{where}[{i}]")
    return f"{where}: {a!r} became {b!r}"


def _rules(doc: dict[str, Any]) -> list[str]:
    problems = []
    state = doc.get("eventType")
    if state not in STATES:
        problems.append(f"$.eventType: {state!r} is not one of {STATES}")
    if state == "FAIL" and "errorMessage" not in doc.get("run", {}).get("facets", {}):
        problems.append("$.run.facets: a FAIL event has no errorMessage")
    inputs = {
        (i["namespace"], i["name"]): {
            f["name"] for f in i.get("facets", {}).get("schema", {}).get("fields", [])
        }
        for i in doc.get("inputs", [])
    }
    for n, out in enumerate(doc.get("outputs", [])):
        lineage = out.get("facets", {}).get("columnLineage", {}).get("fields", {})
        for column, spec in lineage.items():
            for src in spec.get("inputFields", []):
                key = (src["namespace"], src["name"])
                where = f"$.outputs[{n}].facets.columnLineage.fields.{column}"
                if key not in inputs:
                    problems.append(f"{where}: {key} is no input of the event")
                elif inputs[key] and src["field"] not in inputs[key]:
                    problems.append(f"{where}: {src['field']!r} is not in {key}'s schema")
    return problems


def _schemas(spec_dir: Path) -> dict[str, Any]:
    """Every JSON schema under ``spec_dir``, by its ``$id``."""
    found = {}
    for path in spec_dir.rglob("*.json"):
        doc = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(doc, dict) and "$id" in doc:
            found[doc["$id"]] = doc
    return found


def _against_spec(doc: dict[str, Any], spec_dir: Path) -> list[str]:
    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    schemas = _schemas(spec_dir)
    registry: Registry[Any] = Registry().with_resources(
        (uri, Resource.from_contents(s, default_specification=DRAFT202012))
        for uri, s in schemas.items()
    )
    problems = []
    core = next((s for uri, s in schemas.items() if uri.endswith("/OpenLineage.json")), None)
    if core is None:
        return [f"{spec_dir}: no OpenLineage.json among the spec's schemas"]
    validator = jsonschema.Draft202012Validator(core, registry=registry)
    problems += [f"spec: {e.json_path}: {e.message}" for e in validator.iter_errors(doc)]

    def facets(where: str, found: dict[str, Any]) -> None:
        for key, facet in found.items():
            url = facet.get("_schemaURL", "")
            base, _, fragment = url.partition("#")
            if base not in schemas:
                problems.append(f"spec: {where}.{key}: no schema {base!r} in {spec_dir}")
                continue
            root = schemas[base]
            sub = {"$ref": url} if fragment else root
            v = jsonschema.Draft202012Validator(sub, registry=registry)
            problems.extend(
                f"spec: {where}.{key}{e.json_path[1:]}: {e.message}" for e in v.iter_errors(facet)
            )

    facets("$.run.facets", doc.get("run", {}).get("facets", {}))
    facets("$.job.facets", doc.get("job", {}).get("facets", {}))
    for side in ("inputs", "outputs"):
        for n, ds in enumerate(doc.get(side, [])):
            facets(f"$.{side}[{n}].facets", ds.get("facets", {}))
            for extra in ("inputFacets", "outputFacets"):
                facets(f"$.{side}[{n}].{extra}", ds.get(extra, {}))
    return problems


def check_event(doc: dict[str, Any]) -> list[str]:
    """What is wrong with one event (nothing: an empty list)."""
    problems = _round_trip(doc) + _rules(doc)
    spec_dir = os.environ.get("OPENLINEAGE_SPEC_DIR")
    if spec_dir:
        problems += _against_spec(doc, Path(spec_dir))
    return problems


def assert_valid(events: Iterable[dict[str, Any]]) -> None:
    """Raise ``AssertionError`` naming every problem of every event."""
    problems = []
    for n, doc in enumerate(events):
        name = f"event {n} ({doc.get('eventType')} {doc.get('job', {}).get('name')})"
        problems += [f"{name}: {p}" for p in check_event(doc)]
    assert not problems, "\n".join(problems)
