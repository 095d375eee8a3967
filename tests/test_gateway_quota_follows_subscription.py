"""A subscription's quota is the subscription's: a new code never starts a fresh day, and two
installations sharing one Redis never count each other's calls. Anything URL-shaped that no
route has is recorded as ``-``, never as the caller's text."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import redis

from exchange.gateway import codes
from tests.test_gateway_app import REDIS_URL, RESOURCE, admin_of, served


def test_a_rotated_or_reissued_code_continues_the_days_count(tmp_path: Path) -> None:
    with served(tmp_path, daily=3) as gw:
        assert [gw.call().status_code for _ in range(3)] == [200, 200, 200]
        sid = gw.issued.subscription_id

        rotated = codes.rotate(gw.ws, admin_of(gw.ws), sid, dt.timedelta(hours=1))
        assert gw.call(code=rotated.code).status_code == 429
        assert gw.call().status_code == 429  # the old code, in its grace: the same count
        again = codes.issue(gw.ws, admin_of(gw.ws), sid)
        assert gw.call(code=again.code).status_code == 429


def test_the_counters_are_keyed_by_the_installation_and_the_subscription(tmp_path: Path) -> None:
    with served(tmp_path) as gw:
        assert gw.call().status_code == 200
        r = redis.Redis.from_url(REDIS_URL)
        try:
            keys = {k.decode() for k in r.scan_iter(f"{gw.namespace}:*:q:*:d:*")}
        finally:
            r.close()
    sid = gw.issued.subscription_id
    assert [k.rsplit(":d:", 1)[0] for k in keys] == [
        f"{gw.namespace}:{gw.ws.installation_id}:q:s{sid}"
    ]


def test_a_url_no_route_has_is_recorded_without_its_text(tmp_path: Path) -> None:
    with served(tmp_path) as gw:
        assert gw.call(path="/%E4%B8%AD%00x/y").status_code == 404
        assert gw.call(path=f"/{RESOURCE}/%00op").status_code == 404
        rows = gw.usage()
    assert [(r.resource_code, r.operation) for r in rows][-2:] == [
        ("-", "-"),
        (RESOURCE, "-"),
    ]
