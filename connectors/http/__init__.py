"""Upstream HTTP platforms (national and provincial interface gateways) behind one client.

``UpstreamClient(name, base_url, scheme(...))`` calls one upstream node with the city's
credential injected by the node's authentication scheme (``connectors/http/registry.py``:
``none``, ``header``, ``tif``). The secret comes from ``connectors.resolve.resolve_secret``;
it never appears in a message, a ``repr`` or a 4xx body passed on.
"""

from __future__ import annotations

from connectors.http.auth import AuthScheme
from connectors.http.client import UpstreamClient, UpstreamError, UpstreamResponse, build_path
from connectors.http.registry import SCHEMES, problems, scheme

__all__ = [
    "SCHEMES",
    "AuthScheme",
    "UpstreamClient",
    "UpstreamError",
    "UpstreamResponse",
    "build_path",
    "problems",
    "scheme",
]
