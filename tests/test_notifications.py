"""The notifications outbox delivered by webhook to a real HTTP server on loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from exchange.store.models import AuditEvent
from exchange.workflow import service as svc
from exchange.workflow.config import WorkflowSettings
from exchange.workflow.housekeeping import housekeep
from exchange.workflow.models import Notification
from exchange.workflow.notifications import send_pending
from exchange.workspace import Workspace
from tests.workflow_setup import add_people, form, open_city, sh


class Receiver:
    """An HTTP server that records JSON bodies and answers ``status`` (a list: one per call)."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers["Content-Length"])
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                status = receiver.statuses.pop(0) if receiver.statuses else 204
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Workspace]:
    workspace = open_city(tmp_path)
    people = add_people(workspace)
    svc.apply(workspace, people["tax"], form(urgency="critical", urgency_reason="防汛"),
              now=sh("2026-10-08T09:00"))  # fmt: skip
    yield workspace
    workspace.close()


def statuses(ws: Workspace) -> list[tuple[str, str, int]]:
    with ws.store.session() as s:
        return [
            (n.kind, n.status, n.attempts)
            for n in s.scalars(sa.select(Notification).order_by(Notification.id))
        ]


def test_pending_notifications_are_posted_once_and_audited(
    ws: Workspace, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXCHANGE_WEBHOOK_URL", receiver.url)

    report, sent = housekeep(ws, sh("2026-10-08T21:30"))  # a critical request: 2 reminders due

    assert report.reminders == 1  # one reminder for the latest slot, not one per missed slot
    assert (sent.sent, sent.failed, sent.pending) == (2, 0, 0)
    assert [b["kind"] for b in receiver.bodies] == ["review.requested", "review.reminder"]
    first = receiver.bodies[0]
    assert first["recipient"] == "provider:SCJG"
    assert first["payload"]["due"] == "2026-10-14T23:59:59+08:00"  # Oct 9, 10 (make-up), 12-14
    assert first["payload"]["urgency"] == "critical"
    assert receiver.bodies[1]["payload"]["reminder"] == 2

    _, again = housekeep(ws, sh("2026-10-08T21:30"))
    assert again.sent == 0 and len(receiver.bodies) == 2
    with ws.store.session() as s:
        audited = s.scalars(
            sa.select(AuditEvent.subject).where(AuditEvent.kind == "notification.sent")
        ).all()
    assert len(audited) == 2


def test_a_failing_webhook_is_retried_then_given_up_and_audited(
    ws: Workspace, receiver: Receiver
) -> None:
    receiver.statuses = [500, 500, 500]

    first = send_pending(ws.store, receiver.url, max_attempts=3)
    assert (first.sent, first.failed, first.pending) == (0, 1, 1)
    with ws.store.session() as s:
        row = s.scalars(sa.select(Notification)).one()
        assert row.last_error == "HTTP 500"

    send_pending(ws.store, receiver.url, max_attempts=3)
    last = send_pending(ws.store, receiver.url, max_attempts=3)
    assert (last.failed, last.pending) == (1, 0)
    assert statuses(ws) == [("review.requested", "failed", 3)]
    with ws.store.session() as s:
        failed = s.scalars(
            sa.select(AuditEvent.payload).where(AuditEvent.kind == "notification.failed")
        ).one()
    assert failed["error"] == "HTTP 500"


def test_an_unreachable_webhook_keeps_the_message_and_hides_credentials(ws: Workspace) -> None:
    closed = Receiver()
    url = closed.url.replace("http://", "http://bot:s3cret@")
    closed.close()

    report = send_pending(ws.store, url)

    assert (report.sent, report.failed, report.pending) == (0, 1, 1)
    with ws.store.session() as s:
        error = s.scalars(sa.select(Notification.last_error)).one()
    assert error and "ConnectError" in error and "s3cret" not in error


def test_without_a_url_messages_wait_in_the_outbox(ws: Workspace) -> None:
    assert WorkflowSettings().webhook_url is None
    assert send_pending(ws.store, None).pending == 1
    assert statuses(ws) == [("review.requested", "pending", 0)]
