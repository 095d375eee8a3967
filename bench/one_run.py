"""One exchange run in a fresh process, for the benchmark: prints seconds and peak RSS as JSON.

The clock starts after the imports (interpreter start-up is not the engine's work) and stops
when the run is recorded. Peak RSS is the whole process's, imports included.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

from exchange.flow import run_resource
from exchange.kernel.settings import Settings
from exchange.workspace import Workspace


def main() -> None:
    home, catalog, code = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    full = "--full" in sys.argv[4:]
    ws = Workspace.open(catalog, Settings(home=home, db_url=f"sqlite:///{home / 'exchange.db'}"))
    started = time.perf_counter()
    summary = run_resource(ws, code, full=full)
    seconds = time.perf_counter() - started
    ws.close()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_mb": peak_mb,
                "status": summary.status,
                "extracted": summary.extracted,
                "failures": summary.failures,
            }
        )
    )


if __name__ == "__main__":
    main()
