"""The upstream client (connectors/http/client.py) against a real HTTP server on loopback: what
it sends (the path under the base URL's prefix, the query encoded, the scheme's headers, a tif
signature the server recomputes), what it passes back (2xx, a 4xx scrubbed of the credential)
and what it raises (504 on a timeout, 502 on a 5xx, a redirect, a refused or dropped
connection), never with the credential or a header value in the error.

The server is this module's own: aiohttp.web in a thread with its own event loop, one for
the module. Each test drives the client with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
import traceback
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

import pytest
from aiohttp import web

from connectors.http import UpstreamClient, UpstreamError, UpstreamResponse, build_path, scheme
from connectors.http.auth import AuthScheme
from connectors.http.schemes.tif import tif_signature
from connectors.http.scrub import Scrubber
from exchange.kernel.errors import BadInput

TOKEN = "Tk-9f3a1c77e0b24d5e-s3cr3t"
#: A key with the characters encoders change: "/" (JSON's "\/", %2F), "+" (%2B), "=".
SLASHY = "ab/cd+ef==Kx7-q9Zr"
#: A 4xx body with no credential in it, only words a key=value guess would take for one.
WORDS = b'{"error":"token: expired",  "detail": "password=short", "n": 1.50}'
T = TypeVar("T")


@dataclass
class Seen:
    """What the server received: one entry per request."""

    method: str
    raw_path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    peer: tuple[str, int]


@dataclass
class Upstream:
    """The server's address and what it saw."""

    url: str
    port: int
    seen: list[Seen] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0

    def last(self) -> Seen:
        return self.seen[-1]


def _app(up: Upstream) -> web.Application:
    async def record(request: web.Request) -> Seen:
        seen = Seen(
            request.method,
            request.raw_path.split("?")[0],
            dict(request.query),
            {k.lower(): v for k, v in request.headers.items()},
            await request.read(),
            request.transport.get_extra_info("peername") if request.transport else ("", 0),
        )
        up.seen.append(seen)
        return seen

    async def echo(request: web.Request) -> web.Response:
        seen = await record(request)
        doc = {"path": seen.raw_path, "query": seen.query, "body": seen.body.decode()}
        return web.json_response(doc | {"content_type": seen.headers.get("content-type")})

    async def tif(request: web.Request) -> web.Response:
        # The platform's side: recompute the signature from what arrived.
        h = (await record(request)).headers
        expected = tif_signature(h["x-tif-timestamp"], TOKEN, h["x-tif-nonce"])
        if h.get("x-tif-signature") != expected or h.get("x-tif-paasid") != "city-exchange":
            return web.json_response({"code": 401, "message": "bad signature"}, status=401)
        return web.json_response({"code": 0, "data": {"uscc": request.match_info["uscc"]}})

    async def slow(request: web.Request) -> web.Response:
        await record(request)
        await asyncio.sleep(float(request.query.get("s", "3")))
        return web.json_response({"code": 0})

    async def busy(request: web.Request) -> web.Response:
        await record(request)
        up.in_flight += 1
        up.most_in_flight = max(up.most_in_flight, up.in_flight)
        await asyncio.sleep(0.2)
        up.in_flight -= 1
        return web.json_response({"code": 0})

    async def fail(request: web.Request) -> web.Response:
        h = (await record(request)).headers
        return web.json_response({"message": "internal error", "echo": h}, status=500)

    async def missing(request: web.Request) -> web.Response:
        # A careless platform: its 404 echoes every header it got, and the token besides.
        h = (await record(request)).headers
        text = json.dumps({"code": 404, "message": f"no such record (token {TOKEN})", "echo": h})
        return web.Response(status=404, body=text.encode(), content_type="application/json")

    async def refuse(request: web.Request) -> web.Response:
        # A platform refusing the key, and echoing it the way its encoder writes it.
        got = (await record(request)).headers.get("x-api-key", "")
        text = {
            "php": json.dumps({"error": f"bad key {got}", "detail": "no"}).replace("/", "\\/"),
            "unicode": '{"error": "bad key ' + "".join(f"\\u{ord(c):04X}" for c in got) + '",'
            ' "detail": "no"}',
            "url": json.dumps({"error": "bad key", "next": "/login?key=" + quote(got, safe="")}),
            "b64": json.dumps({"error": "bad", "echo": base64.b64encode(got.encode()).decode()}),
            "basic": json.dumps({"echo": base64.b64encode(f"city:{got}".encode()).decode()}),
            "words": WORDS.decode(),
        }[request.match_info["form"]]
        return web.Response(status=401, text=text, content_type="application/json")

    async def stamp(request: web.Request) -> web.Response:
        h = (await record(request)).headers
        doc = {"timestamp": int(h["x-tif-timestamp"]), "message": "clock skew"}
        return web.json_response(doc, status=400)

    async def page(request: web.Request) -> web.Response:
        got = (await record(request)).headers.get("x-api-key", "")
        html = f'<p>bad key {got}</p><a href="/login?key={quote(got, safe="")}">again</a>'
        return web.Response(status=403, text=html, content_type="text/html")

    async def moved(request: web.Request) -> web.Response:
        await record(request)
        raise web.HTTPFound("http://elsewhere.example/steal")

    async def drop(request: web.Request) -> web.Response:
        await record(request)
        assert request.transport is not None
        request.transport.close()
        await asyncio.sleep(1)
        return web.Response()

    async def big(request: web.Request) -> web.StreamResponse:
        await record(request)
        resp = web.StreamResponse()  # chunked: no Content-Length to refuse it early
        await resp.prepare(request)
        for _ in range(64):
            await resp.write(b"x" * 1024)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_route("*", "/api/echo/{tail:.*}", echo)
    app.router.add_route("*", "/echo/{tail:.*}", echo)  # for a base URL without a path
    app.router.add_get("/api/refuse/{form}", refuse)
    app.router.add_get("/api/stamp", stamp)
    app.router.add_get("/api/page", page)
    app.router.add_get("/api/tif/ent/{uscc}", tif)
    app.router.add_get("/api/slow", slow)
    app.router.add_get("/api/busy", busy)
    app.router.add_get("/api/fail", fail)
    app.router.add_get("/api/missing", missing)
    app.router.add_get("/api/moved", moved)
    app.router.add_get("/api/drop", drop)
    app.router.add_get("/api/big", big)
    return app


