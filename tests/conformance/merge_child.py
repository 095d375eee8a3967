"""A delivery in a process of its own, for the crash tests to kill at a crash point.

``python -m tests.conformance.merge_child TABLE ROWS RUN_ID incremental|snapshot`` delivers
the rows ``frontend.ROWS`` into ``frontend.TABLE`` of the database at ``$CONFORMANCE_URL``;
``$EXCHANGE_CRASH_AT`` says where the process dies (SIGKILL, no cleanup).
"""

from __future__ import annotations

import os
import sys

from tests.conformance import frontend


def main(argv: list[str]) -> int:
    table, rows, run_id, mode = argv
    database = frontend.FrontEndDatabase(os.environ["CONFORMANCE_URL"])
    database.deliver(
        getattr(frontend, table),
        getattr(frontend, rows),
        run_id=run_id,
        delete_missing=mode == "snapshot",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
