"""Drive the running stack through Airflow's REST API, as an operator would.

Log in (simple auth manager: POST /auth/token), wait until the scheduler, dag-processor and
triggerer report healthy and the resource's DAG is parsed, unpause it, trigger a run
(POST /api/v2/dags/{id}/dagRuns), wait for it to end, print every task instance, check the
plugin answers under /exchange, then check the rows each subscriber received.

Reads the stack's environment (AIRFLOW_API_URL, SAMPLE_RESOURCE, the admin password file).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

API = os.environ["AIRFLOW_API_URL"].rstrip("/")
DAG_ID = f"exchange_{os.environ['SAMPLE_RESOURCE']}"
WAIT = float(os.environ.get("STACK_WAIT_SECONDS", "300"))
STARTED = time.perf_counter()


def say(text: str) -> None:
    print(f"[{time.perf_counter() - STARTED:6.1f} s] {text}", flush=True)


def wait_for(what: str, probe: Any, timeout: float = WAIT, every: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except httpx.HTTPError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(every)
    raise SystemExit(f"timed out waiting for {what} (last: {last!r})")


def token(client: httpx.Client) -> str:
    passwords = json.loads(
        Path(os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).read_text()
    )
    r = client.post(f"{API}/auth/token", json={"username": "admin", "password": passwords["admin"]})
    r.raise_for_status()
    return str(r.json()["access_token"])


def healthy(client: httpx.Client) -> bool:
    r = client.get(f"{API}/api/v2/monitor/health")
    if r.status_code != 200:
        return False
    doc = r.json()
    parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
    return all((doc.get(p) or {}).get("status") == "healthy" for p in parts)


def main() -> None:
    with httpx.Client(timeout=30) as anon:
        wait_for("the api-server", lambda: anon.get(f"{API}/api/v2/version").status_code == 200)
        say(f"api-server up: Airflow {anon.get(f'{API}/api/v2/version').json()['version']}")
        wait_for("scheduler, dag-processor and triggerer to be healthy", lambda: healthy(anon))
        say("scheduler, dag-processor, triggerer healthy")
        bearer = {"Authorization": f"Bearer {token(anon)}"}
    with httpx.Client(timeout=30, headers=bearer) as api:
        say("logged in through /auth/token")
        dag = wait_for(
            f"the DAG {DAG_ID} to be parsed",
            lambda: api.get(f"{API}/api/v2/dags/{DAG_ID}").status_code == 200,
        )
        dags = api.get(f"{API}/api/v2/dags", params={"tags": "exchange", "limit": 100}).json()
        names = sorted(d["dag_id"] for d in dags["dags"])
        say(f"DAGs parsed: {', '.join(names)}")
        pools = api.get(f"{API}/api/v2/pools").json()["pools"]
        say(
            "pools: "
            + ", ".join(f"{p['name']}={p['slots']}" for p in pools if p["name"] != "default_pool")
        )
        api.patch(f"{API}/api/v2/dags/{DAG_ID}", json={"is_paused": False}).raise_for_status()
        r = api.post(f"{API}/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": None})
        r.raise_for_status()
        run_id = r.json()["dag_run_id"]
        say(f"triggered {DAG_ID} run {run_id}")
        t0 = time.perf_counter()

        def finished() -> dict[str, Any] | None:
            doc = api.get(f"{API}/api/v2/dags/{DAG_ID}/dagRuns/{run_id}").json()
            return doc if doc["state"] in ("success", "failed") else None

        run = wait_for("the DAG run to finish", finished, every=2.0)
        assert dag  # parsed above
        tis = api.get(f"{API}/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances").json()
        for ti in sorted(
            tis["task_instances"], key=lambda t: (t["start_date"] or "", t["map_index"])
        ):
            index = f"[{ti['map_index']}]" if ti["map_index"] >= 0 else ""
            label = f" {ti['rendered_map_index']}" if ti.get("rendered_map_index") else ""
            say(
                f"  {ti['task_id']}{index}{label}: {ti['state']} on {ti['hostname']} "
                f"pool {ti['pool']}, try {ti['try_number']}, {ti['duration'] or 0:.1f} s"
            )
        say(f"run {run['state']} in {time.perf_counter() - t0:.1f} s after the trigger")
        spec = api.get(f"{API}/exchange/openapi.json")
        title = spec.json()["info"]["title"]
        say(f"plugin: GET /exchange/openapi.json -> {spec.status_code} {title!r}")
    if run["state"] != "success":
        raise SystemExit("the DAG run failed")
    here = Path(__file__).parent
    done = subprocess.run(
        [sys.executable, str(here / "sample_city.py"), "verify"], text=True, capture_output=True
    )
    for line in done.stdout.splitlines():
        say(line)
    if done.returncode != 0:
        raise SystemExit("delivered rows differ from the source: " + done.stderr[-2000:])
    say("delivered rows checked at every subscriber")


if __name__ == "__main__":
    main()
