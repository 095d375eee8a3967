"""JSON Schemas for the declarative files (catalogs) and example catalogs."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any


def load_schema(name: str = "catalog.schema.json") -> dict[str, Any]:
    """Return a JSON Schema shipped in this package."""
    text = resources.files(__package__).joinpath(name).read_text(encoding="utf-8")
    return json.loads(text)
