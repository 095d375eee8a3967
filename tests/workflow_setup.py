"""A small city for the workflow tests: two providers, two requesters, real SQLite front-ends."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from exchange.demo.run import create_provider
from exchange.kernel.clock import SHANGHAI
from exchange.kernel.settings import Settings
from exchange.workflow.application import Application
from exchange.workflow.users import Principal, create_user, issue_token, principal_of
from exchange.workspace import Workspace

FIELDS = """\
    primary_key: [id]
    cursor: updated_at
    fields:
      - {name: id, type: bigint, nullable: false}
      - {name: uscc, type: char, length: 18, nullable: false}
      - {name: name, type: varchar, length: 100, nullable: false}
      - {name: legal_person, type: varchar, length: 50}
      - {name: id_card, type: char, length: 18}
      - {name: reg_capital, type: decimal, precision: 18, scale: 2}
      - {name: updated_at, type: timestamp, nullable: false}
"""
CATALOG = f"""\
version: 1
departments: {{SCJG: 市场监督管理局, GAJ: 公安局, TAX: 税务局, HRSS: 人力资源和社会保障局}}
nodes:
  - {{name: market_fe, kind: sqlite, department: SCJG, connection: {{path: market.db}}}}
  - {{name: police_fe, kind: sqlite, department: GAJ, connection: {{path: police.db}}}}
  - {{name: tax_fe, kind: sqlite, department: TAX, connection: {{path: tax.db}}}}
  - {{name: hrss_fe, kind: sqlite, department: HRSS, connection: {{path: hrss.db}}}}
resources:
  - code: COND
    name: 企业登记信息(有条件)
    kind: table
    provider: market_fe
    share: conditional
    source: {{table: enterprise}}
    mode: incremental
{FIELDS}
  - code: OPEN
    name: 企业名录(无条件)
    kind: table
    provider: market_fe
    share: unconditional
    source: {{table: enterprise}}
    mode: incremental
{FIELDS}
  - code: SECRET
    name: 内部数据
    kind: table
    provider: market_fe
    share: not_shared
    source: {{table: enterprise}}
{FIELDS}
  - code: POLICE
    name: 人口信息
    kind: table
    provider: police_fe
    share: conditional
    source: {{table: enterprise}}
    mode: incremental
{FIELDS}
"""
DEPARTMENTS = {
    "tax": ("TAX", "税务局", "tax_fe"),
    "hrss": ("HRSS", "人力资源和社会保障局", "hrss_fe"),
}


def sh(text: str) -> dt.datetime:
    """A Shanghai wall-clock time as the store keeps it (naive UTC)."""
    t = dt.datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)
    return t.astimezone(dt.UTC).replace(tzinfo=None)


def open_city(home: Path, db_url: str | None = None, rows: int = 40) -> Workspace:
    """Catalog, provider front-end DBs with ``rows`` rows, and a migrated store."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "catalog.yaml").write_text(CATALOG, encoding="utf-8")
    for db in ("market.db", "police.db"):
        if not (home / db).exists():
            create_provider(home / db, rows)
    url = db_url or f"sqlite:///{home / 'exchange.db'}"
    return Workspace.open(home / "catalog.yaml", Settings(home=home, db_url=url))


def add_people(ws: Workspace) -> dict[str, Principal]:
    """admin; providers market (SCJG 市场监督管理局) and police (GAJ 公安局); requesters tax
    (TAX 税务局) and hrss (HRSS 人力资源和社会保障局)."""
    with ws.store.session() as s:
        create_user(s, "admin", "admin", None, "test")
        create_user(s, "market", "provider", "SCJG", "test")
        create_user(s, "police", "provider", "GAJ", "test")
        for name, (code, _, _) in DEPARTMENTS.items():
            create_user(s, name, "requester", code, "test")
        return {n: principal_of(s, n) for n in ("admin", "market", "police", "tax", "hrss")}


def tokens(ws: Workspace) -> dict[str, str]:
    with ws.store.session() as s:
        return {n: issue_token(s, n, "test") for n in ("admin", "market", "police", "tax", "hrss")}


def form_data(resource: str = "COND", requester: str = "tax", **over: Any) -> dict[str, Any]:
    code, name, node = DEPARTMENTS[requester]
    data: dict[str, Any] = {
        "resource": resource,
        "node": node,
        "fields": ["id", "uscc", "name", "reg_capital"],
        "department_code": code,
        "department_name": name,
        "purpose": "纳税人登记信息核验",
        "legal_basis": "《税收征收管理法》第十五条",
        "contact_name": "张三",
        "contact_phone": "0375-2661234",
        "contact_email": "zhangsan@example.gov.cn",
        "system_name": "金税三期",
        "system_ip": "59.207.1.20",
        "deploy_location": "市政务云",
        "usage_days": 365,
        "urgency": "normal",
    }
    data.update(over)
    return data


def form(resource: str = "COND", requester: str = "tax", **over: Any) -> Application:
    return Application.model_validate(form_data(resource, requester, **over))
