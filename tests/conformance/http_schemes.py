"""What every upstream ``AuthScheme`` must do (connectors/http/auth.py), as one reusable suite.

A scheme runs the suite by subclassing ``SchemeConformance`` in a test module and overriding
its ``case`` fixture: a ``SchemeCase`` naming the scheme in the registry with options that
are valid for it and, when it takes one, a secret.

    class TestScheme(SchemeConformance):
        @pytest.fixture(params=CASES)
        def case(self, request: pytest.FixtureRequest) -> SchemeCase: ...

tests/test_http_schemes.py runs it on every scheme in ``connectors.http.registry.SCHEMES``.
What it pins down: headers are plain ``str -> str`` that cannot split a request (values of
visible ASCII, names HTTP tokens; a secret no header can carry is refused); the secret never
shows in ``repr``/``str`` of the scheme, in ``problems()`` or in the message of a refused
scheme; headers change per request exactly when the scheme says so; the options the scheme
declares are the ones it checks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest

from connectors.http import SCHEMES, AuthScheme, problems, scheme
from exchange.kernel.errors import BadInput

#: A secret no option, header name or message could hold by chance.
SECRET = "Zq9-s3cr3t-Tk7/+="
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
REQUESTS = [("GET", "/ent/91410100MA4F000001"), ("POST", "/search"), ("GET", "/")]


@dataclass(frozen=True)
class SchemeCase:
    """A scheme under test: its registry name and options that are valid for it."""

    name: str
    options: Mapping[str, str] = field(default_factory=dict)

    @property
    def cls(self) -> type[AuthScheme]:
        return SCHEMES[self.name]

    @property
    def secret(self) -> str | None:
        return SECRET if self.cls.takes_secret else None

    def build(self, secret: str | None = None) -> AuthScheme:
        return scheme(self.name, self.options, secret if secret is not None else self.secret)


def texts_of(exc: BaseException) -> str:
    return f"{exc}\n{exc!r}\n{exc.args!r}"


class SchemeConformance:
    """The behaviour of connectors.http.auth.AuthScheme; override ``case``."""

    @pytest.fixture
    def case(self) -> SchemeCase:
        raise NotImplementedError("a conformance test module overrides the case fixture")

    # -- the registry -----------------------------------------------------------------------
    def test_the_registry_builds_the_scheme_under_its_own_name(self, case: SchemeCase) -> None:
        built = case.build()

        assert isinstance(built, case.cls)
        assert built.name == case.name

    def test_valid_options_have_no_problems(self, case: SchemeCase) -> None:
        assert problems(case.name, case.options, case.secret is not None) == []

    # -- headers ----------------------------------------------------------------------------
    def test_headers_are_strings_to_strings(self, case: SchemeCase) -> None:
        built = case.build()
        for method, path in REQUESTS:
            headers = built.headers(method, path)

            assert type(headers) is dict
            assert all(type(k) is str and type(v) is str for k, v in headers.items())

    def test_headers_cannot_split_a_request(self, case: SchemeCase) -> None:
        built = case.build()
        for method, path in REQUESTS:
            for name, value in built.headers(method, path).items():
                assert HEADER_NAME.match(name), name
                assert all(" " <= c <= "~" or c == "\t" for c in value), name

    def test_headers_name_each_header_once_whatever_its_case(self, case: SchemeCase) -> None:
        headers = case.build().headers("GET", "/")

        assert len({k.lower() for k in headers}) == len(headers)

    def test_headers_change_per_request_exactly_when_the_scheme_says_so(
        self, case: SchemeCase
    ) -> None:
        built = case.build()

        first, second = built.headers("GET", "/x"), built.headers("GET", "/x")

        assert set(first) == set(second)  # the same headers, whatever their values
        assert (first != second) is case.cls.per_request

    # -- the secret stays hidden ------------------------------------------------------------
    def test_the_secret_is_not_in_the_schemes_repr_or_str(self, case: SchemeCase) -> None:
        built = case.build()

        assert SECRET not in repr(built)
        assert SECRET not in str(built)
        assert SECRET not in repr(built.options)

    def test_the_secret_is_not_in_any_problem(self, case: SchemeCase) -> None:
        variants: list[Mapping[str, str]] = [
            case.options,
            {},
            {**case.options, "surplus": "x"},
            {k: "bad\nvalue" for k in case.options},
        ]
        for options in variants:
            for has_secret in (True, False):
                found = problems(case.name, options, has_secret)
                assert all(isinstance(p, str) and SECRET not in p for p in found)

    def test_a_refused_scheme_does_not_show_the_secret(self, case: SchemeCase) -> None:
        with pytest.raises(BadInput) as err:
            scheme(case.name, {**case.options, "surplus": "x"}, case.secret)

        assert "'surplus'" in str(err.value)
        assert SECRET not in texts_of(err.value)

    def test_a_secret_that_would_split_a_header_is_refused_without_showing_it(
        self, case: SchemeCase
    ) -> None:
        if not case.cls.takes_secret:
            pytest.skip(f"scheme {case.name!r} takes no credential")
        bad = SECRET + "\r\nX-Injected: 1"

        with pytest.raises(BadInput) as err:
            case.build(bad)

        assert "line break" in str(err.value)
        assert SECRET not in texts_of(err.value)

    def test_a_secret_no_header_can_carry_is_refused_without_showing_it(
        self, case: SchemeCase
    ) -> None:
        if not case.cls.takes_secret:
            pytest.skip(f"scheme {case.name!r} takes no credential")

        with pytest.raises(BadInput) as err:
            case.build(SECRET + "令牌")

        assert "non-ASCII" in str(err.value)
        assert SECRET not in texts_of(err.value)

    # -- what the scheme declares is what it checks -----------------------------------------
    def test_the_credential_is_required_or_refused_as_declared(self, case: SchemeCase) -> None:
        wrong = None if case.cls.takes_secret else SECRET

        found = problems(case.name, case.options, wrong is not None)

        assert any("credential" in p for p in found)
        with pytest.raises(BadInput):
            scheme(case.name, case.options, wrong)

    def test_each_required_option_is_named_when_missing(self, case: SchemeCase) -> None:
        for key in case.cls.required:
            options = {k: v for k, v in case.options.items() if k != key}

            found = problems(case.name, options, case.secret is not None)

            assert any(repr(key) in p and "required" in p for p in found), found

    def test_an_unknown_option_is_named_with_the_known_ones(self, case: SchemeCase) -> None:
        found = problems(case.name, {**case.options, "colour": "blue"}, case.secret is not None)

        assert len(found) == 1
        assert "'colour'" in found[0]
        assert all(k in found[0] for k in case.cls.required + case.cls.optional)

    def test_the_declared_options_are_valid_ones(self, case: SchemeCase) -> None:
        known = set(case.cls.required) | set(case.cls.optional)

        assert set(case.options) <= known
        assert set(case.cls.required) <= set(case.options)
