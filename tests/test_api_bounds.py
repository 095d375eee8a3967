"""The API's edges, as a fuzz and load trial found them: every input bounded (a 422 naming the
parameter, never a 500), an action and its audit event committed together or not at all,
not_shared resources invisible, errors that name no path and no other resource, pages, the
docs served offline, and a spec that declares what the server does. SQLite and PostgreSQL
stores alike."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from exchange import audit
from exchange.api import calls, create_app
from exchange.store.models import AuditEvent, Subscription
from exchange.workflow import service as svc
from exchange.workflow.users import principal_of
from exchange.workspace import Workspace
from tests.workflow_setup import add_people, form, form_data, open_city, tokens


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def ws(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Workspace]:
    url = None if request.param == "sqlite" else request.getfixturevalue("pg_database")
    workspace = open_city(tmp_path, url)
    add_people(workspace)
    yield workspace
    workspace.close()


@pytest.fixture
def api(ws: Workspace) -> Iterator[dict[str, TestClient]]:
    app = create_app(ws)
    clients = {
        name: TestClient(app, headers={"Authorization": f"Bearer {token}"},
                         raise_server_exceptions=False)
        for name, token in tokens(ws).items()
    }  # fmt: skip
    yield clients
    for c in clients.values():
        c.close()


def api_calls(ws: Workspace) -> list[tuple[str, str, int]]:
    with ws.store.session() as s:
        assert audit.check_chain(s).broken_id is None
        query = sa.select(AuditEvent).where(AuditEvent.kind == "api.call").order_by(AuditEvent.id)
        events = s.scalars(query).all()
        return [(e.actor, e.subject, e.payload["status"]) for e in events]


def state_of(ws: Workspace, sid: int) -> str:
    with ws.store.session() as s:
        sub = s.get(Subscription, sid)
        assert sub is not None
        return sub.status


def names_the(r: Any, where: str, name: str) -> bool:
    return r.status_code == 422 and any(e["loc"] == [where, name] for e in r.json()["detail"])


def test_deadline_bounds_are_422s_naming_the_parameter_and_quick(
    api: dict[str, TestClient],
) -> None:
    tax = api["tax"]
    for days in (0, -1, 366, 10_000_000):
        r = tax.get(
            "/calendar/deadline", params={"start": "2026-09-30T10:00", "working_days": days}
        )
        assert names_the(r, "query", "working_days"), (days, r.text)
    for start in ("9999-12-31", "9999-12-31T23:59:59", "1999-12-31T12:00", "2100-01-01T00:00"):
        r = tax.get("/calendar/deadline", params={"start": start, "working_days": 5})
        assert names_the(r, "query", "start"), (start, r.text)
    r = tax.get("/calendar/deadline", params={"start": "2099-12-31T10:00", "working_days": 365})
    assert r.status_code == 200 and r.json()["provisional"] is True
    r = tax.get("/calendar/deadline", params={"start": "2026-09-30T10:00", "working_days": 5})
    assert r.json()["due"] == "2026-10-13T23:59:59+08:00"


def test_ids_beyond_the_columns_range_are_422_not_500(
    ws: Workspace, api: dict[str, TestClient]
) -> None:
    tax = api["tax"]
    for sid in (2**31, 2**63, 0, -1):
        assert names_the(tax.get(f"/subscriptions/{sid}"), "path", "sid"), sid
        r = tax.post(f"/subscriptions/{sid}/withdraw", json={"reason": "x"})
        assert names_the(r, "path", "sid"), sid
    assert tax.get(f"/subscriptions/{2**31 - 1}").status_code == 404
    for limit in (0, 201):
        assert names_the(tax.get("/subscriptions", params={"limit": limit}), "query", "limit")
    assert names_the(tax.get("/subscriptions", params={"limt": 5}), "query", "limt")
    assert all(status != 500 for _, _, status in api_calls(ws))


def test_a_long_path_is_audited_with_its_action_in_one_transaction(
    ws: Workspace, api: dict[str, TestClient]
) -> None:
    sid = api["tax"].post("/subscriptions", json=form_data()).json()["id"]
    path = f"/subscriptions/{'0' * 300}{sid}/withdraw"  # the same id, a 330-character path

    r = api["tax"].post(path, json={"reason": "不再需要"})

    assert r.status_code == 200, r.text
    assert state_of(ws, sid) == "withdrawn"
    [(actor, subject, status)] = [c for c in api_calls(ws) if c[1].endswith("…")]
    assert (actor, status) == ("tax", 200)
    assert subject.startswith("POST /subscriptions/000") and len(subject) == audit.SUBJECT_MAX


def test_an_action_whose_audit_event_fails_is_rolled_back_and_the_failure_audited(
    ws: Workspace, api: dict[str, TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    sid = api["tax"].post("/subscriptions", json=form_data()).json()["id"]
    record = calls.record

    def failing_on_success(s: Any, call: calls.Call, status: int) -> None:
        if status < 400:
            raise RuntimeError("the audit log is full")
        record(s, call, status)

    monkeypatch.setattr(calls, "record", failing_on_success)
    r = api["tax"].post(f"/subscriptions/{sid}/withdraw", json={"reason": "不再需要"})

    assert r.status_code == 500 and r.json() == {"detail": "internal error"}
    assert state_of(ws, sid) == "under_review"  # no withdrawal without its event
    assert ("tax", f"POST /subscriptions/{sid}/withdraw", 500) in api_calls(ws)


def test_calls_that_end_in_errors_and_refusals_are_audited(
    ws: Workspace, api: dict[str, TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    def bug(*args: Any, **kw: Any) -> Any:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(svc, "sla_overview", bug)
    assert api["admin"].get("/sla").status_code == 500
    assert api["tax"].get("/subscriptions/12").status_code == 404
    assert api["tax"].get("/calendar/deadline", params={"working_days": 0}).status_code == 422

    calls_ = api_calls(ws)
    assert ("admin", "GET /sla", 500) in calls_
    assert ("tax", "GET /subscriptions/12", 404) in calls_
    assert ("tax", "GET /calendar/deadline", 422) in calls_


def test_not_shared_resources_are_not_found_but_by_their_provider_and_the_platform(
    api: dict[str, TestClient],
) -> None:
    unknown = api["tax"].get("/catalog/resources/NOPE")
    hidden = api["tax"].get("/catalog/resources/SECRET")

    assert (unknown.status_code, unknown.json()) == (404, {"detail": "no resource 'NOPE'"})
    assert (hidden.status_code, hidden.json()) == (404, {"detail": "no resource 'SECRET'"})
    assert api["police"].get("/catalog/resources/SECRET").status_code == 404  # another provider
    assert api["market"].get("/catalog/resources/SECRET").json()["share"] == "not_shared"
    assert api["admin"].get("/catalog/resources/SECRET").status_code == 200
    listed = {n: {r["code"] for r in api[n].get("/catalog/resources").json()["items"]}
              for n in ("tax", "market", "admin")}  # fmt: skip
    assert listed == {"tax": {"COND", "OPEN", "POLICE"},
                      "market": {"COND", "OPEN", "POLICE", "SECRET"},
                      "admin": {"COND", "OPEN", "POLICE", "SECRET"}}  # fmt: skip


def test_errors_name_no_path_and_no_other_resource(
    ws: Workspace, api: dict[str, TestClient]
) -> None:
    answers = [
        api["tax"].post("/subscriptions", json=form_data("NOPE")),
        api["tax"].post("/subscriptions", json=form_data(node="nowhere_fe")),
        api["tax"].get("/catalog/resources/COND2"),
    ]
    for r in answers:
        detail = r.json()["detail"]
        assert r.status_code in (400, 403, 404), r.text
        assert str(ws.settings.home) not in detail and "catalog.yaml" not in detail, detail
        assert "POLICE" not in detail and "SECRET" not in detail and "known" not in detail


def test_lists_are_pages_with_a_total_and_the_next_offset(
    ws: Workspace, api: dict[str, TestClient]
) -> None:
    with ws.store.session() as s:
        tax_user = principal_of(s, "tax")
    for i in range(5):
        svc.apply(ws, tax_user, form(target_table=f"t{i}"))
    tax = api["tax"]

    first = tax.get("/subscriptions", params={"limit": 2}).json()
    last = tax.get("/subscriptions", params={"limit": 2, "offset": 4}).json()
    past = tax.get("/subscriptions", params={"offset": 10}).json()

    assert (first["total"], first["limit"], first["offset"], first["next_offset"]) == (5, 2, 0, 2)
    assert [s["id"] for s in first["items"]] == [1, 2]
    assert ([s["id"] for s in last["items"]], last["next_offset"]) == ([5], None)
    assert (past["items"], past["total"], past["next_offset"]) == ([], 5, None)
    assert tax.get("/subscriptions").json()["limit"] == 50  # the default
    assert api["police"].get("/subscriptions").json()["total"] == 0  # not its resources
    assert (
        api["market"].get("/subscriptions", params={"state": "under_review"}).json()["total"] == 5
    )
    assert names_the(tax.get("/subscriptions", params={"state": "nope"}), "query", "state")


def test_swagger_ui_and_redoc_are_served_from_the_package(api: dict[str, TestClient]) -> None:
    client = api["tax"]
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        assert "cdn." not in html and "fonts.googleapis" not in html
    assert "/static-offline-docs/swagger-ui-bundle.js" in client.get("/docs").text
    asset = client.get("/static-offline-docs/swagger-ui-bundle.js")
    assert asset.status_code == 200 and len(asset.content) > 100_000


def test_the_spec_declares_every_refusal_and_every_bound(api: dict[str, TestClient]) -> None:
    spec = api["tax"].get("/openapi.json").json()
    paths = spec["paths"]

    withdraw = paths["/subscriptions/{sid}/withdraw"]["post"]
    assert set(withdraw["responses"]) == {"200", "400", "401", "403", "404", "409", "422", "503"}
    assert withdraw["responses"]["404"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorOut"
    }
    [sid] = withdraw["parameters"]
    assert (sid["schema"]["minimum"], sid["schema"]["maximum"]) == (1, 2**31 - 1)
    deadline = {p["name"]: p["schema"] for p in paths["/calendar/deadline"]["get"]["parameters"]}
    assert (deadline["working_days"]["minimum"], deadline["working_days"]["maximum"]) == (1, 365)
    assert deadline["start"]["pattern"] == "^20[0-9]{2}-"
    schemas = spec["components"]["schemas"]
    assert schemas["Reject"]["required"] == ["decision", "reason"]
    app_form = schemas["Application"]["properties"]
    assert app_form["contact_phone"]["pattern"] and app_form["contact_email"]["maxLength"] == 200
    listing = paths["/subscriptions"]["get"]
    limits = {p["name"]: p["schema"] for p in listing["parameters"]}
    assert (limits["limit"]["default"], limits["limit"]["maximum"]) == (50, 200)


def test_services_listen_on_loopback_unless_told_otherwise() -> None:
    import inspect

    import yaml

    from exchange.cli import app as cli

    root = Path(__file__).resolve().parents[1]
    assert inspect.signature(cli.serve).parameters["host"].default == "127.0.0.1"
    script = (root / "docker" / "local" / "stack.sh").read_text(encoding="utf-8")
    assert "AIRFLOW__API__HOST=${AIRFLOW_HOST:-127.0.0.1}" in script
    assert '"$BIN/airflow" api-server --host "$AIRFLOW__API__HOST"' in script
    compose = yaml.safe_load((root / "docker" / "docker-compose.yaml").read_text("utf-8"))
    [published] = compose["services"]["airflow-apiserver"]["ports"]
    assert published.startswith("${AIRFLOW_PUBLISH_HOST:-127.0.0.1}:")
