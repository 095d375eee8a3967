"""Scheme ``header``: the credential in one header, behind an optional prefix.

auth: {scheme: header, header: X-Api-Key, credential: {env: K}}
auth: {scheme: header, header: Authorization, prefix: "Bearer ", credential: {env: K}}
"""

from __future__ import annotations

from collections.abc import Mapping

from connectors.http.auth import AuthScheme, bad_header_name


class HeaderAuth(AuthScheme):
    """``{header: prefix + secret}``, the same on every request."""

    name = "header"
    required = ("header",)
    optional = ("prefix",)

    def headers(self, method: str, path: str) -> dict[str, str]:
        return {self.options["header"]: self.options.get("prefix", "") + (self.secret or "")}

    @classmethod
    def problems(cls, options: Mapping[str, str], has_secret: bool) -> list[str]:
        found = super().problems(options, has_secret)
        header = options.get("header")
        if isinstance(header, str) and header and bad_header_name(header):
            found.append(f"option 'header': {header!r} is not an HTTP header name")
        return found
