"""Streaming copies hash and write on a thread of their own; what that thread hits is not lost."""

from __future__ import annotations

import hashlib
import io

import pytest

from connectors.files import ConnectionLost
from connectors.files.transfer import Digesting


class FullDisk(io.BytesIO):
    def write(self, data: object) -> int:
        raise OSError(28, "No space left on device")


def test_every_chunk_put_is_written_and_hashed_in_order() -> None:
    out, sha = io.BytesIO(), hashlib.sha256()
    chunks = [bytes([i]) * (1000 + i) for i in range(50)]
    with Digesting(out, sha, None, depth=2) as sink:
        for c in chunks:
            sink.put(c)
    assert out.getvalue() == b"".join(chunks)
    assert sha.hexdigest() == hashlib.sha256(b"".join(chunks)).hexdigest()


def test_a_write_error_wins_over_the_callers_lost_connection() -> None:
    # The caller has counted bytes the file never got: retrying from there would leave a hole,
    # so the write error (not retried) must surface, not the retriable ConnectionLost.
    with pytest.raises(OSError, match="No space left"), Digesting(FullDisk()) as sink:
        sink.put(b"x" * 10)
        raise ConnectionLost("node 'n' path 'a': connection lost")
