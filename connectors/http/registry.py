"""Which authentication scheme an upstream node's ``auth.scheme`` names.

One line per scheme in ``SCHEMES``, each scheme one module under ``connectors/http/schemes/``.
Adding a scheme is its module, one line here, and its name in the catalog's schema; the
conformance suite (tests/conformance/http_schemes.py) then runs on it.
"""

from __future__ import annotations

from collections.abc import Mapping

from connectors.http.auth import AuthScheme
from connectors.http.schemes.header import HeaderAuth
from connectors.http.schemes.none import NoAuth
from connectors.http.schemes.tif import TifAuth
from exchange.kernel.errors import BadInput

SCHEMES: dict[str, type[AuthScheme]] = {
    "none": NoAuth,
    "header": HeaderAuth,
    "tif": TifAuth,
}


def _unknown(name: str) -> str:
    return f"unknown auth scheme {name!r} (known: {', '.join(SCHEMES)})"


def problems(name: str, options: Mapping[str, str], has_secret: bool) -> list[str]:
    """What is wrong with a node's ``auth`` (empty: nothing), for ``exchange catalog validate``."""
    cls = SCHEMES.get(name)
    if cls is None:
        return [_unknown(name)]
    return cls.problems(options, has_secret)


def scheme(name: str, options: Mapping[str, str], secret: str | None) -> AuthScheme:
    """The scheme ``name`` built from a node's options and its resolved secret."""
    cls = SCHEMES.get(name)
    if cls is None:
        raise BadInput(_unknown(name))
    return cls(options, secret)
