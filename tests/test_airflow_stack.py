"""The real distributed run (CI runs it once) and the compose file kept in step with it."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
STACK_SH = ROOT / "docker" / "local" / "stack.sh"
COMPOSE = ROOT / "docker" / "docker-compose.yaml"


def _local_stack_keys() -> set[str]:
    """The host-specific AIRFLOW__ settings the scripted run writes into its stack.env."""
    return set(re.findall(r"^(AIRFLOW__[A-Z_]+)=", STACK_SH.read_text(), re.M))


def test_compose_runs_the_same_services_with_the_same_settings_as_the_scripted_run() -> None:
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    services = compose["services"]
    airflow = {n: s for n, s in services.items() if n.startswith("airflow-")}
    commands = {" ".join(s["command"][:3]) for n, s in airflow.items() if n != "airflow-init"}
    script = STACK_SH.read_text(encoding="utf-8")

    assert commands == {
        "airflow api-server --port",
        "airflow scheduler",
        "airflow dag-processor",
        "airflow triggerer",
        "airflow celery worker",
    }
    for sub in ("api-server", "scheduler", "dag-processor", "triggerer", "celery worker"):
        assert f'"$BIN/airflow" {sub}' in script  # the scripted run starts each of them too
    assert {"postgres", "redis", "fe-postgres", "fe-mariadb", "fe-oracle", "fe-sftp"} <= set(
        services
    )
    assert all(s["env_file"] == ["airflow.env"] for s in airflow.values())
    assert '. "$ROOT/docker/airflow.env"' in script
    env = compose["x-airflow-common"]["environment"]
    assert _local_stack_keys() <= set(env), _local_stack_keys() - set(env)
    assert "airflow db migrate" in " ".join(services["airflow-init"]["command"])
    assert "exchange airflow pools --apply" in " ".join(services["airflow-init"]["command"])


@pytest.mark.stack
@pytest.mark.postgres
@pytest.mark.mariadb
def test_distributed_run_triggers_a_resource_dag_over_rest_and_delivers_every_subscriber() -> None:
    stack = f"airflow_exchange_ci_{secrets.token_hex(3)}"
    env = {**os.environ, "EXCHANGE_STACK": stack, "SAMPLE_ROWS": "20000"}
    env = {k: v for k, v in env.items() if not k.startswith("AIRFLOW")}
    started = time.perf_counter()

    done = subprocess.run(
        [str(STACK_SH), "run"], env=env, capture_output=True, text=True, timeout=900
    )

    print(done.stdout[-6000:])
    print(f"distributed run: {time.perf_counter() - started:.0f} s")
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-4000:]
    assert "run success" in done.stdout
    assert done.stdout.count("equal to the source projection") == 2
    assert "plugin: GET /exchange/openapi.json -> 200" in done.stdout
    assert "distributed run OK" in done.stdout
    assert not (ROOT / ".exchange" / "stacks" / stack).exists()  # down cleaned up
