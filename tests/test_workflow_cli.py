"""A conditional request's life on the command line, as docs/workflow.md's transcript shows it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from exchange.demo.run import create_provider

FORM = {
    "node": "tax_fe",
    "fields": ["id", "uscc", "name", "legal_person", "reg_capital", "updated_at"],
    "department_code": "SWJ",
    "department_name": "税务局",
    "purpose": "企业所得税汇算清缴中核验纳税人登记信息",
    "legal_basis": "《中华人民共和国税收征收管理法》第十五条",
    "contact_name": "李明",
    "contact_phone": "0375-2661234",
    "contact_email": "liming@tax.example.gov.cn",
    "system_name": "金税三期核心征管系统",
    "system_ip": "59.207.10.21",
    "deploy_location": "平顶山市政务云",
    "usage_days": 365,
    "urgency": "urgent",
    "urgency_reason": "汇算清缴截止前需完成核验",
}


def exchange(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EXCHANGE_HOME": str(home / ".exchange"),
           "EXCHANGE_CATALOG": str(home / "catalog.yaml")}  # fmt: skip
    env.pop("EXCHANGE_DB_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "exchange", *args],
        env=env, capture_output=True, text=True, timeout=300, cwd=home,
    )  # fmt: skip


def ok(home: Path, *args: str) -> str:
    out = exchange(home, *args)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_a_conditional_request_from_application_to_closed_on_the_cli(tmp_path: Path) -> None:
    doc = yaml.safe_load(
        Path(__file__).parents[1].joinpath("schemas/examples/demo.yaml").read_text("utf-8")
    )
    for resource in doc["resources"]:
        resource["share"] = "conditional"
    doc["departments"]["GAJ"] = "公安局"
    (tmp_path / "catalog.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True), "utf-8")
    (tmp_path / "form.yaml").write_text(yaml.safe_dump(FORM, allow_unicode=True), "utf-8")
    create_provider(tmp_path / "provider.db", 300)
    ok(tmp_path, "user", "add", "scjg", "--role", "provider", "--department", "SCJG")
    ok(tmp_path, "user", "add", "gaj", "--role", "provider", "--department", "GAJ")
    ok(tmp_path, "user", "add", "swj", "--role", "requester", "--department", "SWJ")

    applied = ok(tmp_path, "subscription", "apply", "410400-SCJG-0001", "--form", "form.yaml",
                 "--as", "swj", "--at", "2026-09-30T10:00")  # fmt: skip
    assert "[under_review]" in applied
    assert "review        provider SCJG" in applied
    assert "due 2026-10-13T23:59:59+08:00  running" in applied  # 5 working days, National Day

    other = exchange(tmp_path, "subscription", "review", "1", "--approve", "--as", "gaj")
    assert other.returncode == 1 and "provided by 市场监督管理局" in other.stderr
    early = exchange(tmp_path, "subscription", "sign-off", "1", "--as", "swj")
    assert early.returncode == 2 and "sign_off is allowed only from sign_off" in early.stderr

    approved = ok(tmp_path, "subscription", "review", "1", "--approve",
                  "--fields", "id,uscc,name,reg_capital,updated_at", "--reason", "最小够用",
                  "--as", "scjg", "--at", "2026-10-09T16:30")  # fmt: skip
    assert "[implementation]" in approved
    assert "delivery      platform" in approved and "due 2026-10-13T23:59:59+08:00" in approved

    assert "delivered" in ok(tmp_path, "run", "410400-SCJG-0001")
    assert "[sign_off]" in ok(tmp_path, "subscription", "show", "1", "--as", "swj")
    assert "[evaluation]" in ok(tmp_path, "subscription", "sign-off", "1", "--as", "swj")
    bad = exchange(tmp_path, "subscription", "evaluate", "1", "--stars", "5,4,6,5,4", "--as", "swj")
    assert bad.returncode == 2
    assert "--stars: 6 (the 3rd of 5, timeliness) is not between 1 and 5" in bad.stderr
    closed = ok(tmp_path, "subscription", "evaluate", "1", "--stars", "5,4,5,5,3",
                "--comment", "字段齐全", "--as", "swj")  # fmt: skip
    assert "[closed]" in closed and "effectiveness" in closed

    shown = ok(tmp_path, "subscription", "show", "1", "--as", "swj")
    assert "approve: under_review -> filing  by scjg  (最小够用)" in shown
    assert "deliver: implementation -> sign_off  by engine" in shown
    assert "'data_quality': 4" in shown
    sla = ok(tmp_path, "sla")
    assert "effectiveness" in sla and "late" in sla  # delivered after Oct 13: a platform breach
    assert "intact" in ok(tmp_path, "audit", "verify")
    assert "nothing due" in ok(tmp_path, "tick")
