"""Fixtures that build real databases: PostgreSQL and MariaDB on 127.0.0.1, SQLite files.

A test that needs a server it cannot reach fails under CI=true and is skipped elsewhere,
with the reason.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest

from exchange.kernel.settings import Settings
from exchange.workspace import Workspace

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
MARIADB = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}


def _unreachable(what: str, exc: Exception) -> None:
    reason = f"{what} is not reachable on 127.0.0.1: {exc}"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database; yields its SQLAlchemy URL and drops it afterwards."""
    name = f"exch_test_{secrets.token_hex(4)}"
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        _unreachable("PostgreSQL", exc)
    with admin:
        admin.execute(f"CREATE DATABASE \"{name}\" ENCODING 'UTF8' TEMPLATE template0")
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def mariadb_database() -> Iterator[str]:
    """A fresh MariaDB database (utf8mb4); yields its URL and drops it afterwards."""
    name = f"exch_test_{secrets.token_hex(4)}"
    try:
        admin = pymysql.connect(**MARIADB, connect_timeout=3, autocommit=True)
    except pymysql.err.OperationalError as exc:
        _unreachable("MariaDB", exc)
    with admin:
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        try:
            yield f"mysql+pymysql://root@127.0.0.1:3306/{name}"
        finally:
            with admin.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")


def catalog_yaml(nodes: dict[str, tuple[str, str]], resource: str) -> str:
    """A catalog with ``nodes`` (name -> (kind, connection yaml)) and one resource block."""
    lines = ["version: 1", "nodes:"]
    for name, (kind, conn) in nodes.items():
        lines += [f"  - name: {name}", f"    kind: {kind}", f"    connection: {conn}"]
    return "\n".join(lines) + "\nresources:\n" + textwrap.indent(textwrap.dedent(resource), "  ")


def run_exchange(home: Path, env: dict[str, str], *args: str, crash_at: str | None = None) -> int:
    """``exchange ARGS --catalog HOME/catalog.yaml`` in a subprocess, killed at ``crash_at``
    (``EXCHANGE_CRASH_AT``) if given; its exit status (0, or -SIGKILL when killed)."""
    run_env = {**os.environ, **env, "EXCHANGE_HOME": str(home)}
    run_env.pop("EXCHANGE_CRASH_AT", None)
    run_env.pop("EXCHANGE_DB_URL", None)  # the store is $EXCHANGE_HOME/exchange.db
    if crash_at:
        run_env["EXCHANGE_CRASH_AT"] = crash_at
    proc = subprocess.run(
        [sys.executable, "-m", "exchange", *args, "--catalog", str(home / "catalog.yaml")],
        env=run_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"exchange {args} exited {proc.returncode}:\n{proc.stderr}")
    return proc.returncode


@pytest.fixture
def make_workspace(tmp_path: Path) -> Iterator[Callable[[str], Workspace]]:
    """Write a catalog into a temporary home and open a workspace on a fresh SQLite store."""
    opened: list[Workspace] = []

    def make(catalog_text: str) -> Workspace:
        path = tmp_path / "catalog.yaml"
        path.write_text(catalog_text, encoding="utf-8")
        ws = Workspace.open(
            path, Settings(home=tmp_path, db_url=f"sqlite:///{tmp_path / 'exchange.db'}")
        )
        opened.append(ws)
        return ws

    yield make
    for ws in opened:
        ws.close()


REPO = Path(__file__).resolve().parents[1]


def migrated_airflow(home: Path, base: dict[str, str]) -> dict[str, str]:
    """``base`` plus the settings of an Airflow whose SQLite metadata DB in ``home`` is
    migrated, the DAGs and plugins of this repository; skipped (failed under CI=true) where
    Airflow is not installed."""
    if importlib.util.find_spec("airflow") is None:
        reason = "apache-airflow is not installed (pip install '.[airflow]')"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    env = {
        **base,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "dags" / "plugins"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    }
    airflow = Path(sys.executable).with_name("airflow")
    done = subprocess.run(
        [str(airflow), "db", "migrate"], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return env


def run_harness(module: str, args: list[str], env: dict[str, str], timeout: int) -> dict[str, Any]:
    """``python -m MODULE ARGS`` (an Airflow harness) in a child: the JSON document it prints
    on its ``HARNESS-RESULT`` line."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", module, *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else str(exc.stdout)
        raise AssertionError(f"{module} {args} timed out; its output:\n{out[-6000:]}") from None
    for line in done.stdout.splitlines():
        if line.startswith("HARNESS-RESULT "):
            return dict(json.loads(line.removeprefix("HARNESS-RESULT ")))
    raise AssertionError(f"{module} {args} failed ({done.returncode}):\n{done.stderr[-4000:]}")
