"""The notifications outbox and its webhook sender.

Workflow steps add rows to the outbox in their own transaction (``notify``), so a message is
never lost nor sent for a step that rolled back. ``send_pending`` POSTs each pending row as JSON
to the configured webhook (``EXCHANGE_WEBHOOK_URL``), at least once: the receiver dedupes on
``id``. A failed POST is retried on the next call, up to ``max_attempts``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from connectors.secrets import redact
from exchange import audit
from exchange.kernel.clock import utcnow
from exchange.store import Store
from exchange.workflow.models import Notification

if TYPE_CHECKING:
    import httpx


def notify(
    s: Session,
    kind: str,
    recipient: str,
    payload: dict[str, Any],
    *,
    key: str,
    subscription_id: int | None = None,
) -> bool:
    """Queue a message once per ``key``; return whether it was new."""
    exists = s.execute(sa.select(Notification.id).where(Notification.dedupe_key == key)).scalar()
    if exists is not None:
        return False
    s.add(
        Notification(
            kind=kind,
            recipient=recipient,
            subscription_id=subscription_id,
            payload=payload,
            dedupe_key=key,
            status="pending",
            attempts=0,
        )
    )
    s.flush()
    return True


@dataclass(frozen=True)
class SendReport:
    sent: int = 0
    failed: int = 0  # attempts that failed this time (the row stays pending or gives up)
    pending: int = 0  # left in the outbox afterwards
    webhook: bool = True  # False: no webhook URL is set, nothing was (or will be) sent

    def __str__(self) -> str:
        text = f"{self.sent} sent, {self.failed} failed, {self.pending} waiting"
        if not self.webhook and self.pending:
            text += " ($EXCHANGE_WEBHOOK_URL is not set: they wait in the outbox until it is)"
        return text


def message(n: Notification) -> dict[str, Any]:
    """The JSON body the webhook receives."""
    return {
        "id": n.id,
        "kind": n.kind,
        "recipient": n.recipient,
        "subscription_id": n.subscription_id,
        "created_at": n.created_at.replace(tzinfo=dt.UTC).isoformat(),
        "payload": n.payload,
    }


def send_pending(
    store: Store,
    url: str | None,
    *,
    timeout: float = 10.0,
    max_attempts: int = 10,
    client: httpx.Client | None = None,
) -> SendReport:
    """POST every pending notification to ``url``; without a URL they wait in the outbox."""
    with store.session() as s:
        ids = list(
            s.execute(
                sa.select(Notification.id)
                .where(Notification.status == "pending")
                .order_by(Notification.id)
            ).scalars()
        )
    if not url or not ids:
        return SendReport(pending=len(ids), webhook=bool(url))
    sent = failed = 0
    import httpx  # here: every workflow transition imports this module, few send

    own = client is None
    http = client or httpx.Client(timeout=timeout)
    try:
        for nid in ids:
            with store.session() as s:
                n = s.get(Notification, nid)
                if n is None or n.status != "pending":
                    continue
                body = message(n)
            error = _post(http, url, body)
            with store.session() as s:
                n = s.get_one(Notification, nid)
                n.attempts += 1
                if error is None:
                    n.status, n.sent_at, n.last_error = "sent", utcnow(), None
                    sent += 1
                    audit.append(
                        s, "notification.sent", f"notification:{nid}", _audited(n), "notifier"
                    )
                else:
                    n.last_error = error
                    failed += 1
                    if n.attempts >= max_attempts:
                        n.status = "failed"
                        audit.append(
                            s,
                            "notification.failed",
                            f"notification:{nid}",
                            {**_audited(n), "error": error},
                            "notifier",
                        )
    finally:
        if own:
            http.close()
    with store.session() as s:
        left = s.execute(
            sa.select(sa.func.count()).where(Notification.status == "pending")
        ).scalar_one()
    return SendReport(sent, failed, int(left))


def _audited(n: Notification) -> dict[str, Any]:
    return {
        "kind": n.kind,
        "recipient": n.recipient,
        "subscription": n.subscription_id,
        "attempts": n.attempts,
    }


def _post(http: httpx.Client, url: str, body: dict[str, Any]) -> str | None:
    """None on a 2xx answer, else why not (the URL's credentials never appear)."""
    import httpx

    try:
        response = http.post(url, json=body)
    except httpx.HTTPError as exc:
        return redact(f"{type(exc).__name__}: {exc}")
    if 200 <= response.status_code < 300:
        return None
    return f"HTTP {response.status_code}"
