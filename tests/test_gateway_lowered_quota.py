"""The workflow as the gateway feels it: a department whose usage-effectiveness report is
overdue (an open DepartmentSuspension, opened by the housekeeping tick) is served on its
resources' lowered daily quota (``quota.lowered_daily``) until it reports, then on the normal
one again; and an api subscription is implemented by issuing its authorization code, never
marked implemented by hand (``exchange subscription implemented``).

A real gateway (uvicorn in a thread, tests/test_gateway_app.py's ``served``), the running
Redis and a real upstream; the code cache holds nothing (``cache_s`` 0), so a suspension and
its lifting reach the very next call.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from exchange.kernel.clock import utcnow
from exchange.kernel.errors import IllegalTransition
from exchange.store.models import Subscription
from exchange.workflow import service as svc
from exchange.workflow import sla
from exchange.workflow import states as st
from exchange.workflow.housekeeping import tick
from exchange.workflow.models import DepartmentSuspension
from exchange.workflow.users import Principal, create_user, principal_of
from exchange.workspace import Workspace
from tests.test_gateway_app import (
    GRANTED,
    RESOURCE,
    _redis_or_skip,
    admin_of,
    served,
    write_catalog,
)

#: The normal daily quota of these tests; the catalog's lowered one is 1 (test_gateway_app).
DAILY = 5


@pytest.fixture(autouse=True)
def _needs_redis() -> None:
    _redis_or_skip()


def _requester(ws: Workspace, department: str = "TAX") -> Principal:
    with ws.store.session() as s:
        create_user(s, department.lower(), "requester", department, "test")
    with ws.store.session() as s:
        return principal_of(s, department.lower())


def _api_subscription(ws: Workspace, status: str, department: str = "TAX") -> int:
    """An api subscription of ``department`` in ``status``, as the workflow leaves one."""
    with ws.store.session() as s:
        sub = Subscription(
            resource_code=RESOURCE, subscriber_node="", target_table="", fields=GRANTED,
            requested_fields=GRANTED, status=status, share="conditional",
            valid_until=dt.date.today() + dt.timedelta(days=60), department_code=department,
            department_name=ws.catalog.department_name(department), applicant="tax",
        )  # fmt: skip
        s.add(sub)
        s.flush()
        return sub.id


def _overdue_report(ws: Workspace) -> int:
    """A closed subscription of TAX whose effectiveness report was due yesterday."""
    sid = _api_subscription(ws, st.CLOSED)
    closed = utcnow() - sla.EFFECTIVENESS_PERIOD - dt.timedelta(days=1)
    with ws.store.session() as s:
        sla.start_clock(s, sid, "effectiveness", "requester", "tax", closed,
                        period=sla.EFFECTIVENESS_PERIOD)  # fmt: skip
    return sid


def _open_suspensions(ws: Workspace) -> list[str]:
    with ws.store.session() as s:
        query = sa.select(DepartmentSuspension.department_code).where(
            DepartmentSuspension.lifted_at.is_(None)
        )
        return list(s.scalars(query))


def test_a_department_with_an_overdue_report_gets_the_lowered_daily_quota_until_it_reports(
    tmp_path: Path,
) -> None:
    with served(tmp_path, daily=DAILY) as gw:
        tax = _requester(gw.ws)
        overdue = _overdue_report(gw.ws)
        assert tick(gw.ws.store, utcnow()).departments_suspended == 1
        assert _open_suspensions(gw.ws) == ["TAX"]

        first = gw.call()
        assert first.status_code == 200, first.text
        assert first.headers["x-ratelimit-limit"] == "1"  # lowered_daily
        assert first.headers["x-ratelimit-remaining"] == "0"
        refused = gw.call()
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"] == "quota" and "daily quota" in refused.json()["message"]
        assert refused.headers["x-ratelimit-limit"] == "1"

        svc.report_effectiveness(gw.ws, tax, overdue, "核验 1.2 万户, 减少跑腿 3000 次")
        assert _open_suspensions(gw.ws) == []

        again = gw.call()
        assert again.status_code == 200, again.text
        assert again.headers["x-ratelimit-limit"] == str(DAILY)
        # the day's window is the code's: the lowered day's one call still counts
        assert again.headers["x-ratelimit-remaining"] == str(DAILY - 2)
        outcomes = [row.outcome for row in gw.usage()]
        assert outcomes == ["ok", "quota", "ok"]


def test_a_department_without_a_suspension_gets_the_normal_daily_quota(tmp_path: Path) -> None:
    with served(tmp_path, daily=DAILY) as gw:
        _api_subscription(gw.ws, st.CLOSED)  # closed, its report not yet due
        assert tick(gw.ws.store, utcnow()).departments_suspended == 0
        answer = gw.call()
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-ratelimit-limit"] == str(DAILY)


# -- an api subscription is implemented by its code -----------------------------------------


def _city(home: Path) -> Workspace:
    from exchange.kernel.settings import Settings

    catalog = write_catalog(home, "http://127.0.0.1:9")  # never called here
    return Workspace.open(catalog, Settings(home=home, db_url=f"sqlite:///{home / 'exchange.db'}"))


def test_an_api_subscription_cannot_be_marked_implemented_by_hand(tmp_path: Path) -> None:
    with _city(tmp_path) as ws:
        sid = _api_subscription(ws, st.IMPLEMENTATION)
        with pytest.raises(IllegalTransition, match=rf"exchange code issue {sid}\)"):
            svc.admin_step(ws, admin_of(ws), sid, "deliver", "done by hand")
        with ws.store.session() as s:
            assert s.get(Subscription, sid).status == st.IMPLEMENTATION  # type: ignore[union-attr]

    # the command, as a platform engineer types it (a process: its exit code)
    env = {**os.environ, "EXCHANGE_HOME": str(tmp_path),
           "EXCHANGE_CATALOG": str(tmp_path / "catalog.yaml")}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "exchange", "subscription", "implemented", str(sid),
         "--reason", "done", "--as", "admin"],
        env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2, (done.stdout, done.stderr)
    said = " ".join((done.stdout + done.stderr).split())
    assert f"api resource {RESOURCE}" in said
    assert f"issuing its authorization code (exchange code issue {sid})" in said


def test_issuing_the_code_is_what_implements_an_api_subscription(tmp_path: Path) -> None:
    from exchange.gateway import codes

    with _city(tmp_path) as ws:
        sid = _api_subscription(ws, st.IMPLEMENTATION)
        codes.issue(ws, admin_of(ws), sid)
        with ws.store.session() as s:
            assert s.get(Subscription, sid).status == st.SIGN_OFF  # type: ignore[union-attr]
