"""One upstream platform's HTTP client: the gateway's calls to national and provincial APIs.

An ``UpstreamClient`` holds one connection pool (aiohttp, keep-alive) to one node's base URL,
created lazily inside the running event loop, and injects the node's credential through its
``AuthScheme`` on every request. What comes back is one of two things:

* an ``UpstreamResponse`` for a 2xx, and for a 4xx (the caller's request was refused: its
  body is passed on with the credential and every header value sent scrubbed out, also
  JSON-escaped, percent-encoded or base64-encoded; a JSON body stays JSON, see
  ``connectors/http/scrub.py``);
* an ``UpstreamError`` for everything the caller cannot fix: no answer within the timeout
  (504), no connection, a 5xx, a redirect or a broken body (502). Its message names the
  upstream, never the credential nor a header value, and it chains no aiohttp exception
  (those carry the request's headers).

Redirects are not followed: the credential's headers would go wherever the upstream points.

A GET that finds its reused keep-alive connection closed by the upstream (no answer came) is
sent once more on a new connection, signed anew: a scheme's headers (tif: nonce, timestamp)
are good for one request only. aiohttp's own resend, which replays the same headers, is off;
a POST is never resent.
"""

from __future__ import annotations

import asyncio
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from types import SimpleNamespace, TracebackType
from typing import cast
from urllib.parse import quote, unquote

import aiohttp
from yarl import URL

from connectors.http.auth import AuthScheme
from connectors.http.scrub import Scrubber
from connectors.secrets import redact
from exchange.kernel.errors import BadInput, ExchangeError

#: What a path may hold as it is (RFC 3986 ``pchar`` and ``/``); anything else is quoted.
_PATH_SAFE = "/:@!$&'()*+,;=-._~%"
_PARAM = re.compile(r"\{([^{}]+)\}")
_DOT_SEGMENTS = {".", ".."}
#: What a path param's value may not hold (``path_value_problem``).
_PATH_REFUSED = ("/", "\\", "..", "%")
#: Control (C0, DEL, C1), format (bidi overrides, zero-width) and line/paragraph separators.
_CONTROL_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})
#: A 4xx body up to this size is scrubbed in the event loop; a larger one in a thread.
_SCRUB_INLINE_BYTES = 64 * 1024
#: aiohttp (3.14) resends an idempotent request once when a reused keep-alive connection
#: turns out closed, with the headers built for the first try: a tif nonce and timestamp
#: replayed, which the upstream refuses (or counts twice). ClientSession has no public switch
#: for it, only this private attribute; it is set only where it exists (a later aiohttp may
#: drop or rename it: tests/test_http_client.py pins the behaviour, not the name).
_AIOHTTP_RESEND_ATTR = "_retry_connection"
#: What ``request`` resends itself (once, with fresh headers).
_RESENT_METHODS = frozenset({"GET"})


@dataclass
class _Attempt:
    """One try of a request, as aiohttp's trace and the answer tell it."""

    reused: bool = False  # went out on a pooled keep-alive connection
    answered: bool = False  # a status line came back


async def _on_reused(
    _session: aiohttp.ClientSession,
    ctx: SimpleNamespace,
    _params: aiohttp.TraceConnectionReuseconnParams,
) -> None:
    attempt = ctx.trace_request_ctx
    if isinstance(attempt, _Attempt):
        attempt.reused = True


def _trace() -> aiohttp.TraceConfig:
    """A trace telling each ``_Attempt`` whether its connection came from the pool."""
    trace = aiohttp.TraceConfig()
    trace.on_connection_reuseconn.append(_on_reused)
    return trace


@dataclass(frozen=True)
class UpstreamResponse:
    """What the upstream answered (2xx, or a scrubbed 4xx)."""

    status: int
    body: bytes
    content_type: str | None
    #: A throttling upstream's ``Retry-After`` (429 or 503), when it is a number of seconds.
    retry_after_s: int | None = None


class UpstreamError(ExchangeError):
    """The upstream gave no usable answer: 504 (timeout) or 502 (unreachable, 5xx, redirect,
    broken or oversized body). ``message`` never holds the credential nor a header value."""

    def __init__(self, status: int, message: str):
        self.status, self.message = status, message
        super().__init__(message)


