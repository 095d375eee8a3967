"""Upstream authentication schemes (connectors/http/): every scheme runs the conformance suite
(tests/conformance/http_schemes.py); then what each one sends, and where its credential comes
from (``connectors.resolve.resolve_secret``)."""

from __future__ import annotations

import hashlib
import json
import time

import pytest

from connectors.http import SCHEMES, problems, scheme
from connectors.http.schemes.tif import tif_signature
from connectors.resolve import resolve_secret
from exchange.catalog.model import ConnectionRef
from exchange.kernel.errors import BadInput
from tests.conformance.http_schemes import SECRET, SchemeCase, SchemeConformance

#: One valid case per scheme of the registry: a new scheme adds its line here.
CASES = {
    "none": SchemeCase("none"),
    "header": SchemeCase("header", {"header": "X-Api-Key", "prefix": "Key "}),
    "tif": SchemeCase("tif", {"paasid": "city-exchange"}),
}


class TestEveryScheme(SchemeConformance):
    @pytest.fixture(params=sorted(CASES))
    def case(self, request: pytest.FixtureRequest) -> SchemeCase:
        return CASES[request.param]


def test_every_registered_scheme_runs_the_conformance_suite() -> None:
    assert set(CASES) == set(SCHEMES)


def test_the_registry_knows_none_header_and_tif() -> None:
    assert list(SCHEMES) == ["none", "header", "tif"]


def test_an_unknown_scheme_is_named_with_the_known_ones() -> None:
    assert problems("oauth", {}, True) == ["unknown auth scheme 'oauth' (known: none, header, tif)"]
    with pytest.raises(BadInput, match="unknown auth scheme 'oauth'"):
        scheme("oauth", {}, SECRET)


# -- none ---------------------------------------------------------------------------------
def test_none_sends_no_header() -> None:
    assert scheme("none", {}, None).headers("GET", "/x") == {}


def test_none_refuses_a_credential() -> None:
    assert problems("none", {}, True) == ["scheme 'none' takes no credential"]


# -- header -------------------------------------------------------------------------------
def test_header_sends_the_secret_in_the_named_header() -> None:
    built = scheme("header", {"header": "X-Api-Key"}, SECRET)

    assert built.headers("GET", "/x") == {"X-Api-Key": SECRET}


def test_header_puts_the_prefix_before_the_secret() -> None:
    built = scheme("header", {"header": "Authorization", "prefix": "Bearer "}, SECRET)

    assert built.headers("POST", "/x") == {"Authorization": f"Bearer {SECRET}"}


def test_header_requires_a_header_name_and_a_credential() -> None:
    assert problems("header", {}, False) == [
        "a credential is required ({env: VAR} or {airflow_conn_id: ID})",
        "option 'header' is required",
    ]


def test_header_refuses_a_name_http_does_not_allow() -> None:
    assert problems("header", {"header": "X Api:Key"}, True) == [
        "option 'header': 'X Api:Key' is not an HTTP header name"
    ]


def test_header_refuses_a_prefix_that_would_split_the_header() -> None:
    assert problems("header", {"header": "X-K", "prefix": "a\r\nX-Evil: 1"}, True) == [
        "option 'prefix' holds a line break, a control or a non-ASCII character"
    ]


def test_header_refuses_a_prefix_no_header_can_carry() -> None:
    assert problems("header", {"header": "X-K", "prefix": "令牌 "}, True) == [
        "option 'prefix' holds a line break, a control or a non-ASCII character"
    ]


def test_a_refused_scheme_names_the_scheme_and_every_problem() -> None:
    with pytest.raises(BadInput) as err:
        scheme("header", {"prefix": "x", "colour": "blue"}, SECRET)

    assert str(err.value) == (
        "auth scheme 'header': option 'header' is required; "
        "unknown option 'colour' (scheme 'header' knows: header, prefix)"
    )


def test_the_repr_shows_the_options_and_hides_the_secret() -> None:
    built = scheme("header", {"header": "X-Api-Key"}, SECRET)

    assert repr(built) == "HeaderAuth(header='X-Api-Key', secret=***)"


# -- tif ----------------------------------------------------------------------------------
def test_the_tif_signature_is_upper_case_sha256_of_timestamp_token_nonce_timestamp() -> None:
    expected = hashlib.sha256(b"1796140800" + b"t0ken" + b"ab12" + b"1796140800").hexdigest()

    assert tif_signature("1796140800", "t0ken", "ab12") == expected.upper()


