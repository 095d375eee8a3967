"""Whether OpenLineage is on: configured the standard way and not disabled. Light on purpose
(no import of the OpenLineage client): every run asks, and lineage is off by default."""

from __future__ import annotations

import os
from pathlib import Path

CONFIG_ENV = ("OPENLINEAGE_URL", "OPENLINEAGE_CONFIG")
DYNAMIC = "OPENLINEAGE__"


def configured() -> bool:
    """Whether lineage is on: configured the standard way and not disabled."""
    if os.environ.get("OPENLINEAGE_DISABLED", "").strip().lower() == "true":
        return False
    if any(os.environ.get(name) for name in CONFIG_ENV):
        return True
    if any(k.startswith(DYNAMIC + "TRANSPORT__") for k in os.environ):
        return True
    home_file = Path(os.path.expanduser("~/.openlineage")) / "openlineage.yml"
    return Path("openlineage.yml").is_file() or home_file.is_file()
