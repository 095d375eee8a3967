"""How a request to an upstream platform carries the city's credential: one ``AuthScheme``.

A scheme is built from a node's ``auth`` options (the catalog's, never secret: a header name,
a prefix, a paasid) and the secret resolved at start (``connectors.resolve.resolve_secret``).
It gives the headers of each request; ``problems`` checks the options before anything is
built, so that ``exchange catalog validate`` names a mistake without a secret in sight.

A scheme holds the secret: its ``repr`` and ``str`` never show it, and neither does any
message it writes (the conformance suite, tests/conformance/http_schemes.py, checks both).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import ClassVar

from exchange.kernel.errors import BadInput

#: A header name as HTTP allows it (RFC 9110 ``token``).
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def bad_header_name(name: str) -> bool:
    """Whether ``name`` cannot be an HTTP header name."""
    return not _TOKEN.match(name)


#: What no header value may hold: a CR or LF would split the request (inject headers), other
#: controls and non-ASCII characters are refused by HTTP clients mid-request.
UNSAFE_IN_HEADER = "a line break, a control or a non-ASCII character"


def unsafe_in_header(value: str) -> bool:
    """Whether ``value`` cannot travel in an HTTP header as it is."""
    return any(not (" " <= c <= "~" or c == "\t") for c in value)


class AuthScheme(ABC):
    """The credential of one upstream node, as the headers of each request."""

    #: The scheme's name in the catalog (``auth.scheme``) and in ``SCHEMES``.
    name: ClassVar[str]
    #: Whether the scheme takes a credential (``auth.credential``): required when true,
    #: refused when false.
    takes_secret: ClassVar[bool] = True
    #: The options the scheme reads: required ones, then optional ones; any other is refused.
    required: ClassVar[tuple[str, ...]] = ()
    optional: ClassVar[tuple[str, ...]] = ()
    #: Whether two requests get different headers (a timestamp, a nonce): a caller may cache
    #: the headers of a scheme that says no.
    per_request: ClassVar[bool] = False

    def __init__(self, options: Mapping[str, str], secret: str | None):
        found = self.problems(options, secret is not None)
        if secret is not None and unsafe_in_header(secret):
            # Said without the value: the secret is not for a message.
            found.append(f"the credential holds {UNSAFE_IN_HEADER}")
        if found:
            raise BadInput(f"auth scheme {self.name!r}: " + "; ".join(found))
        self.options: Mapping[str, str] = dict(options)
        self._secret = secret

    @property
    def secret(self) -> str | None:
        """The credential, for the client to scrub it from what it passes on; never show it."""
        return self._secret

    @abstractmethod
    def headers(self, method: str, path: str) -> dict[str, str]:
        """The headers that authenticate one request (``path`` relative to the base URL)."""

    @classmethod
    def problems(cls, options: Mapping[str, str], has_secret: bool) -> list[str]:
        """What is wrong with a node's ``auth`` for this scheme (empty: nothing)."""
        found: list[str] = []
        if cls.takes_secret and not has_secret:
            found.append("a credential is required ({env: VAR} or {airflow_conn_id: ID})")
        if not cls.takes_secret and has_secret:
            found.append(f"scheme {cls.name!r} takes no credential")
        for key in cls.required:
            if not options.get(key):
                found.append(f"option {key!r} is required")
        known = cls.required + cls.optional
        for key in sorted(set(options) - set(known)):
            allowed = ", ".join(known) or "none"
            found.append(f"unknown option {key!r} (scheme {cls.name!r} knows: {allowed})")
        for key, value in sorted(options.items()):
            if not isinstance(value, str):
                found.append(f"option {key!r} must be a string")
            elif unsafe_in_header(value):
                found.append(f"option {key!r} holds {UNSAFE_IN_HEADER}")
        return found

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in sorted(self.options.items()))
        held = "***" if self._secret is not None else "none"
        return f"{type(self).__name__}({options}{', ' if options else ''}secret={held})"

    __str__ = __repr__
