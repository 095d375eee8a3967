"""Authorization codes: issued once and kept only as a keyed digest, rotated with a grace
period, revoked, listed, and checked on each gateway call in the order the gateway answers
(401 for the code, 403 for the subscription), with a cache whose time bounds how long a
revocation takes to reach a gateway process."""

from __future__ import annotations

import datetime as dt
import os
import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner, Result

from exchange.cli.app import app
from exchange.gateway import codes
from exchange.gateway.codes import CodeCache, Refused
from exchange.gateway.keys import KEY_FILE_ENV, gateway_key
from exchange.gateway.models import ApiCode
from exchange.kernel.clock import SHANGHAI
from exchange.kernel.errors import BadInput, Forbidden, IllegalTransition
from exchange.kernel.settings import Settings
from exchange.store.models import AuditEvent, Subscription
from exchange.workflow import states as st
from exchange.workflow.models import DepartmentSuspension, SubscriptionTransition
from exchange.workflow.users import Principal, create_user, principal_of
from exchange.workspace import Workspace

CATALOG = """\
version: 1
departments: {CITY: 市政务服务和大数据管理局, TAX: 市税务局, HRSS: 市人社局, SCJG: 市场监管局}
nodes:
  - name: prov_gw
    kind: http
    title: 河南省政务数据共享平台接口网关
    department: CITY
    base_url: https://prov.example/api
    auth: {scheme: none}
  - {name: market_fe, kind: sqlite, department: SCJG, connection: {path: market.db}}
resources:
  - code: API-ENT
    name: 企业基本信息查询
    kind: api
    provider: prov_gw
    share: conditional
    origin: {level: provincial, platform: 河南省政务数据共享平台, upstream_code: "41000000/12"}
    operations:
      - {name: by_uscc, method: GET, path: "/ent/{uscc}", params: [{name: uscc, in: path}]}
    fields:
      - {name: uscc, type: varchar, path: data.uscc}
      - {name: ent_name, type: varchar, path: data.name}
      - {name: legal_person, type: varchar, path: data.legal_person}
  - code: API-TAX
    name: 纳税信用查询
    kind: api
    provider: prov_gw
    share: unconditional
    operations:
      - {name: by_uscc, method: GET, path: "/tax/{uscc}", params: [{name: uscc, in: path}]}
    fields:
      - {name: uscc, type: varchar, path: data.uscc}
  - code: TABLE
    name: 企业登记信息
    kind: table
    provider: market_fe
    share: conditional
    source: {table: enterprise}
    primary_key: [id]
    fields:
      - {name: id, type: bigint, nullable: false}
"""
NOW = dt.datetime(2026, 12, 1, 10, 0)  # naive UTC: 18:00 in Shanghai
RESOURCE = "API-ENT"
GRANTED = ["uscc", "ent_name"]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def city(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Workspace, dict[str, Principal]]]:
    """An api resource of the city's http node, its people (admin; requesters of TAX and HRSS;
    the provider CITY), on a SQLite store and on PostgreSQL."""
    monkeypatch.delenv(KEY_FILE_ENV, raising=False)
    url = (
        request.getfixturevalue("pg_database")
        if request.param == "postgresql"
        else f"sqlite:///{tmp_path / 'exchange.db'}"
    )
    (tmp_path / "catalog.yaml").write_text(CATALOG, encoding="utf-8")
    ws = Workspace.open(tmp_path / "catalog.yaml", Settings(home=tmp_path, db_url=url))
    with ws.store.session() as s:
        create_user(s, "admin", "admin", None, "test")
        create_user(s, "city", "provider", "CITY", "test")
        create_user(s, "tax", "requester", "TAX", "test")
        create_user(s, "hrss", "requester", "HRSS", "test")
        people = {n: principal_of(s, n) for n in ("admin", "city", "tax", "hrss")}
    yield ws, people
    ws.close()


def subscribe(
    ws: Workspace,
    resource: str = RESOURCE,
    department: str = "TAX",
    status: str = st.IMPLEMENTATION,
    valid_until: dt.date = dt.date(2027, 6, 30),
) -> int:
    """An api subscription as the workflow leaves it (no node, no target table)."""
    with ws.store.session() as s:
        sub = Subscription(
            resource_code=resource,
            subscriber_node="",
            target_table="",
            fields=GRANTED,
            requested_fields=GRANTED,
            status=status,
            valid_until=valid_until,
            share="conditional",
            department_code=department,
            department_name=ws.catalog.department_name(department),
            applied_at=NOW - dt.timedelta(days=3),
            state_changed_at=NOW - dt.timedelta(days=1),
        )
        s.add(sub)
        s.flush()
        return sub.id


