"""What a command loads before it does anything: the CLI's start imports no engine library, a
store already at its latest migration is opened without Alembic, and a run's path never
imports pandas (issue 17: start-up). Checked by what each process imported, never by time;
the times are bench/startup.py's."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from alembic import command
from alembic.script import ScriptDirectory

from exchange import audit
from exchange.demo.run import create_provider
from exchange.flow import run_resource
from exchange.kernel.settings import Settings
from exchange.status import SubscriberStatus, subscriber_status
from exchange.store import Store
from exchange.store.db import _alembic_config, create_store_engine, declared_heads, upgrade
from exchange.workflow.grants import add_subscription
from exchange.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]
#: What the CLI must not load to start, nor to show its help.
HEAVY = {"pyarrow", "pandas", "sqlalchemy", "alembic", "adbc_driver_manager"}
HEAVY_PREFIXES = ("adbc_driver_",)


def loaded_after(code: str, home: Path | None = None) -> set[str]:
    """The top-level packages a fresh interpreter holds after running ``code`` (which may
    call the CLI), in the environment of a user working in ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_")}
    if home is not None:
        env |= {"EXCHANGE_HOME": str(home), "EXCHANGE_CATALOG": str(home / "c.yaml")}
    probe = (
        "import sys\n"
        f"{code}\n"
        "print('\\n' + __import__('json').dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env=env,
        cwd=home or REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def cli(args: list[str]) -> str:
    """Code that runs ``exchange ARGS`` in the probing process and requires exit status 0."""
    return (
        "from exchange.cli.app import app\n"
        "try:\n"
        f"    app({args!r}, prog_name='exchange')\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
    )


def heavy(modules: set[str]) -> set[str]:
    return {m for m in modules if m in HEAVY or m.startswith(HEAVY_PREFIXES)}


def exchange(home: Path, *args: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_")}
    env |= {"EXCHANGE_HOME": str(home), "EXCHANGE_CATALOG": str(home / "c.yaml")}
    out = subprocess.run(
        [sys.executable, "-m", "exchange", *args],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def demo_home(tmp_path: Path, rows: int = 300) -> Path:
    """The demo catalog over a provider of ``rows`` rows, with one table subscription."""
    doc = yaml.safe_load((REPO / "schemas/examples/demo.yaml").read_text("utf-8"))
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True), "utf-8")
    create_provider(tmp_path / "provider.db", rows)
    until = dt.date.today() + dt.timedelta(days=365)
    exchange(
        tmp_path, "subscription", "add", "410400-SCJG-0001", "--node", "tax_fe",
        "--department", "SWJ", "--fields", "id,uscc,name", "--until", str(until),
    )  # fmt: skip
    return tmp_path


def test_importing_the_cli_loads_no_engine_library() -> None:
    assert heavy(loaded_after("import exchange.cli.app")) == set()


def test_the_help_loads_no_engine_library() -> None:
    assert heavy(loaded_after(cli(["--help"]))) == set()
    assert heavy(loaded_after(cli(["run", "--help"]))) == set()


def test_status_on_a_store_at_head_loads_neither_alembic_nor_pyarrow(tmp_path: Path) -> None:
    home = demo_home(tmp_path)

    loaded = loaded_after(cli(["status"]), home)

    assert "sqlalchemy" in loaded  # it reads the store
    assert {"alembic", "pyarrow", "pandas", "cryptography"} & loaded == set()  # it signs nothing


def test_a_run_with_nothing_new_imports_neither_pandas_nor_alembic(tmp_path: Path) -> None:
    home = demo_home(tmp_path)
    exchange(home, "run", "410400-SCJG-0001")  # the first, full run

    loaded = loaded_after(cli(["run", "410400-SCJG-0001"]), home)

    assert "pyarrow" in loaded  # it read the source and validated what it read
    assert {"pandas", "alembic"} & loaded == set()


def test_pyarrow_told_pandas_is_absent_still_converts_to_pandas_when_asked() -> None:
    loaded = loaded_after(
        "from exchange.workspace import arrow_without_pandas\n"
        "arrow_without_pandas()\n"
        "import pyarrow as pa, pyarrow.dataset\n"
        "table = pa.table({'n': [1, None], 's': ['a', 'b']})\n"
        "assert 'pandas' not in sys.modules\n"
        "frame = table.to_pandas()\n"
        "assert list(frame['s']) == ['a', 'b'] and pa.Table.from_pandas(frame).num_rows == 2\n"
    )
    assert "pandas" in loaded  # imported by to_pandas, the first call that needed it


def test_the_migration_heads_read_from_the_files_are_alembics() -> None:
    heads = ScriptDirectory.from_config(_alembic_config(sa.create_engine("sqlite://"))).get_heads()

    assert declared_heads() == set(heads)


def test_a_store_behind_its_latest_migration_is_brought_to_head(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_store_engine(url)
    command.upgrade(_alembic_config(engine), "0001")
    engine.dispose()

    store = Store(url)
    try:
        with store.engine.connect() as conn:
            stored = set(conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars())
        assert stored == declared_heads()
        assert upgrade(store.engine) is False  # at head: nothing more to apply
    finally:
        store.close()


def test_a_new_store_is_created_at_head(tmp_path: Path) -> None:
    engine = create_store_engine(f"sqlite:///{tmp_path / 'new.db'}")
    try:
        assert upgrade(engine) is True
        assert upgrade(engine) is False
    finally:
        engine.dispose()


def test_a_command_line_builds_only_the_group_it_names(capsys: pytest.CaptureFixture[str]) -> None:
    import typer

    from exchange.cli.app import app

    root: Any = typer.main.get_command(app)
    pending = set(root.commands.pending)
    assert {"subscription", "quality", "db"} <= pending  # none of their commands built yet

    root.main(["--help"], prog_name="exchange", standalone_mode=False)

    assert "subscription" in capsys.readouterr().out
    assert set(root.commands.pending) == pending  # the root's help lists them unbuilt
    db = root.get_command(root.context_class(root), "db")
    assert "upgrade" in db.commands
    assert set(root.commands.pending) == pending - {"db"}


def test_status_takes_as_many_queries_whatever_the_number_of_subscriptions(
    tmp_path: Path,
) -> None:
    doc = yaml.safe_load((REPO / "schemas/examples/demo.yaml").read_text("utf-8"))
    create_provider(tmp_path / "provider.db", 50)
    catalog = tmp_path / "c.yaml"
    catalog.write_text(yaml.safe_dump(doc, allow_unicode=True), "utf-8")
    until = dt.date.today() + dt.timedelta(days=365)
    settings = Settings(home=tmp_path, db_url=f"sqlite:///{tmp_path / 'exchange.db'}")
    with Workspace.open(catalog, settings) as ws:

        def queries() -> tuple[int, list[SubscriberStatus]]:
            sent: list[str] = []
            caller = threading.get_ident()

            def seen(*args: Any) -> None:
                if threading.get_ident() == caller:
                    sent.append(args[2])

            audit.settle(ws.store)
            sa.event.listen(ws.store.engine, "before_cursor_execute", seen)
            try:
                shown = subscriber_status(ws)
            finally:
                sa.event.remove(ws.store.engine, "before_cursor_execute", seen)
            return len(sent), shown

        dept = {"tax_fe": "SWJ", "hrss_fe": "RSJ"}
        add_subscription(ws, "410400-SCJG-0001", "tax_fe", ["id"], until, department="SWJ")
        run_resource(ws, "410400-SCJG-0001")
        one, shown = queries()
        for node, table in (("tax_fe", "e2"), ("hrss_fe", "e3"), ("hrss_fe", "e4")):
            add_subscription(
                ws, "410400-SCJG-0001", node, ["id"], until, target_table=table,
                department=dept[node],
            )  # fmt: skip
        run_resource(ws, "410400-SCJG-0001", full=True)
        four, shown = queries()

    assert one == four
    assert [(s.table, s.rows_delivered > 0, s.last_error) for s in shown] == [
        ("enterprise", True, None), ("e2", True, None), ("e3", True, None), ("e4", True, None),
    ]  # fmt: skip
    assert all(s.last_delivery is not None and s.watermark for s in shown)


def test_heads_the_files_do_not_state_plainly_are_left_to_alembic(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text('revision = "a"\ndown_revision = None\n')
    (tmp_path / "b.py").write_text('revision: str = "b"  # the next\ndown_revision = "a"\n')
    (tmp_path / "c.py").write_text('revision = "c"\ndown_revision = "a"\n')
    assert declared_heads(tmp_path) == {"b", "c"}

    (tmp_path / "d.py").write_text('revision = "d"\ndown_revision = (\n    "b",\n    "c",\n)\n')
    assert declared_heads(tmp_path) is None
