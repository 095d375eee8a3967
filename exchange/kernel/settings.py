"""Where the engine keeps its state: one home directory and one metadata-store URL."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    """Read from the environment once; every default is embedded (no server needed)."""

    home: Path
    db_url: str

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @classmethod
    def from_env(cls) -> Settings:
        home = Path(os.environ.get("EXCHANGE_HOME", ".exchange")).resolve()
        db_url = os.environ.get("EXCHANGE_DB_URL") or f"sqlite:///{home / 'exchange.db'}"
        return cls(home=home, db_url=db_url)
