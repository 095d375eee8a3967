"""What a connector needs to know of a column: its name and logical type, nothing else.

Connectors stand on the kernel only, never on the catalog. ``Column`` is the shape they read;
the catalog's ``Field`` (and anything else with these attributes) satisfies it structurally,
so callers pass their own objects in. ``ColumnSpec`` is a plain implementation, for callers
and tests that have no catalog at hand.

The logical types are ``exchange.kernel.kinds.LOGICAL_TYPES``; ``length`` sizes ``varchar``
and ``char`` (in characters), ``precision`` and ``scale`` size ``decimal``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class Column(Protocol):
    """A typed column, read-only (frozen dataclasses and named tuples satisfy it)."""

    @property
    def name(self) -> str: ...

    @property
    def type(self) -> str: ...

    @property
    def nullable(self) -> bool: ...

    @property
    def length(self) -> int | None: ...

    @property
    def precision(self) -> int | None: ...

    @property
    def scale(self) -> int | None: ...


@dataclass(frozen=True)
class ColumnSpec:
    """A column given directly: ``ColumnSpec("name", "varchar", length=100)``."""

    name: str
    type: str
    nullable: bool = True
    length: int | None = None
    precision: int | None = None
    scale: int | None = None