async def _stop(runner: web.AppRunner) -> None:
    """Stop serving, then end the handlers still asleep (the slow ones a timeout left)."""
    await runner.cleanup()
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    """A real HTTP server on 127.0.0.1 for the module; its base URL carries the /api prefix
    (``/echo/...`` also answers without it)."""
    loop = asyncio.new_event_loop()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    up = Upstream(f"http://127.0.0.1:{port}/api", port)
    runner = web.AppRunner(_app(up), shutdown_timeout=0.5)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.SockSite(runner, sock).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield up
    finally:
        asyncio.run_coroutine_threadsafe(_stop(runner), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture
def up(upstream: Upstream) -> Upstream:
    upstream.seen.clear()
    return upstream


def tif() -> AuthScheme:
    return scheme("tif", {"paasid": "city-exchange"}, TOKEN)


def key() -> AuthScheme:
    return scheme("header", {"header": "X-Api-Key", "prefix": "Key "}, TOKEN)


def call(client: UpstreamClient, go: Callable[[UpstreamClient], Awaitable[T]]) -> T:
    """Run ``go(client)`` in a fresh event loop and close the client's pool after."""

    async def run() -> T:
        try:
            return await go(client)
        finally:
            await client.close()

    return asyncio.run(run())


def get(client: UpstreamClient, path: str, query: dict[str, str] | None = None) -> Any:
    return call(client, lambda c: c.request("GET", path, query))


def error_of(client: UpstreamClient, path: str) -> UpstreamError:
    with pytest.raises(UpstreamError) as err:
        get(client, path)
    return err.value


def every_text_of(exc: BaseException) -> str:
    """Everything a log could show of an exception: message, repr, args, the traceback with
    whatever it chains."""
    return "\n".join([str(exc), repr(exc), repr(exc.args), *traceback.format_exception(exc)])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- what comes back ----------------------------------------------------------------------
def test_a_2xx_answer_comes_back_with_its_status_body_and_content_type(up: Upstream) -> None:
    got = get(UpstreamClient("prov", up.url, tif()), "/tif/ent/91410100MA4F000001")

    assert isinstance(got, UpstreamResponse)
    assert got.status == 200
    assert json.loads(got.body) == {"code": 0, "data": {"uscc": "91410100MA4F000001"}}
    assert got.content_type is not None and got.content_type.startswith("application/json")


def test_the_tif_signature_sent_is_the_one_the_platform_recomputes(up: Upstream) -> None:
    got = get(UpstreamClient("prov", up.url, tif()), "/tif/ent/91410100MA4F000001")

    assert got.status == 200  # the server's own check passed
    sent = up.last().headers
    assert sent["x-tif-paasid"] == "city-exchange"
    assert sent["x-tif-signature"] == tif_signature(
        sent["x-tif-timestamp"], TOKEN, sent["x-tif-nonce"]
    )
    assert all(TOKEN not in v for v in sent.values())


def test_a_wrong_token_is_the_platforms_401_passed_back(up: Upstream) -> None:
    wrong = scheme("tif", {"paasid": "city-exchange"}, "not-the-token")

    got = get(UpstreamClient("prov", up.url, wrong), "/tif/ent/91410100MA4F000001")

    assert got.status == 401
    assert json.loads(got.body)["message"] == "bad signature"


def test_every_request_is_signed_anew(up: Upstream) -> None:
    client = UpstreamClient("prov", up.url, tif())

    async def three(c: UpstreamClient) -> list[int]:
        return [(await c.request("GET", "/tif/ent/1")).status for _ in range(3)]

    assert call(client, three) == [200, 200, 200]
    assert len({s.headers["x-tif-nonce"] for s in up.seen}) == 3


def test_the_header_scheme_sends_its_header(up: Upstream) -> None:
    get(UpstreamClient("prov", up.url, key()), "/echo/x")

    assert up.last().headers["x-api-key"] == f"Key {TOKEN}"


def test_a_4xx_body_comes_back_without_the_token_or_any_header_value_sent(
    up: Upstream,
) -> None:
    got = get(UpstreamClient("prov", up.url, tif()), "/missing")

    assert got.status == 404
    text = got.body.decode()
    assert "no such record" in text
    assert TOKEN not in text
    for name in ("x-tif-nonce", "x-tif-signature", "x-tif-timestamp", "x-tif-paasid"):
        assert up.last().headers[name] not in text, name


def test_a_4xx_body_does_not_carry_a_header_schemes_value_whole_or_in_part(
    up: Upstream,
) -> None:
    got = get(UpstreamClient("prov", up.url, key()), "/missing")

    assert got.status == 404
    assert TOKEN not in got.body.decode()
    assert "Key ***" not in got.body.decode()  # the whole value went, not only the token


def slashy() -> AuthScheme:
    return scheme("header", {"header": "X-Api-Key"}, SLASHY)


@pytest.mark.parametrize(
    ("form", "expected"),
    [
        ("php", {"error": "bad key ***", "detail": "no"}),  # "ab\/cd+ef=="
        ("unicode", {"error": "bad key ***", "detail": "no"}),  # "\u0061\u0062..."
        ("url", {"error": "bad key", "next": "/login?key=***"}),  # "ab%2Fcd%2Bef%3D%3D"
        ("b64", {"error": "bad", "echo": "***"}),
    ],
)
def test_a_4xx_body_loses_the_key_however_the_upstream_encoded_it_and_stays_json(
    up: Upstream, form: str, expected: dict[str, str]
) -> None:
    got = get(UpstreamClient("prov", up.url, slashy()), f"/refuse/{form}")

    assert got.status == 401
    assert json.loads(got.body) == expected


def test_a_key_base64_encoded_inside_a_longer_value_is_cut_out_of_it(up: Upstream) -> None:
    got = get(UpstreamClient("prov", up.url, slashy()), "/refuse/basic")

    echo = json.loads(got.body)["echo"]
    assert "***" in echo
    whole = base64.b64encode(f"city:{SLASHY}".encode()).decode()
    assert echo != whole and echo.startswith(whole[:6])  # "city:" is left, the key is not
    assert SLASHY.encode() not in base64.b64decode(echo.replace("***", "") + "===")


def test_a_header_value_sent_as_a_json_number_becomes_a_scrubbed_string(up: Upstream) -> None:
    got = get(UpstreamClient("prov", up.url, tif()), "/stamp")

    assert got.status == 400
    assert json.loads(got.body) == {"timestamp": "***", "message": "clock skew"}


def test_a_4xx_body_that_is_not_json_is_scrubbed_as_text(up: Upstream) -> None:
    got = get(UpstreamClient("prov", up.url, slashy()), "/page")

    assert got.status == 403
    assert got.body.decode() == '<p>bad key ***</p><a href="/login?key=***">again</a>'


def test_a_4xx_body_without_a_sent_value_comes_back_byte_for_byte(up: Upstream) -> None:
    # No key=value guessing: "token: expired" is the upstream's words, not a credential.
    got = get(UpstreamClient("prov", up.url, slashy()), "/refuse/words")

    assert got.status == 401
    assert got.body == WORDS


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # A mixture of escapes, as an encoder that escapes some characters writes it.
        (b'{"e": "ab\\/cd%2bef\\u003d=Kx7-q9Zr!"}', {"e": "***!"}),
        # The key as HTML entities.
        (b'{"e": "ab&#x2F;cd&#43;ef&#61;&#61;Kx7-q9Zr"}', {"e": "***"}),
        # The key as an object key.
        (b'{"ab\\/cd+ef==Kx7-q9Zr": 1}', {"***": 1}),
        # Behind a byte order mark.
        (b"\xef\xbb\xbf" + f'{{"e": "{SLASHY}"}}'.encode(), {"e": "***"}),
    ],
)
def test_a_json_body_is_scrubbed_inside_its_strings_and_stays_json(
    body: bytes, expected: object
) -> None:
    assert json.loads(Scrubber([SLASHY]).body(body, "application/json")) == expected


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + SLASHY.encode(),  # too deep to decode: scrubbed as text
        b'{"a": NaN, "k": "' + SLASHY.encode() + b'"}',  # not JSON
        "错误：密钥 ".encode("gbk") + SLASHY.encode() + " 无效".encode("gbk"),  # not UTF-8
    ],
)
def test_a_body_that_cannot_be_decoded_is_still_scrubbed(body: bytes) -> None:
    got = Scrubber([SLASHY]).body(body, "application/json")

    assert SLASHY.encode() not in got and b"***" in got
    assert got.replace(b"***", SLASHY.encode()) == body  # nothing else was touched


