"""Exactly once for files across crashes: ``exchange run`` of a folder resource runs in a real
subprocess, is killed with SIGKILL mid-download, between files, mid-upload, after the rename
but before the ledger and after a file's ledger entry; then it is run again. Every subscriber
then holds every file byte for byte, each file version is in the ledger once per subscriber,
no temporary file is left and nothing was sent twice that had already arrived."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import signal
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import catalog_yaml
from tests.conftest import run_exchange as exchange
from tests.servers.sftp import SFTPTestServer

CODE = "410400-SCJG-0003"
FOLDER = f"""\
- code: "{CODE}"
  name: 营业执照扫描件
  kind: folder
  provider: market
  share: unconditional
  files: {{path: out, recursive: true, mirror: true}}
"""
CRASH_POINTS = [
    "download:chunk",  # the pull killed inside a file: a partial staged file is continued
    "pull:file",  # between two pulled files
    "pull:done",
    "upload:chunk",  # killed inside an upload: the .exchange-part is continued
    "push:renamed@tax_sftp",  # in place at the subscriber, not yet in the ledger
    "push:file@tax_sftp",  # in the ledger, the next file not started
]


@pytest.mark.parametrize("crash_at", CRASH_POINTS)
def test_a_file_run_killed_anywhere_is_repaired_by_running_again(
    crash_at: str, tmp_path: Path
) -> None:
    with (
        SFTPTestServer(tmp_path / "provider") as provider,
        SFTPTestServer(tmp_path / "subscriber") as subscriber,
    ):
        (subscriber.root / "tax").mkdir()
        files = {
            "a/big.bin": os.urandom(3_000_000),
            "b.pdf": os.urandom(200_000),
            "c.txt": "企业名称,统一社会信用代码\n".encode(),
        }
        for rel, data in files.items():
            path = provider.root / "out" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        (tmp_path / "known_hosts").write_text(
            provider.known_hosts_line() + "\n" + subscriber.known_hosts_line() + "\n"
        )
        env = {"T_MARKET": provider.url(""), "T_TAX": subscriber.url("tax")}
        (tmp_path / "catalog.yaml").write_text(
            catalog_yaml(
                {
                    "market": ("sftp", "{env: T_MARKET}"),
                    "tax_sftp": ("sftp", "{env: T_TAX}"),
                    "stats_local": ("local", "{path: stats}"),
                },
                FOLDER,
            ),
            encoding="utf-8",
        )
        until = (dt.date.today() + dt.timedelta(days=100)).isoformat()
        for node in ("tax_sftp", "stats_local"):
            exchange(tmp_path, env, "subscription", "add", CODE, "--node", node,
                     "--dir", "in", "--until", until)  # fmt: skip

        assert exchange(tmp_path, env, "run", CODE, crash_at=crash_at) == -signal.SIGKILL
        assert exchange(tmp_path, env, "run", CODE) == 0

        for root in (subscriber.root / "tax/in", tmp_path / "stats/in"):
            got = {
                p.relative_to(root).as_posix(): p.read_bytes()
                for p in root.rglob("*")
                if p.is_file()
            }
            assert got == files, root  # every file, whole, and no .exchange-part left
        # Read and sent once: what arrived before the kill is continued, never sent again
        # (only reads already in flight when the pull was killed may be read twice).
        total = sum(len(d) for d in files.values())
        assert subscriber.bytes_written == total
        if crash_at == "download:chunk":
            assert total <= provider.bytes_read <= total + len(files["a/big.bin"])
        else:
            assert provider.bytes_read == total

        engine = sa.create_engine(f"sqlite:///{tmp_path / 'exchange.db'}")
        with engine.connect() as c:
            rows = c.execute(
                sa.text(
                    "SELECT subscription_id, path, sha256 FROM file_deliveries "
                    "WHERE status = 'delivered' AND action = 'put'"
                )
            ).all()
        engine.dispose()
        once = Counter(rows)
        assert sorted(once.values()) == [1] * 6, once  # 3 files x 2 subscribers, each once
        assert {(p, s) for _, p, s in rows} == {
            (p, hashlib.sha256(d).hexdigest()) for p, d in files.items()
        }

        # Nothing new at the source: nothing moves on the next run.
        written = subscriber.bytes_written
        assert exchange(tmp_path, env, "run", CODE) == 0
        assert subscriber.bytes_written == written
