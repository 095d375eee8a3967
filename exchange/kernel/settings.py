"""Where the engine keeps its state: one home directory and one metadata-store URL, and how
long a finished run's staging directory is kept (``EXCHANGE_RETENTION``)."""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass
from pathlib import Path

from exchange.kernel.errors import BadInput

#: How long a finished run's staging directory is kept before ``exchange prune`` removes it.
DEFAULT_RETENTION = dt.timedelta(days=7)
_DURATION = re.compile(r"^\s*(\d+)\s*([dh])\s*$")
_UNITS = {"d": "days", "h": "hours"}
#: The longest retention taken: a hundred years (a longer one overflows a date, or means keep).
MAX_RETENTION = dt.timedelta(days=36_500)


def parse_retention(text: str, where: str = "EXCHANGE_RETENTION") -> dt.timedelta:
    """``7d`` or ``36h`` as a duration; anything else is bad input naming ``where``."""
    match = _DURATION.fullmatch(text.lower())
    if match is None:
        raise BadInput(
            f"{where}: {text!r} is not a retention period; write days or hours, e.g. 7d or 36h"
        )
    amount, unit = int(match.group(1)), match.group(2)
    if amount > MAX_RETENTION / dt.timedelta(**{_UNITS[unit]: 1}):
        raise BadInput(
            f"{where}: {text!r} is longer than the longest retention period, "
            f"{MAX_RETENTION.days}d (100 years)"
        )
    return dt.timedelta(**{_UNITS[unit]: amount})


@dataclass(frozen=True)
class Settings:
    """Read from the environment once; every default is embedded (no server needed)."""

    home: Path
    db_url: str
    retention: dt.timedelta = DEFAULT_RETENTION

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @classmethod
    def from_env(cls) -> Settings:
        home = Path(os.environ.get("EXCHANGE_HOME", ".exchange")).resolve()
        db_url = os.environ.get("EXCHANGE_DB_URL") or f"sqlite:///{home / 'exchange.db'}"
        given = os.environ.get("EXCHANGE_RETENTION")
        retention = parse_retention(given) if given else DEFAULT_RETENTION
        return cls(home=home, db_url=db_url, retention=retention)
