"""A minimal signing proxy (aiohttp.web on uvloop): the calibration target of bench/gateway.py.

    python -m bench.passthrough --port P --upstream http://127.0.0.1:U [--workers 1]

``GET /{resource}/{operation}?uscc=X`` becomes ``GET {upstream}/ent/X`` with the tif scheme's
headers (signed with ``$PROV_TIF_TOKEN``) through one pooled aiohttp client, and the upstream's
body is answered as it came. No code check, no quota, no filtering, no usage record: what is
left is what any Python proxy on this stack costs, so the gateway's figures can be read as
this floor plus what the gateway does on top.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import secrets
import socket
import time

import aiohttp
import uvloop
from aiohttp import web


def tif_headers(paasid: str, token: str) -> dict[str, str]:
    ts = str(int(time.time()))
    nonce = secrets.token_hex(8)
    signature = hashlib.sha256(f"{ts}{token}{nonce}{ts}".encode()).hexdigest().upper()
    return {
        "x-tif-paasid": paasid,
        "x-tif-timestamp": ts,
        "x-tif-nonce": nonce,
        "x-tif-signature": signature,
    }


def make_app(upstream: str, token: str) -> web.Application:
    client: dict[str, aiohttp.ClientSession] = {}

    async def start(app: web.Application) -> None:
        connector = aiohttp.TCPConnector(limit=200, ttl_dns_cache=None)
        client["http"] = aiohttp.ClientSession(
            base_url=upstream, connector=connector, timeout=aiohttp.ClientTimeout(total=10)
        )

    async def stop(app: web.Application) -> None:
        await client["http"].close()

    async def proxy(request: web.Request) -> web.Response:
        uscc = request.query.get("uscc", "")
        headers = tif_headers("city-exchange", token)
        try:
            async with client["http"].get(f"/ent/{uscc}", headers=headers) as r:
                body = await r.read()
                status, content_type = r.status, r.content_type
        except (aiohttp.ClientError, TimeoutError):
            return web.json_response({"error": "upstream unavailable"}, status=502)
        return web.Response(status=status, body=body, content_type=content_type)

    app = web.Application()
    app.router.add_get("/{resource}/{operation}", proxy)
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    return app


def serve(sock: socket.socket, upstream: str, token: str) -> None:
    uvloop.install()
    web.run_app(make_app(upstream, token), sock=sock, access_log=None, print=None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    token = os.environ.get("PROV_TIF_TOKEN", "")
    # one listening socket shared by the workers (forked after it is bound)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(1024)
    if args.workers == 1:
        serve(sock, args.upstream, token)
        return
    ctx = multiprocessing.get_context("fork")
    procs = [
        ctx.Process(target=serve, args=(sock, args.upstream, token)) for _ in range(args.workers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()


if __name__ == "__main__":
    main()