def path_value_problem(value: str) -> str | None:
    """What makes ``value`` unfit for a path segment, or None.

    Percent-encoding alone does not keep a value inside its segment: the nginx, Tomcat or IIS
    in front of an upstream decodes ``%2F`` and ``%5C`` and normalises ``..``, and a value
    decoded twice turns ``%2E%2E`` into ``..``. The request is signed for the platform, so
    what leaves its segment reaches any endpoint of the upstream with the city's credential.
    Hence a separator, ``..`` anywhere, ``%`` and control characters are refused, also after
    NFKC (a server that folds ``／`` into ``/``), rather than encoded."""
    if not value:
        return "may not be empty"
    if value == ".":
        return "may not be '.'"
    for form in dict.fromkeys((value, unicodedata.normalize("NFKC", value))):
        for bad in _PATH_REFUSED:
            if bad in form:
                return f"may not contain {bad!r}"
        if any(unicodedata.category(c) in _CONTROL_CATEGORIES for c in form):
            return "may not contain a control or format character"
    return None


def build_path(template: str, values: Mapping[str, str]) -> str:
    """``/ent/{uscc}`` with each ``{name}`` replaced by its value, percent-encoded whole (a
    ``?`` or a space in a value stays inside its segment). A value that could leave its
    segment (``path_value_problem``) is refused: ``BadInput`` names the param, never the
    value."""

    def one(m: re.Match[str]) -> str:
        name = m[1]
        if name not in values:
            raise BadInput(f"path {template!r}: no value for {{{name}}}")
        wrong = path_value_problem(str(values[name]))
        if wrong is not None:
            raise BadInput(f"path param {name!r} {wrong}")
        return quote(str(values[name]), safe="")

    return _PARAM.sub(one, template)


def _base(name: str, base_url: str) -> tuple[URL, str]:
    """The base URL checked, and its path without the trailing ``/`` (``""`` for none): the
    prefix every request path goes under."""
    url = URL(base_url)
    if url.scheme not in ("http", "https") or not url.host:
        raise BadInput(f"upstream {name}: base_url must be an http:// or https:// URL")
    if url.user is not None or url.password is not None:
        raise BadInput(f"upstream {name}: base_url may not hold user-info (use auth)")
    if url.query_string or url.fragment:
        raise BadInput(f"upstream {name}: base_url may not hold a query or a fragment")
    # yarl gives an absolute URL with no path the path "/": joined naively, "/ent/X" would
    # become "//ent/X" (a 404, or a redirect, on most servers).
    prefix = url.raw_path.rstrip("/")
    return url.with_path(prefix or "/", encoded=True), prefix