def status_of(ws: Workspace, subscription_id: int) -> str:
    with ws.store.session() as s:
        return s.get_one(Subscription, subscription_id).status


def set_status(ws: Workspace, subscription_id: int, status: str) -> None:
    with ws.store.session() as s:
        s.get_one(Subscription, subscription_id).status = status


def cache(ws: Workspace, ttl_s: float = 0.0) -> CodeCache:
    return CodeCache(ws.store, gateway_key(ws.settings), ttl_s=ttl_s)


def refusal(c: CodeCache, code: str, at: dt.datetime = NOW, resource: str = RESOURCE) -> Refused:
    with pytest.raises(Refused) as caught:
        c.check(code, resource, at)
    return caught.value


# -- issuing ----------------------------------------------------------------------------------


def test_the_first_code_delivers_the_subscription_and_only_its_digest_is_kept(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = city
    sid = subscribe(ws)
    issued = codes.issue(ws, people["tax"], sid, NOW)
    assert re.fullmatch(r"cx_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", issued.code)
    assert issued.prefix == issued.code[:15] and issued.subscription_id == sid
    assert issued.code not in repr(issued)
    assert status_of(ws, sid) == st.SIGN_OFF
    with ws.store.session() as s:
        row = s.get_one(ApiCode, issued.code_id)
        assert row.prefix == issued.prefix and row.created_by == "tax"
        assert bytes(row.digest) == codes.digest(gateway_key(ws.settings), issued.code)
        history = s.execute(
            sa.select(SubscriptionTransition.action, SubscriptionTransition.actor).where(
                SubscriptionTransition.subscription_id == sid
            )
        ).all()
        assert [tuple(h) for h in history] == [("deliver", "engine")]
        events = list(s.execute(sa.select(AuditEvent).order_by(AuditEvent.id)).scalars())
    issued_events = [e for e in events if e.kind == "api.code_issued"]
    assert len(issued_events) == 1 and issued_events[0].payload["prefix"] == issued.prefix
    assert issued_events[0].actor == "tax"
    secret = issued.code.removeprefix(issued.prefix + "_")
    for e in events:  # the code (nor its secret part) is in no audit event
        assert secret not in str(e.payload) and secret not in e.subject


def test_a_code_grants_the_subscriptions_fields_of_its_resource(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = city
    sid = subscribe(ws)
    issued = codes.issue(ws, people["admin"], sid, NOW)
    grant = cache(ws).check(issued.code, RESOURCE, NOW)
    assert grant == codes.Grant(
        code_id=issued.code_id,
        subscription_id=sid,
        resource_code=RESOURCE,
        department_code="TAX",
        fields=("uscc", "ent_name"),
        valid_until=dt.date(2027, 6, 30),
        lowered=False,
    )
    aware = NOW.replace(tzinfo=dt.UTC).astimezone(SHANGHAI)  # an aware time works the same
    assert cache(ws).check(issued.code, RESOURCE, aware) == grant


def test_only_the_departments_requesters_and_admins_issue_its_codes(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = city
    sid = subscribe(ws)
    for who in ("hrss", "city"):
        with pytest.raises(Forbidden, match=rf"may not issue .* subscription {sid}: .* TAX"):
            codes.issue(ws, people[who], sid, NOW)
    assert status_of(ws, sid) == st.IMPLEMENTATION
    with ws.store.session() as s:
        assert s.execute(sa.select(sa.func.count()).select_from(ApiCode)).scalar() == 0


def test_codes_are_for_api_subscriptions_in_implementation_or_delivered(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = city
    table_sub = subscribe(ws, resource="TABLE")
    with pytest.raises(BadInput, match="table resource TABLE: authorization codes are for api"):
        codes.issue(ws, people["admin"], table_sub, NOW)
    for state in (st.UNDER_REVIEW, st.SUSPENDED, st.EXPIRED, st.REMOVED, st.WITHDRAWN):
        sid = subscribe(ws, status=state)
        with pytest.raises(IllegalTransition, match=f"is {state}: a code is issued only in"):
            codes.issue(ws, people["admin"], sid, NOW)
    past = subscribe(ws, status=st.CLOSED, valid_until=dt.date(2026, 11, 30))
    with pytest.raises(IllegalTransition, match="usage period ended on 2026-11-30"):
        codes.issue(ws, people["admin"], past, NOW)


def test_issuing_again_replaces_the_working_code_at_once(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = city
    sid = subscribe(ws)
    first = codes.issue(ws, people["tax"], sid, NOW)
    second = codes.issue(ws, people["tax"], sid, NOW + dt.timedelta(minutes=1))
    assert status_of(ws, sid) == st.SIGN_OFF  # delivered once, by the first
    c = cache(ws)
    later = NOW + dt.timedelta(minutes=2)
    assert refusal(c, first.code, later).reason == "rotated_out"
    assert c.check(second.code, RESOURCE, later).code_id == second.code_id


# -- rotating and revoking --------------------------------------------------------------------


def test_a_rotated_out_code_works_until_its_grace_ends(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = city
    sid = subscribe(ws)
    old = codes.issue(ws, people["tax"], sid, NOW)
    new = codes.rotate(ws, people["tax"], sid, dt.timedelta(hours=24), NOW)
    c = cache(ws)
    in_grace = NOW + dt.timedelta(hours=23, minutes=59)
    assert c.check(old.code, RESOURCE, in_grace).code_id == old.code_id
    assert c.check(new.code, RESOURCE, in_grace).code_id == new.code_id
    refused = refusal(c, old.code, NOW + dt.timedelta(hours=24))
    assert (refused.status, refused.reason) == (401, "rotated_out")
    assert old.prefix in str(refused) and old.code not in str(refused)
    with ws.store.session() as s:
        row = s.get_one(ApiCode, old.code_id)
        assert row.replaced_by == new.code_id
        assert row.grace_until == NOW + dt.timedelta(hours=24)


def test_rotating_again_without_grace_cuts_the_older_codes_grace(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = city
    sid = subscribe(ws)
    first = codes.issue(ws, people["tax"], sid, NOW)
    second = codes.rotate(ws, people["tax"], sid, dt.timedelta(days=7), NOW)
    third = codes.rotate(ws, people["admin"], sid, dt.timedelta(0), NOW + dt.timedelta(hours=1))
    c = cache(ws)
    at = NOW + dt.timedelta(hours=1, seconds=1)
    assert refusal(c, first.code, at).reason == "rotated_out"
    assert refusal(c, second.code, at).reason == "rotated_out"
    assert c.check(third.code, RESOURCE, at).code_id == third.code_id
    with pytest.raises(BadInput, match="negative"):
        codes.rotate(ws, people["tax"], sid, dt.timedelta(hours=-1), NOW)


def test_a_grace_longer_than_seven_days_is_refused_and_the_old_codes_stay_as_they_were(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = city
    sid = subscribe(ws)
    old = codes.issue(ws, people["tax"], sid, NOW)
    with pytest.raises(BadInput, match="longer than 7 days"):
        codes.rotate(ws, people["tax"], sid, dt.timedelta(days=7, seconds=1), NOW)
    assert cache(ws).check(old.code, RESOURCE, NOW + dt.timedelta(days=30)).code_id == old.code_id
    with ws.store.session() as s:
        assert s.get_one(ApiCode, old.code_id).replaced_by is None  # nothing was rotated

    week = codes.rotate(ws, people["tax"], sid, codes.MAX_GRACE, NOW)  # the most there is
    c = cache(ws)
    assert c.check(old.code, RESOURCE, NOW + dt.timedelta(days=6, hours=23)).code_id == old.code_id
    assert refusal(c, old.code, NOW + dt.timedelta(days=7)).reason == "rotated_out"
    assert c.check(week.code, RESOURCE, NOW + dt.timedelta(days=7)).code_id == week.code_id


def test_revoking_stops_every_working_code_of_the_subscription(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = city
    sid = subscribe(ws)
    old = codes.issue(ws, people["tax"], sid, NOW)
    new = codes.rotate(ws, people["tax"], sid, dt.timedelta(hours=24), NOW)
    with pytest.raises(BadInput, match="needs a reason"):
        codes.revoke(ws, people["tax"], sid, "  ", NOW)
    with pytest.raises(Forbidden):
        codes.revoke(ws, people["hrss"], sid, "not ours", NOW)
    assert codes.revoke(ws, people["tax"], sid, "leaked in a log", NOW) == 2
    assert codes.revoke(ws, people["tax"], sid, "again", NOW) == 0
    c = cache(ws)
    for issued in (old, new):
        refused = refusal(c, issued.code)
        assert (refused.status, refused.reason) == (401, "revoked")
        assert issued.prefix in str(refused) and issued.code not in str(refused)
    with ws.store.session() as s:
        kinds = s.execute(
            sa.select(AuditEvent.kind, AuditEvent.payload).order_by(AuditEvent.id)
        ).all()
    revoked = [p for k, p in kinds if k == "api.code_revoked"]
    assert revoked[0]["prefixes"] == [old.prefix, new.prefix]
    assert revoked[0]["reason"] == "leaked in a log"


def test_after_an_admins_revocation_only_an_admin_issues_a_code_again(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = city
    sid = subscribe(ws)
    first = codes.issue(ws, people["tax"], sid, NOW)
    assert codes.revoke(ws, people["admin"], sid, "leaked on a public repo", NOW) == 1
    later = NOW + dt.timedelta(minutes=1)
    stopped = rf"subscription {sid}: platform admin admin revoked .* only a platform admin may"
    with pytest.raises(Forbidden, match=rf"may not issue an .*{stopped} issue a code"):
        codes.issue(ws, people["tax"], sid, later)
    with pytest.raises(Forbidden, match=rf"may not rotate an .*{stopped}"):
        codes.rotate(ws, people["tax"], sid, dt.timedelta(hours=1), later)
    assert refusal(cache(ws), first.code, later).reason == "revoked"
    with ws.store.session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(ApiCode)) == 1  # none made
    again = codes.issue(ws, people["admin"], sid, later)
    assert cache(ws).check(again.code, RESOURCE, later).code_id == again.code_id
    # Once an admin has issued again, the department manages its codes as before.
    rotated = codes.rotate(ws, people["tax"], sid, dt.timedelta(0), later)
    assert cache(ws).check(rotated.code, RESOURCE, later).code_id == rotated.code_id


def test_a_requester_may_undo_its_own_revocation_but_not_an_admins_made_after_it(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = city
    sid = subscribe(ws)
    codes.issue(ws, people["tax"], sid, NOW)
    codes.revoke(ws, people["tax"], sid, "rotating our deployment", NOW)
    mine = codes.issue(ws, people["tax"], sid, NOW)
    assert cache(ws).check(mine.code, RESOURCE, NOW).code_id == mine.code_id
    codes.revoke(ws, people["tax"], sid, "moved to a new server", NOW)
    # The admin's revocation finds nothing working, and stops the department all the same.
    assert codes.revoke(ws, people["admin"], sid, "department under review", NOW) == 0
    with pytest.raises(Forbidden, match="only a platform admin may issue"):
        codes.issue(ws, people["tax"], sid, NOW)
    (view,) = [
        v for v in codes.list_codes(ws, people["admin"], sid, NOW) if v.code_id == mine.code_id
    ]
    assert (view.state, view.revoked_by, view.revoke_reason) == (
        "revoked",
        "admin",
        "department under review",
    )
    with ws.store.session() as s:
        payloads = s.scalars(
            sa.select(AuditEvent.payload)
            .where(AuditEvent.kind == "api.code_revoked")
            .order_by(AuditEvent.id)
        ).all()
    assert [p["by_admin"] for p in payloads] == [False, False, True]


def test_a_listing_shows_prefixes_and_states_to_those_who_may_see_them(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = city
    tax_sub, hrss_sub = subscribe(ws), subscribe(ws, department="HRSS")
    a = codes.issue(ws, people["tax"], tax_sub, NOW)
    b = codes.rotate(ws, people["tax"], tax_sub, dt.timedelta(hours=1), NOW)
    c = codes.issue(ws, people["hrss"], hrss_sub, NOW)
    codes.revoke(ws, people["hrss"], hrss_sub, "moved to another system", NOW)
    views = codes.list_codes(ws, people["admin"], now=NOW)
    assert [(v.prefix, v.state) for v in views] == [
        (a.prefix, "grace"),
        (b.prefix, "live"),
        (c.prefix, "revoked"),
    ]
    later = codes.list_codes(ws, people["admin"], tax_sub, NOW + dt.timedelta(hours=2))
    assert [v.state for v in later] == ["rotated_out", "live"]
    assert [v.prefix for v in codes.list_codes(ws, people["tax"], now=NOW)] == [a.prefix, b.prefix]
    assert [v.prefix for v in codes.list_codes(ws, people["city"], now=NOW)] == [
        a.prefix,
        b.prefix,
        c.prefix,
    ]  # the provider of the resource sees the codes of its subscriptions
    with pytest.raises(Forbidden):
        codes.list_codes(ws, people["hrss"], tax_sub, NOW)
    shown = repr(views)
    assert "digest" not in shown and all(i.code not in shown for i in (a, b, c))


# -- checking a call, refusal by refusal ------------------------------------------------------


def test_a_garbled_unknown_or_wrong_code_is_refused_as_unknown(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = city
    issued = codes.issue(ws, people["tax"], subscribe(ws), NOW)
    c = cache(ws)
    wrong_secret = issued.prefix + "_" + "A" * 43
    unknown_prefix = "cx_0123456789ab_" + issued.code[16:]
    for code in ("", "Bearer", "cx_", issued.code + "x", issued.code[:-1], issued.prefix,
                 issued.code.upper(), unknown_prefix, wrong_secret):  # fmt: skip
        refused = refusal(c, code)
        assert (refused.status, refused.reason) == (401, "unknown"), code
        assert issued.code not in str(refused) and (not code or code not in str(refused))


def test_a_string_not_of_the_code_format_is_refused_without_reading_the_store(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = city
    issued = codes.issue(ws, people["tax"], subscribe(ws), NOW)
    c = cache(ws)
    garbled = ["", "x" * 5000, issued.code + "\n", issued.code.replace("cx_", "cy_"),
               "cx_0123456789AB_" + issued.code[16:], issued.prefix + "_" + "!" * 43]  # fmt: skip
    for code in garbled:
        assert refusal(c, code).reason == "unknown"
    assert c.loads == 0


def test_a_flood_of_unknown_prefixes_never_pushes_out_the_codes_being_served(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = city
    served = [codes.issue(ws, people["tax"], subscribe(ws), NOW) for _ in range(3)]
    c = CodeCache(ws.store, gateway_key(ws.settings), ttl_s=600, max_entries=2, max_unknown=3)
    for issued in served[:2]:
        c.check(issued.code, RESOURCE, NOW)
    made_up = [f"cx_{i:012x}_{served[0].code[16:]}" for i in range(50)]
    for code in made_up:
        assert refusal(c, code).reason == "unknown"
    assert c.loads == 2 + 50
    for issued in served[:2]:  # still in memory: no store read
        c.check(issued.code, RESOURCE, NOW)
    assert c.loads == 52
    refusal(c, made_up[-1])  # the last three unknown ones are remembered...
    assert c.loads == 52
    refusal(c, made_up[0])  # ...the first ones were pushed out, one at a time
    assert c.loads == 53
    # Among codes, the least recently checked goes first, not all of them.
    c.check(served[0].code, RESOURCE, NOW)
    c.check(served[2].code, RESOURCE, NOW)  # a third code: served[1] goes
    assert c.loads == 54
    c.check(served[0].code, RESOURCE, NOW)
    assert c.loads == 54
    c.check(served[1].code, RESOURCE, NOW)
    assert c.loads == 55


def test_a_suspended_subscription_is_refused_as_suspended(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = city
    sid = subscribe(ws)
    issued = codes.issue(ws, people["tax"], sid, NOW)
    set_status(ws, sid, st.SUSPENDED)
    refused = refusal(cache(ws), issued.code)
    assert (refused.status, refused.reason) == (403, "suspended")
    assert f"subscription {sid} is suspended" in str(refused)


def test_an_expired_subscription_or_usage_period_is_refused_as_expired(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = city
    sid = subscribe(ws, valid_until=dt.date(2026, 12, 1))
    issued = codes.issue(ws, people["tax"], sid, NOW)
    c = cache(ws)
    last_minute = dt.datetime(2026, 12, 1, 23, 59, 59, tzinfo=SHANGHAI)
    assert c.check(issued.code, RESOURCE, last_minute).valid_until == dt.date(2026, 12, 1)
    next_day = dt.datetime(2026, 12, 2, 0, 0, 0, tzinfo=SHANGHAI)  # 16:00 UTC on the 1st
    refused = refusal(c, issued.code, next_day)
    assert (refused.status, refused.reason) == (403, "expired")
    assert "ended on 2026-12-01" in str(refused)
    set_status(ws, sid, st.EXPIRED)
    assert refusal(c, issued.code, last_minute).reason == "expired"


def test_a_removed_subscription_or_another_resource_is_not_deliverable(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = city
    sid = subscribe(ws)
    issued = codes.issue(ws, people["tax"], sid, NOW)
    c = cache(ws)
    refused = refusal(c, issued.code, resource="API-TAX")
    assert (refused.status, refused.reason) == (403, "not_deliverable")
    assert "not for resource API-TAX" in str(refused)
    set_status(ws, sid, st.SUSPENDED)  # whatever its state, never another resource's
    assert refusal(c, issued.code, resource="API-TAX").reason == "not_deliverable"
    for state in (st.REMOVED, st.WITHDRAWN, st.APPLIED):
        set_status(ws, sid, state)
        refused = refusal(c, issued.code)
        assert (refused.status, refused.reason) == (403, "not_deliverable")


def test_a_revoked_code_is_refused_before_its_subscription_is_looked_at(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = city
    sid = subscribe(ws)
    issued = codes.issue(ws, people["tax"], sid, NOW)
    codes.revoke(ws, people["admin"], sid, "audit finding", NOW)
    set_status(ws, sid, st.SUSPENDED)
    assert refusal(cache(ws), issued.code).reason == "revoked"


def test_a_refusal_of_a_known_code_names_whose_it_is_an_unknown_one_nobodys(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = city
    sid = subscribe(ws)
    first = codes.issue(ws, people["tax"], sid, NOW)
    second = codes.rotate(ws, people["tax"], sid, dt.timedelta(0), NOW)
    c = cache(ws)
    whose = {
        "rotated_out": refusal(c, first.code),
        "not_deliverable": refusal(c, second.code, resource="API-TAX"),  # another resource
    }
    set_status(ws, sid, st.SUSPENDED)
    whose["suspended"] = refusal(c, second.code)
    set_status(ws, sid, st.REMOVED)
    whose["removed"] = refusal(c, second.code)
    set_status(ws, sid, st.EXPIRED)
    whose["expired"] = refusal(c, second.code)
    set_status(ws, sid, st.SIGN_OFF)
    codes.revoke(ws, people["tax"], sid, "leaked", NOW)
    whose["revoked"] = refusal(c, second.code)

    assert {k: v.reason for k, v in whose.items()} == {
        "rotated_out": "rotated_out", "not_deliverable": "not_deliverable",
        "suspended": "suspended", "removed": "not_deliverable", "expired": "expired",
        "revoked": "revoked",
    }  # fmt: skip
    assert {(v.code_id, v.subscription_id, v.department_code) for k, v in whose.items()} == {
        (first.code_id, sid, "TAX") if k == "rotated_out" else (second.code_id, sid, "TAX")
        for k in whose
    }
    # unknown, a wrong secret under a known prefix included: nobody's, it is no one's code
    for code in ("", "cx_0123456789ab_" + second.code[16:], second.prefix + "_" + "A" * 43):
        refused = refusal(c, code)
        assert refused.reason == "unknown"
        assert (refused.code_id, refused.subscription_id, refused.department_code) == (
            None, None, None,
        )  # fmt: skip


def test_a_suspended_department_is_served_on_the_lowered_quota(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = city
    sid = subscribe(ws)
    issued = codes.issue(ws, people["tax"], sid, NOW)
    overdue = subscribe(ws, status=st.CLOSED)
    with ws.store.session() as s:
        s.add(
            DepartmentSuspension(
                department_code="TAX",
                subscription_id=overdue,
                reason="effectiveness report overdue",
                since=NOW,
            )
        )
    assert cache(ws).check(issued.code, RESOURCE, NOW).lowered is True


def test_a_revocation_reaches_a_gateway_process_within_the_cache_time(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = city
    sid = subscribe(ws)
    issued = codes.issue(ws, people["tax"], sid, NOW)
    c = cache(ws, ttl_s=0.3)
    assert c.check(issued.code, RESOURCE, NOW).code_id == issued.code_id
    loaded = time.monotonic()
    codes.revoke(ws, people["tax"], sid, "leaked", NOW)
    revoked = time.monotonic()
    while True:
        try:
            c.check(issued.code, RESOURCE, NOW)
        except Refused as exc:
            assert exc.reason == "revoked"
            break
        assert time.monotonic() - revoked < 0.3 + 0.2, "still admitted after the cache time"
        time.sleep(0.01)
    assert time.monotonic() - loaded > 0.25  # served from memory meanwhile


# -- the gateway key --------------------------------------------------------------------------


def test_the_gateway_key_is_made_once_0600_and_read_by_every_process(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", db_url="sqlite://")
    key = gateway_key(settings)
    path = tmp_path / "home" / "gateway.key"
    assert len(key) == 32 and path.read_bytes() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "home").stat().st_mode) == 0o700
    assert gateway_key(settings) == key
    assert [p.name for p in (tmp_path / "home").iterdir()] == ["gateway.key"]


def test_a_gateway_key_others_may_read_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "keys" / "gw.key"
    monkeypatch.setenv(KEY_FILE_ENV, str(path))
    settings = Settings(home=tmp_path / "home", db_url="sqlite://")
    key = gateway_key(settings)
    assert path.read_bytes() == key and not (tmp_path / "home" / "gateway.key").exists()
    os.chmod(path, 0o640)
    with pytest.raises(BadInput, match=r"mode 0640: group or others may read .* \(chmod 600"):
        gateway_key(settings)
    os.chmod(path, 0o600)
    path.write_bytes(b"short")
    with pytest.raises(BadInput, match="holds 5 bytes, not 32"):
        gateway_key(settings)


def test_a_lost_gateway_key_is_refused_once_codes_were_issued(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = city
    codes.issue(ws, people["tax"], subscribe(ws), NOW)
    (ws.settings.home / "gateway.key").unlink()
    with pytest.raises(BadInput, match="missing but authorization codes were issued"):
        gateway_key(ws.settings, ws.store)
    with pytest.raises(BadInput, match="missing but authorization codes were issued"):
        codes.issue(ws, people["tax"], subscribe(ws), NOW)


# -- the command line -------------------------------------------------------------------------


def cli(ws: Workspace, *args: str) -> Result:
    env = {
        "EXCHANGE_HOME": str(ws.settings.home),
        "EXCHANGE_CATALOG": ws.catalog.path,
        "EXCHANGE_DB_URL": ws.settings.db_url,
        "EXCHANGE_REDIS_NAMESPACE": "test-code-cli",
        "COLUMNS": "250",
    }
    return CliRunner().invoke(app, list(args), env=env)


def test_the_cli_issues_rotates_lists_and_revokes_codes(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, _ = city
    sid = subscribe(ws, valid_until=dt.date(2099, 1, 1))
    done = cli(ws, "code", "issue", str(sid), "--as", "tax")
    assert done.exit_code == 0, done.output
    code, note = done.output.splitlines()
    assert re.fullmatch(r"cx_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", code)
    assert f"authorization code {code[:15]}" in note and "shown this once" in note
    assert status_of(ws, sid) == st.SIGN_OFF

    rotated = cli(ws, "code", "rotate", str(sid), "--grace", "24h", "--as", "tax")
    assert rotated.exit_code == 0, rotated.output
    new = rotated.output.splitlines()[0]
    assert new != code and "the codes it replaces work until" in rotated.output

    listed = cli(ws, "code", "list", str(sid), "--as", "tax")
    assert listed.exit_code == 0, listed.output
    assert code[:15] in listed.output and new[:15] in listed.output
    assert code not in listed.output and new not in listed.output
    assert "grace" in listed.output and "live" in listed.output

    refused = cli(ws, "code", "issue", str(sid), "--as", "hrss")
    assert refused.exit_code == 1 and "may not issue" in str(refused.exception)
    bad = cli(ws, "code", "rotate", str(sid), "--grace", "soon")
    assert bad.exit_code == 1 and "is not a duration" in str(bad.exception)
    long = cli(ws, "code", "rotate", str(sid), "--grace", "8d", "--as", "tax")
    assert long.exit_code == 1 and "is longer than 7d" in str(long.exception)
    assert "7 days at most" in str(long.exception)
    hours = cli(ws, "code", "rotate", str(sid), "--grace", "169h", "--as", "tax")
    assert hours.exit_code == 1 and "is longer than 7d" in str(hours.exception)

    revoked = cli(ws, "code", "revoke", str(sid), "--reason", "system retired", "--as", "tax")
    assert revoked.exit_code == 0, revoked.output
    assert f"2 code(s) of subscription {sid} revoked" in revoked.output
    assert "revoked" in cli(ws, "code", "list", "--as", "admin").output
