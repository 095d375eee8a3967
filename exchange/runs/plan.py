"""A run's plan, typed: what ``plan.json`` holds, for every resource kind.

The planner of each kind builds a ``Plan``; every later step reads it back through the run's
handle (``exchange.runs.handle``) instead of indexing a dict. The JSON keys are the ones the
engine has always written, so runs planned by an earlier version resume.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from exchange.kernel.errors import NotFound


@dataclass(frozen=True)
class TableDelivery:
    """Rows for one subscriber's table: its granted fields past its own watermark."""

    subscription_id: int
    node: str
    table: str
    fields: tuple[str, ...]
    schema: str | None = None
    since: str | None = None  # the subscriber's watermark (None: everything)
    delete_missing: bool = False  # snapshot mode and --full: reconcile deletes
    kind: Literal["table"] = "table"

    @property
    def target(self) -> str:
        """How reports name where it lands: ``node.table``."""
        return f"{self.node}.{self.table}"


@dataclass(frozen=True)
class FolderDelivery:
    """Files for one subscriber's directory on its file node."""

    subscription_id: int
    node: str
    dir: str  # relative to the node's base directory ("" is the base itself)
    kind: Literal["files"] = "files"

    @property
    def table(self) -> str:
        """What reports show in the node.table column: ``/dir``."""
        return "/" + self.dir

    @property
    def target(self) -> str:
        return f"{self.node}:{self.table}"


Delivery = TableDelivery | FolderDelivery


@dataclass(frozen=True)
class PlannedFile:
    """A file to pull once, and the subscribers it goes to."""

    path: str  # relative to the resource's root
    source: str  # node-relative path on the provider
    size: int
    mtime: float
    subscribers: tuple[int, ...]


@dataclass(frozen=True)
class PlannedDelete:
    """A file gone from the provider (mirror mode), to delete at the subscribers holding it."""

    path: str
    subscribers: tuple[int, ...]


@dataclass(frozen=True)
class PlannedRange:
    """One key range of a split full extract: ``low`` <= key < ``high`` (encoded as
    watermarks are; None: open on that side). The first range also takes NULL keys."""

    low: str | None
    high: str | None


@dataclass(frozen=True)
class Plan:
    """What one run does: from which cursor to extract (tables) or which files to move, and
    to whom."""

    run_id: str
    resource: str
    full: bool
    deliveries: tuple[Delivery, ...]
    mode: str = "snapshot"  # incremental | snapshot | files
    since: str | None = None  # lowest watermark among the subscribers (tables)
    cursor_lag: str | int = 0  # the resource's look-back window when planned (tables)
    files: tuple[PlannedFile, ...] = ()
    deletes: tuple[PlannedDelete, ...] = ()
    waiting_for_marker: tuple[str, ...] = ()
    kind: Literal["table", "files"] = "table"
    #: A split full extract: the key column and its ranges, fixed at the plan so a resumed
    #: run cuts the same ones (none: one extract, one load per subscriber).
    split_by: str | None = None
    ranges: tuple[PlannedRange, ...] = ()

    @property
    def split(self) -> bool:
        return bool(self.ranges)

    @property
    def subscription_ids(self) -> list[int]:
        return [d.subscription_id for d in self.deliveries]

    @property
    def nodes(self) -> list[str]:
        return [d.node for d in self.deliveries]

    def delivery(self, subscription_id: int) -> Delivery:
        for d in self.deliveries:
            if d.subscription_id == subscription_id:
                return d
        raise NotFound(f"subscription {subscription_id} is not in run {self.run_id}'s plan")

    def tables(self) -> list[TableDelivery]:
        return [d for d in self.deliveries if isinstance(d, TableDelivery)]

    def folder_deliveries(self) -> list[FolderDelivery]:
        return [d for d in self.deliveries if isinstance(d, FolderDelivery)]

    def files_for(self, subscription_id: int) -> list[PlannedFile]:
        return [f for f in self.files if subscription_id in f.subscribers]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Plan:
        return cls(
            run_id=doc["run_id"],
            resource=doc["resource"],
            full=bool(doc.get("full", False)),
            deliveries=tuple(_delivery(d) for d in doc["deliveries"]),
            mode=doc.get("mode", "snapshot"),
            since=doc.get("since"),
            cursor_lag=doc.get("cursor_lag", 0),
            files=tuple(
                PlannedFile(f["path"], f["source"], f["size"], f["mtime"], tuple(f["subscribers"]))
                for f in doc.get("files", ())
            ),
            deletes=tuple(
                PlannedDelete(x["path"], tuple(x["subscribers"])) for x in doc.get("deletes", ())
            ),
            waiting_for_marker=tuple(doc.get("waiting_for_marker", ())),
            kind="files" if doc.get("kind") == "files" else "table",
            split_by=doc.get("split_by"),
            ranges=tuple(PlannedRange(r["low"], r["high"]) for r in doc.get("ranges", ())),
        )


def _delivery(d: dict[str, Any]) -> Delivery:
    if d.get("kind") == "files":
        return FolderDelivery(d["subscription_id"], d["node"], d.get("dir", ""))
    return TableDelivery(
        subscription_id=d["subscription_id"],
        node=d["node"],
        table=d["table"],
        fields=tuple(d["fields"]),
        schema=d.get("schema"),
        since=d.get("since"),
        delete_missing=bool(d.get("delete_missing", False)),
    )
