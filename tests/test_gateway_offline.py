"""An api resource taken offline with notice stops being served on its effective date, and not
before: the gateway answers 410 ``resource_offline``, naming the date and the replacement to
apply for, and records the call as refused. The gateway's code cache judges a snapshot for the
day it was loaded on, so the notice takes effect at 00:00 Asia/Shanghai however long the
cache trusts what it loaded."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from exchange.gateway import codes
from exchange.gateway.codes import CodeCache, Refused
from exchange.gateway.keys import KEY_FILE_ENV, gateway_key
from exchange.kernel.clock import SHANGHAI, today
from exchange.kernel.settings import Settings
from exchange.workflow.notices_models import OFFLINE, ResourceNotice
from exchange.workspace import Workspace
from tests.test_gateway_app import (
    OTHER,
    RESOURCE,
    Served,
    _redis_or_skip,
    admin_of,
    served,
    subscribe,
    write_catalog,
)

EFFECTIVE = dt.date(2026, 12, 9)


def take_offline(
    ws: Workspace, on: dt.date, replacement: str | None = OTHER, code: str = RESOURCE
) -> int:
    """The offline notice of ``code`` as ``exchange resource offline`` records it."""
    with ws.store.session() as s:
        notice = ResourceNotice(
            resource_code=code, kind=OFFLINE, reason="业务系统迁移至省平台",
            replacement=replacement, effective_on=on, earliest_on=on, announced_by="admin",
        )  # fmt: skip
        s.add(notice)
        s.flush()
        return notice.id


def move_date(ws: Workspace, notice_id: int, on: dt.date) -> None:
    with ws.store.session() as s:
        notice = s.get(ResourceNotice, notice_id)
        assert notice is not None
        notice.effective_on = on


def shanghai(day: dt.date, hour: int, minute: int = 0, second: int = 0) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=SHANGHAI)


# -- the code cache: the date decides ---------------------------------------------------------


@pytest.fixture
def city(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    monkeypatch.delenv(KEY_FILE_ENV, raising=False)
    catalog = write_catalog(tmp_path, "http://127.0.0.1:9")
    settings = Settings(home=tmp_path, db_url=f"sqlite:///{tmp_path / 'exchange.db'}")
    with Workspace.open(catalog, settings) as ws:
        yield ws


def test_the_day_before_it_is_served_and_from_00_00_of_its_date_refused(city: Workspace) -> None:
    issued = subscribe(city)
    notice_id = take_offline(city, EFFECTIVE)
    # A cache that trusts what it loaded for a minute: the new day reloads all the same.
    cache = CodeCache(city.store, gateway_key(city.settings, city.store), ttl_s=60)
    before = shanghai(EFFECTIVE - dt.timedelta(days=1), 23, 59, 59)
    grant = cache.check(issued.code, RESOURCE, before)
    assert grant.subscription_id == issued.subscription_id
    with pytest.raises(Refused) as refused:
        cache.check(issued.code, RESOURCE, shanghai(EFFECTIVE, 0, 0, 0))
    assert (refused.value.status, refused.value.reason) == (410, "resource_offline")
    assert str(refused.value) == (
        f"resource {RESOURCE} is offline since 2026-12-09 (notice {notice_id}); "
        f"apply for its replacement {OTHER}"
    )
    # whose call it was, as the usage row records it
    assert refused.value.subscription_id == issued.subscription_id
    assert refused.value.department_code == "TAX"
    with pytest.raises(Refused):
        cache.check(issued.code, RESOURCE, shanghai(EFFECTIVE + dt.timedelta(days=3), 12))
    assert cache.loads == 3  # one snapshot a day


def test_without_a_replacement_the_refusal_says_so(city: Workspace) -> None:
    issued = subscribe(city)
    notice_id = take_offline(city, EFFECTIVE, replacement=None)
    cache = CodeCache(city.store, gateway_key(city.settings, city.store), ttl_s=0)
    with pytest.raises(Refused) as refused:
        cache.check(issued.code, RESOURCE, shanghai(EFFECTIVE, 9))
    assert refused.value.status == 410
    assert str(refused.value).endswith(
        f"since 2026-12-09 (notice {notice_id}); no replacement is named"
    )


def test_another_resources_notice_takes_nothing_offline(city: Workspace) -> None:
    issued = subscribe(city)
    take_offline(city, EFFECTIVE, replacement=None, code=OTHER)
    cache = CodeCache(city.store, gateway_key(city.settings, city.store), ttl_s=0)
    assert cache.check(issued.code, RESOURCE, shanghai(EFFECTIVE, 9)).code_id == issued.code_id


def test_offline_comes_before_the_subscriptions_state_but_after_the_code(
    city: Workspace,
) -> None:
    issued = subscribe(city)
    take_offline(city, EFFECTIVE)
    cache = CodeCache(city.store, gateway_key(city.settings, city.store), ttl_s=0)
    after = shanghai(dt.date(2027, 12, 1), 9)  # the subscription's usage period is over too
    with pytest.raises(Refused) as refused:
        cache.check(issued.code, RESOURCE, after)
    assert refused.value.reason == "resource_offline"
    with pytest.raises(Refused) as refused:
        cache.check(issued.code, OTHER, after)  # this code never serves the replacement
    assert (refused.value.status, refused.value.reason) == (403, "not_deliverable")
    codes.revoke(city, admin_of(city), issued.subscription_id, "leaked")
    with pytest.raises(Refused) as refused:
        cache.check(issued.code, RESOURCE, after)
    assert (refused.value.status, refused.value.reason) == (401, "revoked")


# -- through the gateway ----------------------------------------------------------------------


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Served]:
    _redis_or_skip()
    with served(tmp_path) as it:
        yield it


def test_the_gateway_serves_it_until_its_date_then_answers_410(gw: Served) -> None:
    notice_id = take_offline(gw.ws, today() + dt.timedelta(days=1))
    assert gw.call().status_code == 200  # the day before: served as usual
    move_date(gw.ws, notice_id, today())  # its date has come
    answer = gw.call()
    assert answer.status_code == 410, answer.text
    body = answer.json()
    assert set(body) == {"error", "message"} and body["error"] == "resource_offline"
    assert f"offline since {today()}" in body["message"]
    assert f"apply for its replacement {OTHER}" in body["message"]
    assert "x-ratelimit-limit" not in answer.headers  # refused before the quota: not counted
    assert len(gw.upstream.requests()) == 1  # only the call of the day before went upstream
    rows = gw.usage()
    assert [(r.status, r.outcome) for r in rows] == [(200, "ok"), (410, "refused")]
    assert rows[1].subscription_id == gw.issued.subscription_id
    assert rows[1].department_code == "TAX"
    events = gw.events()
    assert [e.payload["call_id"] for e in events] == [r.call_id for r in rows]