def test_a_key_straddling_the_json_structure_is_removed_all_the_same() -> None:
    secret = 'ab","x":"cd'  # a header value may hold quotes
    body = b'{"a":"ab","x":"cd"}'

    assert secret.encode() not in Scrubber([secret]).body(body, "application/json")


# -- what is sent -------------------------------------------------------------------------
def test_the_path_joins_onto_the_base_urls_prefix(up: Upstream) -> None:
    got = get(UpstreamClient("prov", up.url, key()), "/echo/ent/1")

    assert json.loads(got.body)["path"] == "/api/echo/ent/1"


def test_a_base_url_with_a_trailing_slash_joins_the_same(up: Upstream) -> None:
    got = get(UpstreamClient("prov", up.url + "/", key()), "/echo/ent/1")

    assert json.loads(got.body)["path"] == "/api/echo/ent/1"


@pytest.mark.parametrize(
    ("suffix", "expected"),
    [
        ("", "/echo/ent/1"),  # https://nation.example: host only
        ("/", "/echo/ent/1"),
        ("/api", "/api/echo/ent/1"),
        ("/api/", "/api/echo/ent/1"),
    ],
)
def test_the_path_sent_has_a_single_slash_with_or_without_a_prefix(
    up: Upstream, suffix: str, expected: str
) -> None:
    base = f"http://127.0.0.1:{up.port}{suffix}"
    client = UpstreamClient("nation", base, key())

    got = get(client, "/echo/ent/1")

    assert got.status == 200
    assert up.last().raw_path == json.loads(got.body)["path"] == expected  # never //echo/...
    assert str(client.url("/echo/ent/1")) == f"http://127.0.0.1:{up.port}{expected}"


