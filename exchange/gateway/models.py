"""The gateway's tables of the metadata store (migration 0011): authorization codes, one usage
row per call, and how far each gateway process's spool has been written into the store."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from exchange.kernel.clock import utcnow
from exchange.store.models import Base


class ApiCode(Base):
    """An authorization code (授权码) of one API subscription. The code itself is never stored:
    ``prefix`` finds the row, ``digest`` (HMAC-SHA256 under the gateway key, which lives
    outside the store) proves the code. A rotated-out code works until ``grace_until``."""

    __tablename__ = "api_codes"

    id: Mapped[int] = mapped_column(primary_key=True)
    subscription_id: Mapped[int] = mapped_column(sa.ForeignKey("subscriptions.id"), index=True)
    prefix: Mapped[str] = mapped_column(sa.String(16), unique=True)
    digest: Mapped[bytes] = mapped_column(sa.LargeBinary(32))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(sa.String(100))
    revoked_at: Mapped[dt.datetime | None]
    revoked_by: Mapped[str | None] = mapped_column(sa.String(100))
    revoke_reason: Mapped[str | None] = mapped_column(sa.Text)
    replaced_by: Mapped[int | None]  # the code that rotated this one out
    grace_until: Mapped[dt.datetime | None]


class ApiCall(Base):
    """One call through the gateway (usage statistics: 调用类型、数量、频次). ``call_id`` comes
    from the gateway's spool, so a replayed spool never counts a call twice."""

    __tablename__ = "api_usage"

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[str] = mapped_column(sa.String(40), unique=True)
    at: Mapped[dt.datetime] = mapped_column(index=True)
    code_id: Mapped[int | None] = mapped_column(index=True)
    subscription_id: Mapped[int | None] = mapped_column(index=True)
    department_code: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    resource_code: Mapped[str] = mapped_column(sa.String(64), index=True)
    operation: Mapped[str] = mapped_column(sa.String(64))
    status: Mapped[int]
    #: ok | refused (code, subscription) | quota (429) | upstream (an upstream error) |
    #: unavailable (Redis down) | interrupted (admitted, the gateway died before answering)
    outcome: Mapped[str] = mapped_column(sa.String(20))
    latency_ms: Mapped[float]
    bytes: Mapped[int] = mapped_column(default=0)


class GatewaySpool(Base):
    """How many bytes of one gateway process's spool file are in the store (written in the
    same transaction as the usage rows and audit events they hold)."""

    __tablename__ = "gateway_spool"

    name: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    offset: Mapped[int] = mapped_column(sa.BigInteger)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
