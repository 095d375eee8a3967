"""Field filtering of an upstream's JSON answer: only the granted fields' paths reach the caller.

A path names a value by the keys leading to it: ``data.uscc`` is ``uscc`` inside ``data``;
``data.shareholders[].name`` is ``name`` inside every element of the list ``shareholders``
(lists nest: ``a[].b[].c``); a path that ends in ``[]`` (``tags[]``) names a list of values.

A granted field is a scalar (the catalog's field types all are): where a path ends, only a
string, number, boolean or null is kept, and an object or a list there is dropped, however it
got there (an upstream that turns a scalar into an object must not hand the caller fields that
are in no grant, or in another field's). A path ending in ``[]`` keeps the list's scalar
elements and drops the others. What the body lacks is simply absent from the answer; a value of
another shape than the path says (a number where it expects an object, an object where it
expects a list) is dropped, and so is a list element that is not an object. An object or list on
the way to a granted key stays, even when none of the granted keys is in it, so that list
elements keep their positions. Two paths may meet (``data`` and ``data.uscc``: a scalar there,
or else the object's granted keys), but not take one value for an object and for a list.

The paths are compiled once into a tree (``FieldFilter``), which the gateway keeps per granted
field set; applying it walks the tree, not the body, so a large answer costs one decode, the
granted values' copy and one encode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from exchange.kernel.errors import BadInput, ExchangeError

LIST_MARK = "[]"
#: What a granted field's value may be, as msgspec decodes JSON (and ``None``).
SCALARS: frozenset[type] = frozenset({str, int, float, bool, type(None)})
UTF8_BOM = b"\xef\xbb\xbf"  # some Java and .NET upstreams start their JSON with it


class BadUpstreamBody(ExchangeError):
    """The upstream's answer is not JSON (the message never quotes it: it may hold personal
    data)."""


@dataclass
class _Keep:
    """What is kept of one value the paths reach: itself if it is a scalar and a path ends
    there (``scalar``); of an object, the keys some path goes on through (``keys``); of a
    list, each element as ``items`` says. ``path`` is the first path that took the value for
    an object or a list, for messages."""

    scalar: bool = False
    keys: dict[str, _Keep] | None = None
    items: _Keep | None = None
    path: str = ""


class _Drop:
    """What a value that is not kept becomes (``None`` is a kept JSON null)."""


_DROP = _Drop()


def _segments(path: str) -> list[tuple[str, bool]]:
    """``a[].b`` as ``[("a", True), ("b", False)]``; a malformed path is bad input."""
    out = []
    for part in path.split("."):
        is_list = part.endswith(LIST_MARK)
        name = part[: -len(LIST_MARK)] if is_list else part
        if not name or "[" in name or "]" in name:
            raise BadInput(
                f"field path {path!r}: {part!r} is not a key (write a.b, a[].b or a[].b[].c)"
            )
        out.append((name, is_list))
    return out


def _disagree(first: str, second: str, name: str, first_is_list: bool) -> BadInput:
    shapes = ("a list", "an object") if first_is_list else ("an object", "a list")
    return BadInput(
        f"field paths {first!r} and {second!r} disagree: the first takes {name!r} "
        f"for {shapes[0]}, the second for {shapes[1]}"
    )


def _keys(value: _Keep, name: str, path: str) -> dict[str, _Keep]:
    """``value`` taken for an object by ``path``: its granted keys."""
    if value.items is not None:
        raise _disagree(value.path, path, name, first_is_list=True)
    if value.keys is None:
        value.keys, value.path = {}, value.path or path
    return value.keys


def _items(value: _Keep, name: str, path: str) -> _Keep:
    """``value`` taken for a list by ``path``: how its elements are kept."""
    if value.keys is not None:
        raise _disagree(value.path, path, name, first_is_list=False)
    if value.items is None:
        value.items, value.path = _Keep(), value.path or path
    return value.items


def _add(root: _Keep, path: str) -> None:
    value, name = root, ""
    for key, is_list in _segments(path):
        value = _keys(value, name, path).setdefault(key, _Keep())
        name = key
        if is_list:
            value = _items(value, name, path)
    value.scalar = True


def _kept(value: Any, keep: _Keep) -> Any:
    """The kept part of ``value``, or ``_DROP``."""
    kind = type(value)
    if kind is dict:
        return _keep_object(value, keep.keys) if keep.keys is not None else _DROP
    if kind is list:
        if keep.items is None:
            return _DROP
        elements = (_kept(e, keep.items) for e in value)
        return [e for e in elements if e is not _DROP]
    return value if keep.scalar and kind in SCALARS else _DROP


def _keep_object(value: dict[str, Any], keys: dict[str, _Keep]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, keep in keys.items():
        if name in value:
            kept = _kept(value[name], keep)
            if kept is not _DROP:
                out[name] = kept
    return out


class FieldFilter:
    """The compiled paths of one granted field set; ``apply`` it to each answer's body."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = tuple(paths)
        self._root = _Keep(keys={})
        for path in self.paths:
            _add(self._root, path)
        self._decoder = msgspec.json.Decoder()
        self._encoder = msgspec.json.Encoder()

    def keep(self, doc: Any) -> dict[str, Any]:
        """The granted part of a decoded document (``{}`` when it is not an object)."""
        assert self._root.keys is not None
        return _keep_object(doc, self._root.keys) if type(doc) is dict else {}

    def apply(self, body: bytes) -> bytes:
        """The body with only the granted paths, as JSON; ``BadUpstreamBody`` when the body
        is not JSON (or nests deeper than the interpreter's recursion limit)."""
        try:
            doc = self._decoder.decode(body.removeprefix(UTF8_BOM))
        except (msgspec.DecodeError, UnicodeDecodeError):  # JSON is UTF-8 (RFC 8259): GBK is not
            raise BadUpstreamBody(
                f"the upstream answered {len(body)} bytes that are not JSON in UTF-8"
            ) from None
        except RecursionError:  # a 502 like any unreadable answer, not the gateway's 500
            raise BadUpstreamBody(
                f"the upstream answered {len(body)} bytes of JSON nested too deep to read"
            ) from None
        return self._encoder.encode(self.keep(doc))