def test_a_base_urls_encoded_prefix_is_kept_as_it_is() -> None:
    client = UpstreamClient("prov", "https://prov.example/open%20api/v1/", key())

    assert str(client.url("/ent/1")) == "https://prov.example/open%20api/v1/ent/1"
    assert str(UpstreamClient("n", "https://nation.example", key()).url("/")) == (
        "https://nation.example/"
    )


def test_query_parameters_are_url_encoded(up: Upstream) -> None:
    query = {"name": "张三 & co=1", "page": "2", "q": "a+b/c?d#e"}

    got = get(UpstreamClient("prov", up.url, key()), "/echo/x", query)

    assert json.loads(got.body)["query"] == query  # no parameter split off, none mangled


def test_a_path_parameter_stays_inside_its_segment(up: Upstream) -> None:
    path = build_path("/echo/ent/{uscc}/x", {"uscc": "a?b c#d;e=张"})

    got = get(UpstreamClient("prov", up.url, key()), path)

    assert json.loads(got.body)["path"] == "/api/echo/ent/a%3Fb%20c%23d%3Be%3D%E5%BC%A0/x"


@pytest.mark.parametrize(
    "value",
    [
        "../../internal/persons/7",  # decoded and normalised by the nginx in front
        "a/b",
        "a\\b",  # IIS takes a backslash for a slash
        "x..y",
        "..",
        ".",
        "",
        "%2E%2E",  # decoded twice: ..
        "%2F",
        "a\x00b",
        "91410100MA4F000001\n",
        "a\x7fb",
        "a\x85b",  # C1
        "\u202eevil",  # a bidi override
        "a\uff0fb",  # a fullwidth solidus: NFKC folds it into /
        "\uff0e\uff0e",  # fullwidth full stops: ..
    ],
)
def test_a_path_parameter_that_could_leave_its_segment_is_refused_naming_the_param(
    value: str,
) -> None:
    with pytest.raises(BadInput, match=r"^path param 'uscc' may ") as refused:
        build_path("/ent/{uscc}", {"uscc": value})

    if len(value) > 2:  # the message names the param and what it holds, never the value
        assert value not in str(refused.value) and repr(value) not in str(refused.value)


