"""The whole job of upstream resources, as the people who do it run it, command by command.

The tax bureau asks for a provincial API the city does not proxy yet; the city forwards the
request, records the province's approval, adds the resource to its catalog with its origin
and marks the application proxied, which files the bureau's own subscription; the city, as
the resource's provider here, grants fewer fields than asked; the bureau issues its
authorization code and calls the gateway: it gets only its granted fields, within its quota,
and ``exchange usage`` counts the call. A provincial table the city proxies on its own
front-end database reaches the bureau through the ordinary delivery path, its origin shown
in the catalog list and the status.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.servers.upstream import enterprise, upstream_server

REPO = Path(__file__).resolve().parents[1]
USCC = "91410100MA4F000001"
API = "410000-SCJG-API-0001"
TABLE = "410000-SCJG-0003"
APPROVAL = "豫数共享〔2026〕12号"

NODES = """\
version: 1
departments: {CITY: 市政务服务和大数据管理局, TAX: 市税务局}
nodes:
  - {name: city_fe, kind: sqlite, department: CITY, connection: {path: city.db}}
  - {name: tax_fe, kind: sqlite, department: TAX, connection: {path: tax.db}}
  - name: prov_gw
    kind: http
    department: CITY
    base_url: UPSTREAM
    timeout_s: 2
    auth: {scheme: header, header: X-Api-Key, credential: {env: STORY_PROV_KEY}}
resources:
  - code: "410000-SCJG-0003"
    name: 全省企业年报信息
    kind: table
    provider: city_fe
    share: unconditional
    origin:
      {level: provincial, platform: 河南省政务数据共享平台, upstream_code: "41000000SCJG/00031"}
    source: {table: annual_report}
    primary_key: [uscc]
    fields:
      - {name: uscc, type: varchar, length: 18, nullable: false}
      - {name: employees, type: integer}
"""

API_RESOURCE = """\
  - code: "410000-SCJG-API-0001"
    name: 企业基本信息查询
    kind: api
    provider: prov_gw
    share: conditional
    origin:
      level: provincial
      platform: 河南省政务数据共享平台
      upstream_code: "41000000SCJG/00012"
      approval_ref: "豫数共享〔2026〕12号"
    operations:
      - name: by_uscc
        method: GET
        path: /ent/{uscc}
        params: [{name: uscc, in: path, type: string, pattern: "^[0-9A-Z]{18}$"}]
    fields:
      - {name: uscc, type: varchar, path: data.uscc}
      - {name: ent_name, type: varchar, path: data.name}
      - {name: legal_person, type: varchar, path: data.legal_person}
    quota: {daily: 3, per_second: 10, lowered_daily: 1}
