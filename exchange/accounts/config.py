"""Account settings, read from the environment.

* ``EXCHANGE_ACCOUNT_ANSWER_DAYS``: working days the platform has to answer an account
  application (default 2: the platform answers within two working days), 1 to 30.
* ``EXCHANGE_ACCOUNT_CONSENT_DAYS``: working days a supervising department has to consent to
  its unit's application (default 2), 1 to 30.
* ``EXCHANGE_SUPERVISOR_ACTS_FOR_UNITS``: ``true`` lets a supervising department's users act
  for its units (apply, reset on their behalf; every such act records both departments);
  ``false`` (default): each department acts for itself, its supervisor only consents.
* ``EXCHANGE_CREDENTIAL_MAX_AGE_DAYS``: calendar days after which an issued credential
  (platform, database, FTP) is due for rotation: the account tick reminds the department's
  contact once per such period (default 90), 1 to 3650.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from exchange.kernel.errors import BadInput

MAX_DAYS = 30
MAX_AGE_DAYS = 3650


def _days(name: str, default: int) -> int:
    text = os.environ.get(name, str(default)).strip()
    if not text.isdigit() or not 1 <= int(text) <= MAX_DAYS:
        raise BadInput(f"{name}={text!r}: expected working days, 1 to {MAX_DAYS}")
    return int(text)


def _flag(name: str) -> bool:
    text = os.environ.get(name, "false").strip().lower()
    if text not in ("true", "false", "1", "0", "yes", "no"):
        raise BadInput(f"{name}={text!r}: expected true or false")
    return text in ("true", "1", "yes")


def _age(name: str, default: int) -> int:
    text = os.environ.get(name, str(default)).strip()
    if not text.isdigit() or not 1 <= int(text) <= MAX_AGE_DAYS:
        raise BadInput(f"{name}={text!r}: expected calendar days, 1 to {MAX_AGE_DAYS}")
    return int(text)


@dataclass(frozen=True)
class AccountSettings:
    answer_days: int = 2
    consent_days: int = 2
    supervisor_acts_for_units: bool = False
    credential_max_age_days: int = 90

    @classmethod
    def from_env(cls) -> AccountSettings:
        return cls(
            _days("EXCHANGE_ACCOUNT_ANSWER_DAYS", 2),
            _days("EXCHANGE_ACCOUNT_CONSENT_DAYS", 2),
            _flag("EXCHANGE_SUPERVISOR_ACTS_FOR_UNITS"),
            _age("EXCHANGE_CREDENTIAL_MAX_AGE_DAYS", 90),
        )
