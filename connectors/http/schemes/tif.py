"""Scheme ``tif``: the signed headers of the national and provincial data-sharing platforms'
interface gateways (政务数据共享平台 TIF 网关).

Each request carries the platform-issued application id and a fresh signature over a
timestamp and a nonce, keyed by the platform-issued token (the credential):

    x-tif-paasid     the application id (option ``paasid``)
    x-tif-timestamp  unix seconds
    x-tif-nonce      32 random hex digits
    x-tif-signature  upper-case hex SHA-256 of timestamp + token + nonce + timestamp

    auth: {scheme: tif, paasid: city-exchange, credential: {env: PROV_TIF_TOKEN}}
"""

from __future__ import annotations

import hashlib
import secrets
import time

from connectors.http.auth import AuthScheme


def tif_signature(timestamp: str, token: str, nonce: str) -> str:
    """The signature the gateway recomputes to check a request."""
    return hashlib.sha256((timestamp + token + nonce + timestamp).encode()).hexdigest().upper()


class TifAuth(AuthScheme):
    """The TIF headers, signed anew for every request."""

    name = "tif"
    required = ("paasid",)
    per_request = True

    def headers(self, method: str, path: str) -> dict[str, str]:
        timestamp = str(int(time.time()))
        nonce = secrets.token_hex(16)
        return {
            "x-tif-paasid": self.options["paasid"],
            "x-tif-timestamp": timestamp,
            "x-tif-nonce": nonce,
            "x-tif-signature": tif_signature(timestamp, self.secret or "", nonce),
        }