def test_tif_sends_the_paasid_a_timestamp_a_nonce_and_their_signature() -> None:
    built = scheme("tif", {"paasid": "city-exchange"}, SECRET)
    before = int(time.time())

    headers = built.headers("GET", "/ent/1")

    assert set(headers) == {"x-tif-paasid", "x-tif-timestamp", "x-tif-nonce", "x-tif-signature"}
    assert headers["x-tif-paasid"] == "city-exchange"
    assert before <= int(headers["x-tif-timestamp"]) <= int(time.time())
    assert len(headers["x-tif-nonce"]) == 32 and int(headers["x-tif-nonce"], 16) >= 0
    assert headers["x-tif-signature"] == tif_signature(
        headers["x-tif-timestamp"], SECRET, headers["x-tif-nonce"]
    )


def test_tif_never_sends_the_token_itself() -> None:
    headers = scheme("tif", {"paasid": "p"}, SECRET).headers("GET", "/")

    assert all(SECRET not in v for v in headers.values())


def test_tif_uses_a_new_nonce_for_every_request() -> None:
    built = scheme("tif", {"paasid": "p"}, SECRET)

    nonces = {built.headers("GET", "/")["x-tif-nonce"] for _ in range(200)}

    assert len(nonces) == 200


def test_tif_requires_a_paasid() -> None:
    assert problems("tif", {}, True) == ["option 'paasid' is required"]
    assert problems("tif", {"paasid": ""}, True) == ["option 'paasid' is required"]


# -- where the credential comes from ------------------------------------------------------
def test_a_credential_comes_from_its_environment_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PROV_TIF_TOKEN", SECRET)

    assert resolve_secret(ConnectionRef(env="PROV_TIF_TOKEN"), "node 'prov_gw'") == SECRET


@pytest.mark.parametrize("value", [None, ""])
def test_an_unset_or_empty_variable_is_named_never_valued(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("PROV_TIF_TOKEN", raising=False)
    else:
        monkeypatch.setenv("PROV_TIF_TOKEN", value)

    with pytest.raises(BadInput) as err:
        resolve_secret(ConnectionRef(env="PROV_TIF_TOKEN"), "node 'prov_gw'")

    why = "is not set" if value is None else "is set but empty"
    assert str(err.value) == f"node 'prov_gw': environment variable PROV_TIF_TOKEN {why}"


def test_a_credential_is_an_airflow_connections_password_given_as_a_uri(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_PROV_GW", "https://city:p%40ss%2Fw0rd@prov.example/api")

    assert resolve_secret(ConnectionRef(airflow_conn_id="prov_gw"), "node 'n'") == "p@ss/w0rd"


def test_a_credential_is_an_airflow_connections_password_given_as_json(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    doc = {"conn_type": "http", "host": "prov.example", "password": SECRET}
    monkeypatch.setenv("AIRFLOW_CONN_PROV_GW", json.dumps(doc))

    assert resolve_secret(ConnectionRef(airflow_conn_id="prov_gw"), "node 'n'") == SECRET


def test_an_undefined_airflow_connection_says_how_to_define_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_NOWHERE", raising=False)

    with pytest.raises(BadInput) as err:
        resolve_secret(ConnectionRef(airflow_conn_id="nowhere"), "node 'n'")

    assert str(err.value) == (
        "node 'n': airflow connection 'nowhere' is not defined "
        "(set AIRFLOW_CONN_NOWHERE or add it in Airflow)"
    )


@pytest.mark.parametrize(
    "value", ["https://prov.example/api", '{"conn_type": "http", "host": "prov.example"}']
)
def test_an_airflow_connection_without_a_password_is_refused(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_PROV_GW", value)

    with pytest.raises(BadInput, match="airflow connection 'prov_gw' has no password"):
        resolve_secret(ConnectionRef(airflow_conn_id="prov_gw"), "node 'n'")


def test_a_broken_airflow_connection_is_refused_without_its_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_PROV_GW", '{"password": "' + SECRET)

    with pytest.raises(BadInput) as err:
        resolve_secret(ConnectionRef(airflow_conn_id="prov_gw"), "node 'n'")

    assert SECRET not in str(err.value)


def test_a_credential_is_never_read_from_a_path() -> None:
    with pytest.raises(BadInput, match="not a path"):
        resolve_secret(ConnectionRef(path="token.txt"), "node 'n'")
