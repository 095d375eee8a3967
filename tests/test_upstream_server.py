"""The test upstream (tests/servers/upstream.py) behaves like the platform it stands for."""

from __future__ import annotations

import json
import secrets
import time

import httpx
import pytest

from tests.servers.upstream import tif_signature, upstream_server

USCC = "91410100MA4F000001"


def tif_headers(token: str, *, timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    nonce = secrets.token_hex(8)
    return {
        "x-tif-paasid": "city-exchange",
        "x-tif-timestamp": ts,
        "x-tif-nonce": nonce,
        "x-tif-signature": tif_signature(ts, token, nonce),
    }


def test_an_enterprise_record_is_about_1_6_kb_of_json_for_the_uscc_asked() -> None:
    with upstream_server() as up:
        r = httpx.get(f"{up.url}/ent/{USCC}")
    assert r.status_code == 200
    assert 1400 <= len(r.content) <= 1900
    doc = r.json()
    assert doc["code"] == 0 and doc["data"]["uscc"] == USCC
    assert {"name", "legal_person", "reg_capital", "address", "shareholders"} <= set(doc["data"])
    assert {"city", "street"} <= set(doc["data"]["address"])
    assert all({"name", "id_no", "share"} <= set(s) for s in doc["data"]["shareholders"])


def test_every_request_is_recorded_with_method_path_query_and_headers() -> None:
    with upstream_server() as up:
        httpx.get(f"{up.url}/ent/{USCC}", params={"page": "2"}, headers={"X-Probe": "p1"})
        httpx.post(f"{up.url}/ent/{USCC}", content=b'{"a": 1}')
        first, second = up.requests()
    assert (first.method, first.path, first.query) == ("GET", f"/ent/{USCC}", {"page": "2"})
    assert first.headers["x-probe"] == "p1" and first.match == {"uscc": USCC}
    assert (second.method, second.body) == ("POST", b'{"a": 1}')


def test_with_a_token_only_a_valid_tif_signature_or_the_token_itself_is_let_through() -> None:
    with upstream_server(token="t0ken") as up:
        url = f"{up.url}/ent/{USCC}"
        assert httpx.get(url).status_code == 401
        assert httpx.get(url, headers=tif_headers("t0ken")).status_code == 200
        assert httpx.get(url, headers=tif_headers("wrong")).status_code == 401
        stale = tif_headers("t0ken", timestamp=int(time.time()) - 3600)
        assert httpx.get(url, headers=stale).status_code == 401
        assert httpx.get(url, headers={"X-Api-Key": "t0ken"}).status_code == 200
        assert httpx.get(url, headers={"Authorization": "Bearer t0ken"}).status_code == 200
        assert [r.authorized for r in up.requests()] == [False, True, False, False, True, True]


def test_a_tif_nonce_seen_before_is_refused_as_a_replay() -> None:
    with upstream_server(token="t0ken") as up:
        headers = tif_headers("t0ken")
        assert httpx.get(f"{up.url}/ent/{USCC}", headers=headers).status_code == 200
        assert httpx.get(f"{up.url}/ent/{USCC}", headers=headers).status_code == 401


def test_the_404_mode_echoes_the_request_headers_in_its_body() -> None:
    with upstream_server() as up:
        up.set(status=404)
        r = httpx.get(f"{up.url}/ent/{USCC}", headers={"X-Api-Key": "s3cret"})
    assert r.status_code == 404
    assert json.loads(r.content)["request_headers"]["x-api-key"] == "s3cret"


def test_a_mode_for_n_times_returns_to_normal_answers_afterwards() -> None:
    with upstream_server() as up:
        up.set(status=500, times=2)
        codes = [httpx.get(f"{up.url}/ent/{USCC}").status_code for _ in range(3)]
    assert codes == [500, 500, 200]


def test_the_slow_mode_makes_a_client_time_out_and_the_server_still_stops_at_once() -> None:
    with upstream_server(delay_s=5) as up:
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(f"{up.url}/ent/{USCC}", timeout=0.3)
        started = time.monotonic()
    assert time.monotonic() - started < 2


def test_the_drop_mode_closes_the_connection_without_an_answer() -> None:
    with upstream_server() as up:
        up.set(drop=True)
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(f"{up.url}/ent/{USCC}")


def test_a_non_json_body_and_extra_routes_can_be_served() -> None:
    routes = {"POST /search": {"code": 0, "data": []}, "/raw": b'{"code": 0}'}
    with upstream_server(routes) as up:
        assert httpx.post(f"{up.url}/search").json() == {"code": 0, "data": []}
        assert httpx.get(f"{up.url}/raw").content == b'{"code": 0}'
        assert httpx.get(f"{up.url}/search").status_code == 405
        up.set(body=b"<html>busy</html>", content_type="text/html")
        r = httpx.get(f"{up.url}/ent/{USCC}")
    assert (r.status_code, r.headers["content-type"]) == (200, "text/html")
