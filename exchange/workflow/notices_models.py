"""The table of resource change and offline notices (migration 0015_resource_notices), and
the one query of it that the engine's ``deliverable`` rule reads: which resources are offline
on a day."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from exchange.kernel.clock import utcnow
from exchange.store.models import Base

CHANGE = "change"
OFFLINE = "offline"
KINDS = (CHANGE, OFFLINE)


class ResourceNotice(Base):
    """A provider's notice that a resource changes or goes offline on ``effective_on``
    (003 §11: at least 5 working days after the notice, ``earliest_on``).

    ``applied_at`` is set by the housekeeping tick on the effective day. An offline resource
    delivers nothing from ``effective_on`` whether or not the tick has run yet: the date,
    not the tick, decides."""

    __tablename__ = "resource_notices"

    id: Mapped[int] = mapped_column(primary_key=True)
    resource_code: Mapped[str] = mapped_column(sa.String(64), index=True)
    kind: Mapped[str] = mapped_column(sa.String(10))  # change | offline
    reason: Mapped[str] = mapped_column(sa.Text)
    description: Mapped[str | None] = mapped_column(sa.Text)  # a change: what changes
    fields: Mapped[list[str] | None] = mapped_column(sa.JSON)  # a change: the fields concerned
    replacement: Mapped[str | None] = mapped_column(sa.String(64))
    effective_on: Mapped[dt.date]
    earliest_on: Mapped[dt.date]  # 5 working days after the notice
    earliest_provisional: Mapped[bool] = mapped_column(default=False)
    announced_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    announced_by: Mapped[str] = mapped_column(sa.String(100))
    applied_at: Mapped[dt.datetime | None]


def offline_on(day: dt.date) -> sa.Select[Any]:
    """The codes of the resources an offline notice has taken offline by ``day``."""
    return sa.select(ResourceNotice.resource_code).where(
        ResourceNotice.kind == OFFLINE, ResourceNotice.effective_on <= day
    )


def offline_notice(code: str, day: dt.date) -> sa.Select[Any]:
    """The (first) offline notice that has taken ``code`` offline by ``day``: ``offline_on``'s
    rule for one resource, for what a refusal or a run's note names."""
    return (
        offline_on(day)
        .with_only_columns(ResourceNotice)
        .where(ResourceNotice.resource_code == code)
        .order_by(ResourceNotice.id)
        .limit(1)
    )
