"""Field filtering of an upstream's JSON answer: only the granted paths pass, and only scalar
values where they end, whatever shape the body has, checked against a plain-Python reference
on generated documents and paths."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from exchange.gateway.filter import BadUpstreamBody, FieldFilter
from exchange.kernel.errors import BadInput

ENTERPRISE: dict[str, Any] = {
    "code": 0,
    "msg": "ok",
    "data": {
        "uscc": "91410100MA44XXXX1A",
        "name": "郑州某某科技有限公司",
        "legal_person": "张三",
        "id_card": "410102199001011234",
        "shareholders": [
            {"name": "李四", "id_card": "410102198001011234", "ratio": 0.6},
            {"name": "王五", "id_card": "410102198501011234", "ratio": 0.4},
        ],
    },
}


def filtered(paths: list[str], doc: Any) -> Any:
    return json.loads(FieldFilter(paths).apply(msgspec.json.encode(doc)))


def test_only_the_granted_paths_of_an_answer_pass() -> None:
    paths = ["data.uscc", "data.name", "data.shareholders[].name"]
    assert filtered(paths, ENTERPRISE) == {
        "data": {
            "uscc": "91410100MA44XXXX1A",
            "name": "郑州某某科技有限公司",
            "shareholders": [{"name": "李四"}, {"name": "王五"}],
        }
    }


def test_lists_nest_and_a_path_ending_in_brackets_keeps_the_lists_scalars() -> None:
    doc = {"a": [{"b": [{"c": 1, "d": 2}, {"c": 3}], "e": 4}], "tags": ["x", {"y": 1}, ["z"], 2]}
    assert filtered(["a[].b[].c", "tags[]"], doc) == {
        "a": [{"b": [{"c": 1}, {"c": 3}]}],
        "tags": ["x", 2],
    }


def test_a_granted_field_keeps_a_scalar_never_an_object_or_a_list() -> None:
    """An upstream that sends an object or a list where the catalog declares a scalar field
    must not hand the caller what is inside it."""
    doc = {
        "data": {
            "uscc": None,
            "legal_person": {"name": "张三", "id_no": "410102199001011234"},
            "shareholders": [{"name": "李四", "id_card": "410102198001011234"}],
            "flags": [True, 0.5, "x"],
        }
    }
    paths = ["data.uscc", "data.legal_person", "data.shareholders", "data.flags"]
    assert filtered(paths, doc) == {"data": {"uscc": None}}
    assert filtered(["data"], doc) == {}
    scalars = {"s": "甲", "i": 1, "f": 0.5, "t": True, "n": None}
    assert filtered(list(scalars), scalars) == scalars
    # A list element where a scalar is declared: the element is dropped, not kept whole.
    assert filtered(["a[].b"], {"a": [{"b": {"secret": 1}}, {"b": [1]}, {"b": 2}]}) == {
        "a": [{}, {}, {"b": 2}]
    }


def test_a_duplicate_key_holding_an_object_is_dropped_too() -> None:
    body = b'{"data":{"uscc":"1","uscc":{"secret":"s"}}}'  # the last one wins in msgspec
    assert json.loads(FieldFilter(["data.uscc"]).apply(body)) == {"data": {}}


def test_what_the_body_lacks_is_absent_and_a_wrong_shape_is_dropped() -> None:
    paths = ["data.uscc", "data.shareholders[].name", "missing.x"]
    assert filtered(paths, {"data": {"shareholders": "none"}}) == {"data": {}}
    assert filtered(paths, {"data": "withheld"}) == {}
    assert filtered(paths, {"data": {"shareholders": [1, None, {"id": 2}, {"name": "甲"}]}}) == {
        "data": {"shareholders": [{}, {"name": "甲"}]}
    }
    assert filtered(paths, [ENTERPRISE]) == {}  # a document that is not an object
    assert filtered([], ENTERPRISE) == {}


def test_paths_that_meet_keep_a_scalar_there_or_else_the_granted_keys_below() -> None:
    for paths in (["data", "data.uscc"], ["data.uscc", "data"]):
        assert filtered(paths, ENTERPRISE) == {"data": {"uscc": "91410100MA44XXXX1A"}}
        assert filtered(paths, {"data": "withheld"}) == {"data": "withheld"}
    paths = ["data.shareholders[].name", "data.shareholders[]"]
    doc = {"data": {"shareholders": ["甲", {"name": "李四", "id_card": "4101"}, [1]]}}
    assert filtered(paths, doc) == {"data": {"shareholders": ["甲", {"name": "李四"}]}}


def test_paths_that_disagree_on_a_keys_shape_or_are_malformed_are_refused() -> None:
    with pytest.raises(BadInput, match=r"'a\.b' and 'a\[\]\.c' disagree: .* 'a' for an object"):
        FieldFilter(["a.b", "a[].c"])
    with pytest.raises(BadInput, match=r"'a\[\]' and 'a\.b' disagree: .* 'a' for a list"):
        FieldFilter(["a", "a[]", "a.b"])  # a scalar path above does not settle it
    for path in ("", "a..b", "a[", "a[]]", ".a", "a[]b"):
        with pytest.raises(BadInput, match="is not a key"):
            FieldFilter([path])


def test_a_body_that_is_not_json_is_refused_without_quoting_it() -> None:
    with pytest.raises(BadUpstreamBody, match="the upstream answered 24 bytes that are not JSON"):
        FieldFilter(["a"]).apply(b"<html>410102199001011234")
    with pytest.raises(BadUpstreamBody) as caught:
        FieldFilter(["a"]).apply(b'{"id_card": "410102199001011234"')
    assert "4101" not in str(caught.value)


def test_a_body_nested_too_deep_is_a_bad_upstream_body_not_a_crash() -> None:
    for body in (b"[" * 100_000, b'{"a":' * 100_000):
        with pytest.raises(BadUpstreamBody, match="nested too deep"):
            FieldFilter(["a"]).apply(body)


def test_a_byte_order_mark_before_the_json_is_accepted() -> None:
    assert FieldFilter(["a"]).apply(b'\xef\xbb\xbf{"a":1,"b":2}') == b'{"a":1}'


def test_numbers_and_text_pass_unchanged() -> None:
    body = b'{"n":12345678901234567890123,"f":0.1,"s":"\\u0000\xe4\xb8\xad","x":1}'
    assert (
        FieldFilter(["n", "f", "s"]).apply(body)
        == b'{"n":12345678901234567890123,"f":0.1,"s":"\\u0000\xe4\xb8\xad"}'
    )


# -- against a reference ----------------------------------------------------------------------

KEYS = ("a", "b", "c", "名")


def segments(path: str) -> list[tuple[str, bool]]:
    return [(p.removesuffix("[]"), p.endswith("[]")) for p in path.split(".")]


Step = tuple[str, str]  # ("key", name) or ("list", "")
_DROPPED = object()


def steps(path: str) -> list[Step]:
    """``a[].b`` as ``[("key", "a"), ("list", ""), ("key", "b")]``."""
    out: list[Step] = []
    for name, is_list in segments(path):
        out.append(("key", name))
        if is_list:
            out.append(("list", ""))
    return out


def reference(doc: Any, paths: list[str]) -> Any:
    """What the filter should keep, value by value: a scalar where a path ends; of an object,
    the keys some path goes on through; of a list, its elements as the paths going on say."""
    if not isinstance(doc, dict):
        return {}
    kept = _ref(doc, [steps(p) for p in paths])
    return {} if kept is _DROPPED else kept


def _ref(value: Any, rests: list[list[Step]]) -> Any:
    if isinstance(value, dict):
        keyed = [r for r in rests if r and r[0][0] == "key"]
        if not keyed:
            return _DROPPED
        out = {}
        for name in dict.fromkeys(r[0][1] for r in keyed):
            if name in value:
                kept = _ref(value[name], [r[1:] for r in keyed if r[0][1] == name])
                if kept is not _DROPPED:
                    out[name] = kept
        return out
    if isinstance(value, list):
        listed = [r[1:] for r in rests if r and r[0][0] == "list"]
        if not listed:
            return _DROPPED
        return [k for k in (_ref(e, listed) for e in value) if k is not _DROPPED]
    return value if any(not r for r in rests) else _DROPPED  # a scalar, where a path ends


def disagree(paths: list[str]) -> bool:
    """Whether two paths take one value for an object and for a list."""
    return _disagree([steps(p) for p in paths])


def _disagree(rests: list[list[Step]]) -> bool:
    keyed = [r for r in rests if r and r[0][0] == "key"]
    listed = [r[1:] for r in rests if r and r[0][0] == "list"]
    if keyed and listed:
        return True
    if listed and _disagree(listed):
        return True
    names = dict.fromkeys(r[0][1] for r in keyed)
    return any(_disagree([r[1:] for r in keyed if r[0][1] == name]) for name in names)


finite = hs.floats(allow_nan=False, allow_infinity=False)  # what JSON can hold
scalars = hs.none() | hs.booleans() | hs.integers() | finite | hs.text()
documents = hs.recursive(
    scalars,
    lambda inner: hs.lists(inner, max_size=4) | hs.dictionaries(hs.sampled_from(KEYS), inner),
    max_leaves=30,
)
segment = hs.tuples(hs.sampled_from(KEYS), hs.booleans()).map(
    lambda s: s[0] + ("[]" if s[1] else "")
)
path_sets = hs.lists(hs.lists(segment, min_size=1, max_size=4).map(".".join), max_size=5)


def _shaped(draw: hs.DrawFn, paths: list[list[tuple[str, bool]]]) -> dict[str, Any]:
    """An object that mostly has the shape the paths expect (one value in five of any other
    shape, one list element in four not an object), among keys they do not name."""
    out: dict[str, Any] = draw(hs.dictionaries(hs.sampled_from(KEYS), documents, max_size=2))
    for name in dict.fromkeys(p[0][0] for p in paths):
        through = [p for p in paths if p[0][0] == name]
        rest = [p[1:] for p in through if len(p) > 1]
        if draw(hs.integers(0, 4)) == 0:
            out[name] = draw(documents)
        elif through[0][0][1]:
            out[name] = [
                _shaped(draw, rest) if rest and draw(hs.integers(0, 3)) > 0 else draw(documents)
                for _ in range(draw(hs.integers(0, 3)))
            ]
        else:
            out[name] = _shaped(draw, rest) if rest else draw(documents)
    return out


@hs.composite
def cases(draw: hs.DrawFn) -> tuple[dict[str, Any], list[str]]:
    """Paths, and a document either of any shape or mostly of theirs."""
    paths = draw(path_sets)
    if draw(hs.booleans()):
        return draw(hs.dictionaries(hs.sampled_from(KEYS), documents)), paths
    return _shaped(draw, [segments(p) for p in paths]), paths


@settings(max_examples=500, deadline=None)
@given(case=cases())
def test_the_filter_keeps_what_the_reference_keeps(case: tuple[dict[str, Any], list[str]]) -> None:
    doc, paths = case
    if disagree(paths):
        with pytest.raises(BadInput, match="disagree"):
            FieldFilter(paths)
        return
    body = msgspec.json.encode(doc)
    kept = msgspec.json.decode(FieldFilter(paths).apply(body))
    assert kept == reference(json.loads(body), paths)
