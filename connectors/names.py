"""What a table, schema or column name may be: a plain identifier (quoted by the dialect on top
of this). Its own module, light on purpose: the workflow checks names in every application
without loading the connectors' pyarrow and drivers (``connectors.base`` re-exports both)."""

from __future__ import annotations

import re

from exchange.kernel.errors import BadInput

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def check_identifier(name: str, what: str = "identifier") -> str:
    """Refuse anything but a plain identifier; it is quoted by the dialect on top of this."""
    if not isinstance(name, str) or not IDENTIFIER.fullmatch(name):
        raise BadInput(f"{what} {name!r} is not a valid identifier ({IDENTIFIER.pattern})")
    return name
