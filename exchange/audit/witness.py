"""The witness: an append-only JSON-lines file outside the store holding every checkpoint.

Someone who rewrites the store (and re-chains it) must also rewrite this file, kept on another
path (``$EXCHANGE_AUDIT_WITNESS``, another disk or a mounted remote, ideally append-only to the
engine's user). Each line is written whole with O_APPEND under an exclusive flock and fsync'd
before the store marks its checkpoint witnessed.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

from exchange.kernel.errors import BadInput
from exchange.kernel.modes import private_dirs


def append_line(path: Path, doc: dict[str, Any]) -> None:
    """Append ``doc`` as one line, durably (on disk when this returns)."""
    data = json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\n"
    private_dirs(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _repair_torn_tail(fd)
        os.write(fd, data.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)  # releases the flock


def _repair_torn_tail(fd: int) -> None:
    """A writer killed mid-line leaves a line without its newline: end it, so that the next
    line is whole (the torn one is reported by ``read_witness`` as unreadable)."""
    size = os.fstat(fd).st_size
    if size and os.pread(fd, 1, size - 1) != b"\n":
        os.write(fd, b"\n")


def read_witness(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """Every line of the witness as (line number from 1, its object); a missing file holds
    none. A line that is not a JSON object is refused, naming its number."""
    if not path.exists():
        return []
    found: list[tuple[int, dict[str, Any]]] = []
    with open(path, encoding="utf-8") as f:
        for number, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                doc = json.loads(text)
            except json.JSONDecodeError as exc:
                raise BadInput(f"{path} line {number} is not JSON: {exc.msg}") from None
            if not isinstance(doc, dict):
                raise BadInput(f"{path} line {number} is not a JSON object")
            found.append((number, doc))
    return found


def signatures(path: Path) -> set[str]:
    """The signatures the witness holds (to tell which checkpoints it already has)."""
    found: set[str] = set()
    for _, doc in _lenient(path):
        sig = doc.get("signature")
        if isinstance(sig, str):
            found.add(sig)
    return found


def _lenient(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """Like ``read_witness`` but skipping unreadable lines: the sealer must go on writing."""
    if not path.exists():
        return []
    found: list[tuple[int, dict[str, Any]]] = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, text in enumerate(f, start=1):
            try:
                doc = json.loads(text)
            except json.JSONDecodeError:
                continue
            if isinstance(doc, dict):
                found.append((number, doc))
    return found