def test_an_ordinary_path_parameter_is_still_accepted() -> None:
    for value in ("91410100MA4F000001", "张三", "a.b", "v1.2", "-_~", "a b"):
        assert build_path("/ent/{uscc}", {"uscc": value}).startswith("/ent/")


def test_a_body_is_posted_as_json(up: Upstream) -> None:
    client = UpstreamClient("prov", up.url, key())

    got = call(client, lambda c: c.request("POST", "/echo/search", body=b'{"uscc": "1"}'))

    doc = json.loads(got.body)
    assert (doc["body"], doc["content_type"]) == ('{"uscc": "1"}', "application/json")
    assert up.last().method == "POST"


def test_one_connection_serves_request_after_request(up: Upstream) -> None:
    client = UpstreamClient("prov", up.url, key())

    async def three(c: UpstreamClient) -> None:
        for _ in range(3):
            await c.request("GET", "/echo/x")

    call(client, three)

    assert len({s.peer for s in up.seen}) == 1  # kept alive


def test_no_more_connections_than_max_connections_are_opened(up: Upstream) -> None:
    up.most_in_flight = 0
    client = UpstreamClient("prov", up.url, key(), max_connections=2)

    async def six(c: UpstreamClient) -> None:
        await asyncio.gather(*(c.request("GET", "/busy") for _ in range(6)))

    call(client, six)

    assert up.most_in_flight == 2
    assert len({s.peer for s in up.seen}) == 2


def test_a_closed_client_opens_a_new_pool_in_the_next_event_loop(up: Upstream) -> None:
    client = UpstreamClient("prov", up.url, key())

    for _ in range(2):  # as two test cases, or a worker re-created after a fork, would
        assert call(client, lambda c: c.request("GET", "/echo/x")).status == 200

    assert len({s.peer for s in up.seen}) == 2


def test_dot_segments_and_queries_in_a_path_are_refused() -> None:
    client = UpstreamClient("prov", "http://127.0.0.1:9/api", key())

    for path in ("/ent/../admin", "/ent/%2e%2E/admin", "/./x", "/x?y=1", "x"):
        with pytest.raises(BadInput):
            client.url(path)
    for value in ("..", ".", ""):
        with pytest.raises(BadInput):
            build_path("/ent/{uscc}", {"uscc": value})


def test_a_path_parameter_without_a_value_is_named() -> None:
    with pytest.raises(BadInput, match=r"no value for \{uscc\}"):
        build_path("/ent/{uscc}", {})


@pytest.mark.parametrize(
    ("base_url", "why"),
    [
        (f"http://city:{TOKEN}@prov.example/api", "user-info"),
        ("https://prov.example/api?key=1", "query"),
        ("ftp://prov.example/api", "http"),
        ("prov.example/api", "http"),
    ],
)
def test_a_base_url_the_client_cannot_use_is_refused_without_its_secret(
    base_url: str, why: str
) -> None:
    with pytest.raises(BadInput) as err:
        UpstreamClient("prov", base_url, key())

    assert why in str(err.value)
    assert TOKEN not in str(err.value)