class UpstreamClient:
    """Requests to one upstream node, its credential injected by ``scheme``."""

    def __init__(
        self,
        name: str,
        base_url: str,
        scheme: AuthScheme,
        *,
        timeout_s: float = 10.0,
        max_connections: int = 200,
        max_body_bytes: int = 16 * 1024 * 1024,
        dns_cache_s: int = 300,
    ):
        if timeout_s <= 0:
            raise BadInput(f"upstream {name}: timeout_s must be positive, not {timeout_s}")
        self.name = name
        self.base, self._prefix = _base(name, base_url)
        self.scheme = scheme
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self.max_body_bytes = max_body_bytes
        self.dns_cache_s = dns_cache_s
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"UpstreamClient({self.name!r}, {str(self.base)!r}, {self.scheme!r})"

    def url(self, path: str) -> URL:
        """The URL of ``path`` (relative to the base URL's path, already percent-encoded as
        ``build_path`` gives it; other characters are quoted, dot segments refused)."""
        if not path.startswith("/"):
            raise BadInput(f"upstream {self.name}: path {path!r} must start with '/'")
        if "?" in path or "#" in path:
            raise BadInput(
                f"upstream {self.name}: path {path!r} may not hold a query (pass query=)"
            )
        raw = quote(path, safe=_PATH_SAFE)
        if any(unquote(s) in _DOT_SEGMENTS for s in raw.split("/")[1:]):
            raise BadInput(f"upstream {self.name}: path {path!r} may not hold . or .. segments")
        return self.base.with_path(self._prefix + raw, encoded=True)

    def _session_here(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            # A pool belongs to the loop it was opened in: one per loop (a worker process
            # opens its own after the fork; a test's asyncio.run gets a fresh one).
            connector = aiohttp.TCPConnector(
                limit=self.max_connections,
                limit_per_host=0,
                ttl_dns_cache=self.dns_cache_s,
                keepalive_timeout=30,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                raise_for_status=False,
                trace_configs=[_trace()],
            )
            if hasattr(self._session, _AIOHTTP_RESEND_ATTR):
                setattr(self._session, _AIOHTTP_RESEND_ATTR, False)  # see _AIOHTTP_RESEND_ATTR
            self._loop = loop
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | None = None,
        body: bytes | None = None,
        *,
        content_type: str = "application/json",
    ) -> UpstreamResponse:
        """One call: 2xx and 4xx come back (a 4xx scrubbed); anything else raises
        ``UpstreamError``. A GET whose reused connection the upstream had closed is sent
        once more, on a new connection, with fresh scheme headers."""
        method = method.upper()
        url = self.url(path)
        session = self._session_here()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s  # one budget for the call, resend included
        sent: list[str] = []  # every header value sent, over both tries: all are scrubbed
        resend = method in _RESENT_METHODS
        # Set by the try that is answered (a failed one raises, or goes again).
        status, data, content_type_got = 0, b"", cast("str | None", None)
        while True:
            headers = self.scheme.headers(method, path)  # signed anew for each try
            sent += [v for v in headers.values() if v]
            if body is not None:
                headers = {"Content-Type": content_type, **headers}
            attempt = _Attempt()
            failure: UpstreamError | None = None
            try:
                async with session.request(
                    method,
                    url,
                    params=dict(query) if query else None,
                    data=body,
                    headers=headers,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=max(deadline - loop.time(), 0.001)),
                    trace_request_ctx=attempt,
                ) as resp:
                    attempt.answered = True
                    status = resp.status
                    if status >= 500:
                        raise UpstreamError(502, f"upstream {self.name} answered {status}")
                    if status < 200 or 300 <= status < 400:
                        raise UpstreamError(
                            502, f"upstream {self.name} answered {status} (only 2xx and 4xx pass)"
                        )
                    data = await self._read(resp)
                    content_type_got = resp.headers.get("Content-Type")
                    retry_after = _seconds(resp.headers.get("Retry-After"))
            except UpstreamError:
                raise
            # Each failure is raised outside its except block: an aiohttp exception carries the
            # request's headers, so it must not ride along even as the implicit __context__.
            except TimeoutError:  # asyncio's and aiohttp's timeouts both are TimeoutError
                failure = UpstreamError(
                    504, f"upstream {self.name} did not answer within {self.timeout_s:g}s"
                )
            except aiohttp.ClientConnectionError as exc:
                # A pooled connection the upstream closed while it sat idle (its keep-alive
                # timeout ran out first, or it keeps a connection for one request): nothing
                # was answered, so a GET goes again, once, on a new connection.
                stale = isinstance(
                    exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)
                ) and not isinstance(exc, aiohttp.ClientConnectorError)
                if resend and stale and attempt.reused and not attempt.answered:
                    resend = False
                    continue
                reason = self._scrub(str(exc) or type(exc).__name__, sent)
                failure = UpstreamError(502, f"upstream {self.name} unreachable: {reason}")
            except aiohttp.ClientError as exc:
                reason = self._scrub(str(exc) or type(exc).__name__, sent)
                failure = UpstreamError(502, f"upstream {self.name} sent a broken answer: {reason}")
            if failure is not None:
                raise failure
            break
        if status >= 400:
            scrub = self._scrubber(sent).body
            if len(data) > _SCRUB_INLINE_BYTES:
                # Up to about 0.15 s a megabyte: off the event loop, which serves every other call.
                data = await asyncio.to_thread(scrub, data, content_type_got)
            else:
                data = scrub(data, content_type_got)
        return UpstreamResponse(status, data, content_type_got, retry_after)

    async def _read(self, resp: aiohttp.ClientResponse) -> bytes:
        """The body, refused past ``max_body_bytes`` (an upstream cannot fill our memory)."""
        limit = self.max_body_bytes
        if resp.content_length is not None and resp.content_length > limit:
            raise UpstreamError(502, f"upstream {self.name} sent more than {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(65_536):
            size += len(chunk)
            if size > limit:
                raise UpstreamError(502, f"upstream {self.name} sent more than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _scrubber(self, sent: list[str]) -> Scrubber:
        """What scrubs this request's answer: the credential and every header value sent."""
        return Scrubber([self.scheme.secret, *sent])

    def _scrub(self, text: str, sent: list[str]) -> str:
        # A message (not a body) also loses URL user-info and key=value passwords.
        return redact(self._scrubber(sent).text(text))

    async def close(self) -> None:
        """Close the pool (the next request opens a new one)."""
        session, self._session, self._loop = self._session, None, None
        if session is not None and not session.closed:
            await session.close()

    async def __aenter__(self) -> UpstreamClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def _seconds(value: str | None) -> int | None:
    """A ``Retry-After`` of delay-seconds, bounded to a day; an HTTP date or anything else is
    dropped (a number is all the gateway passes on)."""
    if value is None or not value.strip().isdigit():
        return None
    return min(int(value.strip()), 86_400)
