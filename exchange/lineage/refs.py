"""What the lineage package hands other layers: datasets as OpenLineage names them, and a
run's inputs and outputs (no import of the OpenLineage client here)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DatasetRef:
    """One dataset as OpenLineage names it (no credential in either part)."""

    namespace: str
    name: str


@dataclass(frozen=True)
class RunDatasets:
    """What a run reads (the provider's dataset) and writes (one dataset per subscriber, in
    the plan's order); ``targets`` names each subscription's own (the load of one subscriber
    reports exactly its target, whatever the order)."""

    inputs: list[DatasetRef]
    outputs: list[DatasetRef]
    targets: dict[int, DatasetRef] = field(default_factory=dict)
