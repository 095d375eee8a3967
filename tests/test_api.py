"""The REST API over HTTP: a real uvicorn server on loopback, real tokens, SQLite and PostgreSQL
metadata stores."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import uvicorn

from exchange import audit
from exchange.api import create_app
from exchange.flow import run_resource
from exchange.store.models import AuditEvent
from exchange.workflow.users import revoke_tokens
from exchange.workspace import Workspace
from tests.workflow_setup import add_people, form_data, open_city, tokens


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def ws(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Workspace]:
    url = None if request.param == "sqlite" else request.getfixturevalue("pg_database")
    workspace = open_city(tmp_path, url)
    add_people(workspace)
    yield workspace
    workspace.close()


@pytest.fixture
def server(ws: Workspace) -> Iterator[str]:
    yield from serve(ws)


def serve(ws: Workspace | None) -> Iterator[str]:
    """The API served by uvicorn in a thread on a free loopback port."""
    port = free_port()
    srv = uvicorn.Server(
        uvicorn.Config(create_app(ws), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def as_user(ws: Workspace, server: str) -> Iterator[dict[str, httpx.Client]]:
    clients = {
        name: httpx.Client(base_url=server, headers={"Authorization": f"Bearer {token}"})
        for name, token in tokens(ws).items()
    }
    yield clients
    for c in clients.values():
        c.close()


def test_a_conditional_request_from_application_to_closed_over_http(
    ws: Workspace, as_user: dict[str, httpx.Client]
) -> None:
    tax, market = as_user["tax"], as_user["market"]
    resources = tax.get("/catalog/resources").json()["items"]
    assert {r["code"] for r in resources} == {"COND", "OPEN", "POLICE"}  # not SECRET
    assert tax.get("/catalog/resources/COND").json()["provider_department"] == "SCJG"

    r = tax.post("/subscriptions", json=form_data())
    assert r.status_code == 201, r.text
    sub = r.json()
    assert sub["state"] == "under_review"
    assert sub["deadlines"][0]["kind"] == "review" and sub["deadlines"][0]["status"] == "running"

    r = market.post(f"/subscriptions/{sub['id']}/review",
                    json={"decision": "approve", "fields": ["id", "name"]})  # fmt: skip
    assert r.status_code == 200, r.text
    assert (r.json()["state"], r.json()["fields"]) == ("implementation", ["id", "name"])

    assert run_resource(ws, "COND").status == "succeeded"  # the engine, not an API call

    assert tax.get(f"/subscriptions/{sub['id']}").json()["state"] == "sign_off"
    assert tax.post(f"/subscriptions/{sub['id']}/sign-off").json()["state"] == "evaluation"
    stars = {"matches_description": 5, "data_quality": 5, "timeliness": 4,
             "implementation_service": 5, "review_efficiency": 3, "comment": "好用"}  # fmt: skip
    closed = tax.post(f"/subscriptions/{sub['id']}/evaluate", json=stars).json()
    assert closed["state"] == "closed"
    kinds = {d["kind"]: d["status"] for d in closed["deadlines"]}
    assert kinds == {"review": "met", "delivery": "met", "sign_off": "met",
                     "evaluation": "met", "effectiveness": "running"}  # fmt: skip

    mine = tax.get("/subscriptions").json()["items"]
    assert [(s["id"], s["state"], s["sla"]) for s in mine] == [(sub["id"], "closed", "ok")]
    r = tax.post(f"/subscriptions/{sub['id']}/effectiveness", json={"summary": "核验 3 万户"})
    assert r.status_code == 200
    detail = tax.get(f"/subscriptions/{sub['id']}").json()
    assert detail["evaluation"]["comment"] == "好用"
    assert [h["to_state"] for h in detail["history"]][-1] == "closed"
    sla = as_user["admin"].get("/sla").json()
    assert sla["open"] == [] and sla["breaches"] == []


def test_a_provider_may_not_review_another_providers_request(
    as_user: dict[str, httpx.Client],
) -> None:
    sid = as_user["tax"].post("/subscriptions", json=form_data()).json()["id"]

    r = as_user["police"].post(f"/subscriptions/{sid}/review", json={"decision": "approve"})

    assert r.status_code == 403
    assert "provided by 市场监督管理局" in r.json()["detail"]
    assert as_user["police"].get(f"/subscriptions/{sid}").status_code == 403
    assert as_user["police"].get("/subscriptions").json()["items"] == []
    assert as_user["tax"].get(f"/subscriptions/{sid}").json()["state"] == "under_review"


def test_refusals_have_their_status_codes(
    ws: Workspace, server: str, as_user: dict[str, httpx.Client]
) -> None:
    tax, hrss = as_user["tax"], as_user["hrss"]
    sid = tax.post("/subscriptions", json=form_data()).json()["id"]

    assert httpx.get(f"{server}/subscriptions").status_code == 401
    bad = httpx.get(f"{server}/me", headers={"Authorization": "Bearer exg_not-a-token"})
    assert bad.status_code == 401 and bad.headers["www-authenticate"] == "Bearer"
    assert hrss.post(f"/subscriptions/{sid}/withdraw", json={"reason": "x"}).status_code == 403
    assert tax.post(f"/subscriptions/{sid}/suspend", json={"reason": "x"}).status_code == 403
    assert tax.post(f"/subscriptions/{sid}/sign-off").status_code == 409  # not delivered yet
    assert tax.get("/subscriptions/999").status_code == 404
    r = tax.post("/subscriptions", json=form_data(urgency="critical"))
    assert r.status_code == 422 and "urgency_reason" in r.text
    r = tax.post("/subscriptions", json=form_data("SECRET", target_table="t2"))
    assert r.status_code == 404 and r.json()["detail"] == "no resource 'SECRET'"  # as unknown
    r = as_user["market"].post(f"/subscriptions/{sid}/review", json={"decision": "reject"})
    # the spec says so (a rejection's body requires its reason): refused before the workflow
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "reject", "reason"]

    with ws.store.session() as s:
        revoke_tokens(s, "tax", "test")
    assert tax.get("/me").status_code == 401


def test_every_call_is_audited_and_no_token_reaches_the_log(
    ws: Workspace, server: str, as_user: dict[str, httpx.Client]
) -> None:
    as_user["tax"].get("/me")
    as_user["tax"].post("/subscriptions", json=form_data())
    httpx.get(f"{server}/subscriptions")  # anonymous, refused
    assert httpx.get(f"{server}/docs").status_code == 200
    paths = httpx.get(f"{server}/openapi.json").json()["paths"]
    assert "/subscriptions/{sid}/review" in paths and "/sla" in paths

    with ws.store.session() as s:
        events = s.scalars(sa.select(AuditEvent).order_by(AuditEvent.id)).all()
        assert audit.check_chain(s).broken_id is None
        calls = [(e.actor, e.subject, e.payload["status"]) for e in events if e.kind == "api.call"]
        assert ("tax", "GET /me", 200) in calls
        assert ("tax", "POST /subscriptions", 201) in calls
        assert ("anonymous", "GET /subscriptions", 401) in calls
        text = json.dumps([(e.actor, e.subject, e.payload) for e in events], ensure_ascii=False)
        token_hashes = s.execute(sa.text("SELECT token_hash FROM api_tokens")).scalars().all()
    for client in as_user.values():
        token = client.headers["Authorization"].removeprefix("Bearer ")
        assert token not in text and token[:12] not in text
    assert not any(h in text for h in token_hashes)
    assert "zhangsan@example.gov.cn" not in text  # contact details stay in the form, not the log


def test_an_unreachable_metadata_store_is_503_with_retry_after_not_500(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A Retriable error (the store, a node, another run's lock) is the caller's to retry.
    open_city(tmp_path).close()
    monkeypatch.setenv("EXCHANGE_CATALOG", str(tmp_path / "catalog.yaml"))
    monkeypatch.setenv("EXCHANGE_HOME", str(tmp_path))
    monkeypatch.setenv("EXCHANGE_DB_URL", "postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    for url in serve(None):
        r = httpx.get(f"{url}/me", headers={"Authorization": "Bearer exg_x"}, timeout=30)
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "30"
        assert "127.0.0.1:1" in r.json()["detail"] and "password" not in r.json()["detail"]
