"""The demo's folder resource: annual-report attachments (年报附件) moved between local
directories standing in for the departments' FTP/SFTP front-end directories.

A first run delivers the whole tree to two requesters; then the provider replaces one file,
adds one and deletes one, and the second run moves only those (mirror mode deletes too).
Each requester's directory is then compared with the provider's, file by file (sha256).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from exchange.flow import QuietReporter, run_resource
from exchange.runs.record import RunSummary
from exchange.runs.results import DeliveryResult
from exchange.workflow.grants import add_subscription
from exchange.workspace import Workspace

FOLDER_RESOURCE = "410400-SCJG-0002"
SOURCE = Path("files/market/out/annual_reports")
TARGETS = {"tax_files": Path("files/tax"), "hrss_files": Path("files/hrss")}
TARGET_DIR = "in/annual_reports"


class _Collect(QuietReporter):
    def __init__(self) -> None:
        self.results: list[DeliveryResult] = []

    def delivered(self, result: DeliveryResult) -> None:
        self.results.append(result)


@dataclass
class FolderDemo:
    runs: list[tuple[str, RunSummary, list[DeliveryResult], float]] = field(default_factory=list)
    verified: dict[str, bool] = field(default_factory=dict)
    files: int = 0


def _tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _write(path: Path, rng: random.Random, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(rng.randbytes(size))


def run_folder_demo(
    ws: Workspace, home: Path, until: dt.date, say: Callable[[str], None] = print
) -> FolderDemo:
    """Create the provider's folder, subscribe both requesters, run, change, run, verify."""
    rng = random.Random(2026)
    src = home / SOURCE
    for year in (2024, 2025):
        for i in range(1, 6):
            _write(src / str(year) / f"report_{i:03d}.pdf", rng, rng.randint(20_000, 200_000))
    _write(src / "index.xlsx", rng, 12_000)
    for node in TARGETS:
        (home / TARGETS[node]).mkdir(parents=True, exist_ok=True)
        add_subscription(
            ws, FOLDER_RESOURCE, node, [], until, target_dir=TARGET_DIR,
            department=ws.catalog.node(node).department,
        )  # fmt: skip
    demo = FolderDemo(files=len(_tree(src)))
    say(f"Created {demo.files} annual-report files in {src}")

    def run(label: str) -> None:
        rep = _Collect()
        t0 = time.perf_counter()
        summary = run_resource(ws, FOLDER_RESOURCE, reporter=rep)
        demo.runs.append((label, summary, rep.results, time.perf_counter() - t0))

    run("full")
    _write(src / "2025" / "report_003.pdf", rng, 150_000)  # replaced
    _write(src / "2025" / "report_006.pdf", rng, 90_000)  # added
    (src / "2024" / "report_001.pdf").unlink()  # withdrawn: mirrored
    say("Replaced 1 file, added 1 and deleted 1 in the provider's folder")
    run("incremental")
    want = _tree(src)
    for node, root in TARGETS.items():
        demo.verified[node] = _tree(home / root / TARGET_DIR) == want
    return demo
