"""How file subscriptions show in reports: ``node:/dir``."""

from __future__ import annotations

from sqlalchemy.orm import Session

from exchange.files.models import FileTarget
from exchange.store.models import Subscription
from exchange.workspace import Workspace


def file_dir(s: Session, sub: Subscription) -> str | None:
    """``/dir`` of a file subscription, None for a table subscription."""
    t = s.get(FileTarget, sub.id)
    return "/" + t.target_dir if t is not None else None


def describe_target(ws: Workspace, sub: Subscription) -> str:
    with ws.store.session() as s:
        where = file_dir(s, sub)
    return (
        f"{sub.subscriber_node}:{where}" if where else f"{sub.subscriber_node}.{sub.target_table}"
    )
