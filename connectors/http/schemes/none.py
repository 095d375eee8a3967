"""Scheme ``none``: an upstream that needs no credential (a platform reached over a private
line that authenticates the network, or a test server)."""

from __future__ import annotations

from connectors.http.auth import AuthScheme


class NoAuth(AuthScheme):
    """No header at all."""

    name = "none"
    takes_secret = False

    def headers(self, method: str, path: str) -> dict[str, str]:
        return {}
