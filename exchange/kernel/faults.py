"""Crash points: named places where a test can make the process die (SIGKILL) on purpose.

``EXCHANGE_CRASH_AT=extract:done`` kills the process the first time it passes that point
(``merge:upserted@tax_fe``: only while merging into that node), so
the exactly-once tests can prove that re-running repairs every crash. Unset, this costs one
dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "EXCHANGE_CRASH_AT"


def crashpoint(name: str, where: str | None = None) -> None:
    """Die here, without cleanup, if the environment asks for ``name`` or ``name@where``."""
    wanted = os.environ.get(ENV)
    if wanted is not None and (wanted == name or wanted == f"{name}@{where}"):
        os.kill(os.getpid(), signal.SIGKILL)
