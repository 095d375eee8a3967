"""Resource notices and the calendar's years over HTTP: the same service as the CLI, a real
uvicorn server, real tokens, a SQLite and a PostgreSQL metadata store."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from exchange.kernel.clock import today
from exchange.workspace import Workspace
from tests.test_api import serve
from tests.workflow_setup import add_people, open_city, tokens


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def as_user(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, httpx.Client]]:
    url = None if request.param == "sqlite" else request.getfixturevalue("pg_database")
    ws: Workspace = open_city(tmp_path, url)
    add_people(ws)
    for base in serve(ws):
        clients = {
            name: httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"})
            for name, token in tokens(ws).items()
        }
        yield clients
        for c in clients.values():
            c.close()
    ws.close()


def test_a_provider_announces_over_http_and_everyone_sees_the_notice(
    as_user: dict[str, httpx.Client],
) -> None:
    soon = str(today() + dt.timedelta(days=1))
    later = str(today() + dt.timedelta(days=30))
    body = {"kind": "change", "reason": "口径调整", "description": "name 改为 varchar(200)",
            "fields": ["name"]}  # fmt: skip

    early = as_user["market"].post("/resources/OPEN/notices", json={**body, "effective_on": soon})
    other = as_user["police"].post("/resources/OPEN/notices", json={**body, "effective_on": later})
    asked = as_user["tax"].post("/resources/OPEN/notices", json={**body, "effective_on": later})
    made = as_user["market"].post("/resources/OPEN/notices", json={**body, "effective_on": later})

    assert early.status_code == 400 and "the earliest allowed date is" in early.json()["detail"]
    assert (other.status_code, asked.status_code) == (403, 403)
    assert made.status_code == 201, made.text
    notice = made.json()
    assert (notice["resource"], notice["kind"], notice["state"]) == ("OPEN", "change", "pending")
    assert notice["effective_on"] == later and notice["announced_by"] == "market"
    listed = as_user["tax"].get("/notices").json()["items"]
    assert [n["id"] for n in listed] == [notice["id"]]
    assert as_user["tax"].get("/resources/OPEN/notices").json()["items"] == listed
    assert as_user["tax"].get("/notices", params={"state": "applied"}).json()["items"] == []
    assert as_user["tax"].get("/resources/NOPE/notices").status_code == 404


def test_the_calendar_status_over_http_names_no_server_path(
    as_user: dict[str, httpx.Client],
) -> None:
    answer = as_user["tax"].get("/calendar/status")

    assert answer.status_code == 200
    years = {y["years"]: y for y in answer.json()["years"]}
    assert years["2004–2026"]["exact"] is True
    assert all("/" not in y["source"] for y in years.values())