"""

FORM = {
    "level": "provincial",
    "platform": "河南省政务数据共享平台",
    "upstream_code": "41000000SCJG/00012",
    "resource_name": "企业基本信息查询",
    "kind": "api",
    "fields": ["uscc", "name", "legal_person"],
    "purpose": "核验纳税人登记信息",
    "legal_basis": "《中华人民共和国税收征收管理法》第六条",
    "contact_name": "李明",
    "contact_phone": "0375-2661234",
    "contact_email": "liming@tax.example.gov.cn",
    "system_name": "金税三期核心征管系统",
    "system_ip": "59.207.10.21",
    "deploy_location": "平顶山市政务云",
    "usage_days": 365,
}


class City:
    """A workspace directory and the ``exchange`` command run in it with its environment."""

    def __init__(self, home: Path, env: dict[str, str]):
        self.home, self.env = home, env

    def run(self, *args: str, who: str | None = None, ok: bool = True) -> str:
        env = dict(self.env)
        if who is not None:
            env["EXCHANGE_USER"] = who
        done = subprocess.run(
            [sys.executable, "-m", "exchange", *args],
            cwd=self.home, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        out = done.stdout + done.stderr
        if ok:
            assert done.returncode == 0, (
                f"exchange {' '.join(args)} exited {done.returncode}:\n{out}"
            )
        return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def city(tmp_path: Path) -> Iterator[City]:
    try:
        redis.Redis.from_url("redis://127.0.0.1:6379/0", socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis is not reachable on 127.0.0.1:6379: {exc}")
        pytest.skip(f"Redis is not reachable on 127.0.0.1:6379: {exc}")
    namespace = f"story-{secrets.token_hex(4)}"
    env = {
        **os.environ,
        "EXCHANGE_HOME": str(tmp_path / ".exchange"),
        "EXCHANGE_DB_URL": f"sqlite:///{tmp_path / 'store.db'}",
        "EXCHANGE_CATALOG": str(tmp_path / "catalog.yaml"),
        "EXCHANGE_REDIS_NAMESPACE": namespace,
        "STORY_PROV_KEY": "prov-" + secrets.token_hex(16),
        "COLUMNS": "250",
    }
    with sqlite3.connect(tmp_path / "city.db") as db:
        db.execute("create table annual_report (uscc varchar(18) primary key, employees int)")
        db.executemany(
            "insert into annual_report values (?, ?)", [(USCC, 120), ("91410100MA4F000002", 8)]
        )
    yield City(tmp_path, env)
    r = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    keys = list(r.scan_iter(f"{namespace}:*"))
    if keys:
        r.delete(*keys)


def test_a_department_gets_an_upstream_api_and_a_proxied_table_end_to_end(city: City) -> None:
    key = city.env["STORY_PROV_KEY"]
    with upstream_server(token=key) as up:
        catalog = city.home / "catalog.yaml"
        catalog.write_text(NODES.replace("UPSTREAM", up.url), encoding="utf-8")
        city.run("user", "add", "ops", "--role", "admin")
        city.run("user", "add", "tax", "--role", "requester", "--department", "TAX")
        city.run("user", "add", "city_reviewer", "--role", "provider", "--department", "CITY")

        # The bureau asks for an API the city does not proxy yet.
        (city.home / "upstream.json").write_text(json.dumps(FORM), encoding="utf-8")
        out = city.run("upstream", "apply", "--form", "upstream.json", who="tax")
        assert "drafted" in out
        assert "forwarded" in city.run("upstream", "forward", "1", who="ops")
        decided = city.run(
            "upstream", "decide", "1", "--approved", "--approval-ref", APPROVAL, who="ops"
        )
        assert "approved_upstream" in decided

        # The city proxies it: the resource is in its catalog with its origin ...
        catalog.write_text(catalog.read_text(encoding="utf-8") + API_RESOURCE, encoding="utf-8")
        listed = city.run("catalog", "list", str(catalog))
        assert "provincial 河南省政务数据共享平台 41000000SCJG/00012" in listed
        # ... and the bureau's own application is filed as its subscription.
        proxied = city.run(
            "upstream", "proxied", "1", "--resource", API, "--fields", "uscc,ent_name,legal_person",
            who="ops",
        )  # fmt: skip
        assert "proxied" in proxied
        shown = city.run("subscription", "show", "1", who="tax")
        assert "under_review" in shown

        # The provider grants fewer fields than asked; the bureau issues its code.
        city.run(
            "subscription",
            "review",
            "1",
            "--approve",
            "--fields",
            "uscc,ent_name",
            who="city_reviewer",
        )
        issued = city.run("code", "issue", "1", who="tax")
        code = issued.split()[0]
        assert code.startswith("cx_") and "shown" in issued
        assert "sign_off" in city.run("subscription", "show", "1", who="tax")

        port = free_port()
        gateway = subprocess.Popen(
            [sys.executable, "-m", "exchange", "gateway", "--port", str(port)],
            cwd=city.home, env=city.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}/{API}/by_uscc"
            headers = {"Authorization": f"Bearer {code}"}
            answers = [_call(url, headers, {"uscc": USCC}) for _ in range(4)]
        finally:
            gateway.terminate()
            log = gateway.communicate(timeout=30)[0].decode()

        first = answers[0]
        assert first.status_code == 200, first.text
        assert first.json() == {"data": {"uscc": USCC, "name": enterprise(USCC)["name"]}}
        assert first.headers["X-RateLimit-Limit"] == "3"
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert int(answers[3].headers["Retry-After"]) > 0
        # the city's credential went upstream, and nowhere else
        assert all(r.headers.get("x-api-key") == key for r in up.requests())
        for text in [log, *(a.text for a in answers), *(str(a.headers) for a in answers)]:
            assert key not in text and code not in text

    usage = json.loads(city.run("usage", "--by", "department", "--format", "json", who="ops"))
    rows = usage["rows"] if isinstance(usage, dict) else usage
    assert sum(r["calls"] for r in rows) == 4
    assert sum(r["quota"] for r in rows) == 1

    # The provincial table reaches the bureau by the ordinary path, its origin shown.
    (city.home / "table.json").write_text(
        json.dumps(
            {k: v for k, v in FORM.items() if k not in ("level", "platform", "upstream_code",
                                                          "resource_name", "kind", "fields")}
            | {"resource": TABLE, "node": "tax_fe", "fields": ["uscc", "employees"]}
        ),
        encoding="utf-8",
    )  # fmt: skip
    city.run("subscription", "apply", "--form", "table.json", who="tax")
    city.run("run", TABLE)
    with sqlite3.connect(city.home / "tax.db") as db:
        assert db.execute("select count(*) from annual_report").fetchone() == (2,)
    status = city.run("status", TABLE, who="tax")
    assert "provincial 河南省政务数据共享平台 41000000SCJG/00031" in status


def _call(url: str, headers: dict[str, str], params: dict[str, str]) -> httpx.Response:
    """A call once the gateway listens (it is starting while the first one is tried)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return httpx.get(url, headers=headers, params=params, timeout=10)
        except httpx.ConnectError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