def test_the_clients_repr_hides_the_secret(up: Upstream) -> None:
    assert TOKEN not in repr(UpstreamClient("prov", up.url, key()))


# -- what raises --------------------------------------------------------------------------
def test_no_answer_within_the_timeout_is_a_504_naming_the_upstream(up: Upstream) -> None:
    err = error_of(UpstreamClient("prov", up.url, tif(), timeout_s=0.3), "/slow")

    assert err.status == 504
    assert err.message == "upstream prov did not answer within 0.3s"


def test_a_5xx_is_a_502_without_its_body(up: Upstream) -> None:
    err = error_of(UpstreamClient("prov", up.url, tif()), "/fail")

    assert (err.status, err.message) == (502, "upstream prov answered 500")


def test_a_refused_connection_is_a_502_naming_the_upstream() -> None:
    port = free_port()

    err = error_of(UpstreamClient("prov", f"http://127.0.0.1:{port}/api", tif()), "/x")

    assert err.status == 502
    assert err.message.startswith("upstream prov unreachable: ")
    assert f"127.0.0.1:{port}" in err.message


def test_a_connection_dropped_without_an_answer_is_a_502(up: Upstream) -> None:
    err = error_of(UpstreamClient("prov", up.url, tif()), "/drop")

    assert err.status == 502
    assert err.message.startswith("upstream prov unreachable: ")


def test_a_redirect_is_not_followed_and_is_a_502(up: Upstream) -> None:
    err = error_of(UpstreamClient("prov", up.url, key()), "/moved")

    assert err.status == 502
    assert err.message == "upstream prov answered 302 (only 2xx and 4xx pass)"
    assert [s.raw_path for s in up.seen] == ["/api/moved"]  # nothing went elsewhere


def test_a_body_larger_than_the_limit_is_a_502(up: Upstream) -> None:
    client = UpstreamClient("prov", up.url, key(), max_body_bytes=32 * 1024)

    err = error_of(client, "/big")

    assert (err.status, err.message) == (502, "upstream prov sent more than 32768 bytes")


@pytest.mark.parametrize("path", ["/slow", "/fail", "/drop", "/moved", "/big"])
@pytest.mark.parametrize("auth", [tif, key])
def test_no_error_carries_the_token_or_a_header_value_sent(
    up: Upstream, path: str, auth: Callable[[], AuthScheme]
) -> None:
    client = UpstreamClient("prov", up.url, auth(), timeout_s=0.5, max_body_bytes=1024)

    err = error_of(client, path)

    text = every_text_of(err)
    assert err.__cause__ is None and err.__context__ is None  # no aiohttp error rides along
    assert TOKEN not in text
    for value in up.last().headers.values():
        if len(value) >= 16:  # the signature, the nonce, the key header (not the port)
            assert value not in text


def test_an_unreachable_upstreams_error_carries_no_token() -> None:
    client = UpstreamClient("prov", f"http://127.0.0.1:{free_port()}/api", key())

    assert TOKEN not in every_text_of(error_of(client, "/x"))


# -- a keep-alive connection the upstream closed -------------------------------------------
@dataclass
class OneShot:
    """A platform that keeps each connection for one request: it answers the first (HTTP/1.1,
    kept alive as far as the client can tell) and closes the connection, unanswered, on the
    next one that comes over it. It checks the tif signature and refuses a nonce it has seen
    (401 "replayed"), as a platform guarding against replays does."""

    port: int = 0
    nonces: list[str] = field(default_factory=list)  # every request's, in arrival order
    methods: list[str] = field(default_factory=list)
    dropped: int = 0
    replayed: int = 0
    drop_all: bool = False  # close every connection on its first request too

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answered = False
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                lines = head.decode("latin-1").split("\r\n")
                headers = dict(
                    (k.strip().lower(), v.strip())
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                )
                await reader.readexactly(int(headers.get("content-length", "0")))
                self.methods.append(lines[0].split(" ")[0])
                nonce = headers.get("x-tif-nonce", "")
                self.nonces.append(nonce)
                if answered or self.drop_all:
                    self.dropped += 1
                    break  # closed without an answer: its time for one request is up
                answered = True
                status, doc = 200, b'{"code": 0}'
                good = tif_signature(headers.get("x-tif-timestamp", ""), TOKEN, nonce)
                if headers.get("x-tif-signature") != good:
                    status, doc = 401, b'{"code": 401, "message": "bad signature"}'
                elif self.nonces.count(nonce) > 1:
                    self.replayed += 1
                    status, doc = 401, b'{"code": 401, "message": "replayed"}'
                writer.write(
                    f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(doc)}\r\n\r\n".encode()
                    + doc
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def with_one_shot(go: Callable[[UpstreamClient, OneShot], Awaitable[T]]) -> tuple[T, OneShot]:
    """Run ``go`` against a fresh ``OneShot`` platform on loopback, in a fresh event loop."""
    shot = OneShot()

    async def run() -> T:
        server = await asyncio.start_server(shot.serve, "127.0.0.1", 0)
        shot.port = server.sockets[0].getsockname()[1]
        client = UpstreamClient("prov", f"http://127.0.0.1:{shot.port}/api", tif())
        try:
            return await go(client, shot)
        finally:
            await client.close()
            server.close()
            await server.wait_closed()

    return asyncio.run(run()), shot


