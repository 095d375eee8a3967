"""A run event's JSON back into openlineage-python's generated classes (the spool's replay,
and ``tests/lineage_check.py``'s round trip).

Each facet is built as the class its ``_schemaURL`` names (the generated classes' own schema
URLs); a facet whose URL no class has is kept as a plain ``RunFacet``/``DatasetFacet`` with its
keys as additional properties, unless ``strict``. ``strict`` also refuses: a key a class does
not declare (unless the spec lets that object have additional properties: the generated class
says so by defining ``with_additional_properties`` itself), a facet under another key than the
spec's, a ``_schemaURL`` or ``schemaURL`` other than the class's, and a missing required key.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import pkgutil
import types
import typing
from typing import Any

import attr
from openlineage.client import generated
from openlineage.client.generated import base

#: The key each standard facet goes under in a ``facets`` mapping (the spec's names).
FACET_KEYS = {
    "SchemaDatasetFacet": "schema",
    "ColumnLineageDatasetFacet": "columnLineage",
    "DataQualityAssertionsDatasetFacet": "dataQualityAssertions",
    "OutputStatisticsOutputDatasetFacet": "outputStatistics",
    "InputStatisticsInputDatasetFacet": "inputStatistics",
    "DatasourceDatasetFacet": "dataSource",
    "ErrorMessageRunFacet": "errorMessage",
    "ParentRunFacet": "parent",
    "ProcessingEngineRunFacet": "processing_engine",
    "NominalTimeRunFacet": "nominalTime",
    "JobTypeJobFacet": "jobType",
    "EnvironmentVariablesRunFacet": "environmentVariables",
    "TagsJobFacet": "tags",
    "TagsRunFacet": "tags",
    "SourceCodeLocationJobFacet": "sourceCodeLocation",
}


class NotAnEvent(ValueError):
    """What is wrong with an event, and where (a JSON path such as ``outputs[1].facets``)."""


def _facet_classes() -> dict[str, type[base.BaseFacet]]:
    found: dict[str, type[base.BaseFacet]] = {}
    for info in pkgutil.iter_modules(generated.__path__):
        module = importlib.import_module(f"{generated.__name__}.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, base.BaseFacet) and cls.__module__ == module.__name__:
                found[cls._get_schema()] = cls
    return found


_BY_URL: dict[str, type[base.BaseFacet]] | None = None


def facet_class(url: str) -> type[base.BaseFacet] | None:
    """The generated facet class whose schema URL is ``url``."""
    global _BY_URL
    if _BY_URL is None:
        _BY_URL = _facet_classes()
    return _BY_URL.get(url)


def _open(cls: type) -> bool:
    """Whether the spec lets objects of ``cls`` carry keys it does not declare."""
    return "with_additional_properties" in cls.__dict__


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)  # each class's annotations in its own module


def event_from_dict(doc: dict[str, Any], *, strict: bool = False) -> base.RunEvent:
    """A ``RunEvent`` of the generated classes from its JSON form."""
    if not isinstance(doc, dict):
        raise NotAnEvent("$: not an object")
    event = _build(base.RunEvent, doc, "$", strict)
    assert isinstance(event, base.RunEvent)
    return event


def _build(cls: type, doc: Any, where: str, strict: bool) -> Any:
    if not isinstance(doc, dict):
        raise NotAnEvent(
            f"{where}: an object expected for {cls.__name__}, not {type(doc).__name__}"
        )
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    declared = set()
    for a in attr.fields(cls):
        declared.add(a.name)
        if not a.init:  # the schema URLs: fixed by the class
            url = getattr(cls, "_get_schema")()  # noqa: B009 (every generated class has it)
            if a.name in doc and strict and doc[a.name] != url:
                raise NotAnEvent(
                    f"{where}.{a.name}: {doc[a.name]!r} is not {cls.__name__}'s {url!r}"
                )
            continue
        if a.name not in doc:
            if a.default is attr.NOTHING and strict:
                raise NotAnEvent(f"{where}: {cls.__name__} lacks its required {a.name!r}")
            continue
        kwargs[a.alias] = _value(hints[a.name], doc[a.name], f"{where}.{a.name}", strict, a.name)
    extra = {k: v for k, v in doc.items() if k not in declared}
    if extra and strict and not _open(cls):
        raise NotAnEvent(f"{where}: {cls.__name__} has no key(s) {sorted(extra)}")
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise NotAnEvent(f"{where}: {cls.__name__}: {exc}") from None
    if extra:
        obj = obj.with_additional_properties(**extra)
    return obj


def _facets(kind: type, doc: Any, where: str, strict: bool) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise NotAnEvent(f"{where}: facets must be an object")
    out = {}
    for key, facet in doc.items():
        at = f"{where}.{key}"
        if not isinstance(facet, dict):
            raise NotAnEvent(f"{at}: a facet must be an object")
        url = facet.get("_schemaURL", "")
        cls = facet_class(url)
        if cls is None:
            if strict:
                raise NotAnEvent(f"{at}: _schemaURL {url!r} names no facet of the spec")
            generic = dict(facet)
            generic.pop("_schemaURL", None)
            producer = generic.pop("_producer", "")
            out[key] = kind(producer=producer).with_additional_properties(**generic)
            continue
        if not issubclass(cls, kind):
            raise NotAnEvent(f"{at}: {cls.__name__} is not a {kind.__name__}")
        if strict and FACET_KEYS.get(cls.__name__, key) != key:
            raise NotAnEvent(f"{at}: {cls.__name__} goes under {FACET_KEYS[cls.__name__]!r}")
        out[key] = _build(cls, facet, at, strict)
    return out


def _value(hint: Any, doc: Any, where: str, strict: bool, name: str = "") -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [h for h in typing.get_args(hint) if h is not type(None)]
        if doc is None:
            return None
        return _value(options[0], doc, where, strict, name) if len(options) == 1 else doc
    if origin is dict:
        _, value_type = typing.get_args(hint)
        if inspect.isclass(value_type) and issubclass(value_type, base.BaseFacet):
            return _facets(value_type, doc, where, strict)
        if not isinstance(doc, dict):
            raise NotAnEvent(f"{where}: an object expected")
        return {k: _value(value_type, v, f"{where}.{k}", strict) for k, v in doc.items()}
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(doc, list):
            raise NotAnEvent(f"{where}: a list expected")
        return [_value(item, v, f"{where}[{i}]", strict) for i, v in enumerate(doc)]
    if inspect.isclass(hint) and issubclass(hint, enum.Enum):
        try:
            return hint(doc)
        except ValueError:
            raise NotAnEvent(f"{where}: {doc!r} is not one of {[e.value for e in hint]}") from None
    if attr.has(hint):
        return _build(hint, doc, where, strict)
    if hint is Any:
        return doc
    if hint in (str, int, float, bool):
        ok = isinstance(doc, hint) and not (hint is int and isinstance(doc, bool))
        if hint is float and isinstance(doc, int) and not isinstance(doc, bool):
            ok = True
        if not ok and strict:
            raise NotAnEvent(f"{where}: {hint.__name__} expected, not {type(doc).__name__}")
    return doc
