"""The metadata store: subscriptions, runs, deliveries, watermarks, audit (SQLAlchemy + Alembic)."""

from exchange.store.db import Store
from exchange.store.models import AuditEvent, Delivery, Run, Subscription, Watermark

__all__ = ["AuditEvent", "Delivery", "Run", "Store", "Subscription", "Watermark"]