def test_a_get_over_a_kept_alive_connection_the_upstream_closed_is_resent_signed_anew() -> None:
    async def three(c: UpstreamClient, _: OneShot) -> list[int]:
        return [(await c.request("GET", "/ent/1")).status for _ in range(3)]

    statuses, shot = with_one_shot(three)

    assert statuses == [200, 200, 200]
    # 1 answered; 2 dropped on the reused connection, resent on a new one; 3 the same
    assert (len(shot.nonces), shot.dropped, shot.replayed) == (5, 2, 0)
    assert len(set(shot.nonces)) == 5  # no signature went out twice


def test_a_post_over_a_kept_alive_connection_the_upstream_closed_is_not_resent() -> None:
    async def get_then_post(c: UpstreamClient, _: OneShot) -> UpstreamError:
        await c.request("GET", "/ent/1")
        with pytest.raises(UpstreamError) as err:
            await c.request("POST", "/search", body=b'{"uscc": "1"}')
        return err.value

    err, shot = with_one_shot(get_then_post)

    assert err.status == 502
    assert err.message.startswith("upstream prov unreachable: ")
    assert err.__cause__ is None and err.__context__ is None
    assert shot.methods == ["GET", "POST"]  # the POST went out once, whatever it did there


def test_a_get_is_resent_at_most_once() -> None:
    # When the resend's new connection is dropped too, that is the caller's 502: no third try.
    async def go(c: UpstreamClient, shot: OneShot) -> UpstreamError:
        await c.request("GET", "/ent/1")
        shot.drop_all = True
        with pytest.raises(UpstreamError) as err:
            await c.request("GET", "/ent/2")
        return err.value

    err, shot = with_one_shot(go)

    assert (err.status, err.message.startswith("upstream prov unreachable: ")) == (502, True)
    assert (len(shot.nonces), shot.dropped) == (3, 2)  # answered; reused dropped; resend dropped


def test_a_get_dropped_on_a_new_connection_is_not_resent(up: Upstream) -> None:
    err = error_of(UpstreamClient("prov", up.url, tif()), "/drop")

    assert err.status == 502
    assert len(up.seen) == 1


def test_aiohttps_own_resend_with_the_same_headers_is_off(up: Upstream) -> None:
    # aiohttp 3.14 keeps the switch in a private attribute; if a later version renames it,
    # the resend tests above fail (three tries or a replayed nonce), and this one says why.
    async def session_flag(c: UpstreamClient) -> object:
        await c.request("GET", "/echo/x")
        assert c._session is not None
        return getattr(c._session, "_retry_connection", "attribute gone")

    assert call(UpstreamClient("prov", up.url, key()), session_flag) is False


def test_a_request_the_shared_test_platform_drops_once_is_answered_not_refused() -> None:
    # The review's case (G6) against tests/servers/upstream.py, which refuses a seen nonce.
    from tests.servers.upstream import upstream_server

    with upstream_server(token=TOKEN) as platform:
        client = UpstreamClient("prov", platform.url, tif())

        async def twice(c: UpstreamClient) -> list[int]:
            first = await c.request("GET", "/ent/91410100MA4F000001")
            platform.set(drop=True, times=1)  # the next request's connection is closed
            return [first.status, (await c.request("GET", "/ent/91410100MA4F000001")).status]

        statuses = call(client, twice)
        seen = platform.requests()

    assert statuses == [200, 200]
    assert [r.authorized for r in seen] == [True, True, True]  # dropped, then the resend
    assert len({r.headers["x-tif-nonce"] for r in seen}) == 3
