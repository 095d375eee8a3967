"""Workflow settings, read from the environment.

* ``EXCHANGE_REVIEW_TIMEOUT_POLICY`` = ``reject`` (default, Guangdong 000: an unanswered review
  is refused) or ``approve`` (Hubei 003 §14: overdue is taken as consent, 视为同意).
* ``EXCHANGE_WEBHOOK_URL``: where notifications are POSTed (unset: they wait in the outbox).
* ``EXCHANGE_WEBHOOK_TIMEOUT`` (seconds, default 10), ``EXCHANGE_WEBHOOK_MAX_ATTEMPTS`` (10).
* ``EXCHANGE_UPSTREAM_FORWARD_DAYS``: working days the platform has to forward a department's
  upstream application (default 3, 1 to 30; ``exchange.workflow.upstream``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from exchange.kernel.errors import BadInput

POLICIES = ("reject", "approve")
MAX_FORWARD_DAYS = 30


@dataclass(frozen=True)
class WorkflowSettings:
    review_timeout_policy: str = "reject"
    webhook_url: str | None = None
    webhook_timeout: float = 10.0
    webhook_max_attempts: int = 10
    upstream_forward_days: int = 3

    @classmethod
    def from_env(cls) -> WorkflowSettings:
        policy = os.environ.get("EXCHANGE_REVIEW_TIMEOUT_POLICY", "reject").strip().lower()
        if policy not in POLICIES:
            raise BadInput(
                f"EXCHANGE_REVIEW_TIMEOUT_POLICY={policy!r}: expected one of {', '.join(POLICIES)}"
            )
        try:
            timeout = float(os.environ.get("EXCHANGE_WEBHOOK_TIMEOUT", "10"))
            attempts = int(os.environ.get("EXCHANGE_WEBHOOK_MAX_ATTEMPTS", "10"))
        except ValueError as exc:
            raise BadInput(f"webhook setting: {exc}") from None
        forward = os.environ.get("EXCHANGE_UPSTREAM_FORWARD_DAYS", "3").strip()
        if not forward.isdigit() or not 1 <= int(forward) <= MAX_FORWARD_DAYS:
            raise BadInput(
                f"EXCHANGE_UPSTREAM_FORWARD_DAYS={forward!r}: expected working days, "
                f"1 to {MAX_FORWARD_DAYS}"
            )
        return cls(
            policy,
            os.environ.get("EXCHANGE_WEBHOOK_URL") or None,
            timeout,
            attempts,
            int(forward),
        )
