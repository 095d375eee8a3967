"""Password hygiene for issued accounts (seed 账号申请及重置流程: account holders change
passwords regularly and avoid weak ones): after EXCHANGE_CREDENTIAL_MAX_AGE_DAYS the account
tick reminds the department once per age period, pointing at a reset; a platform user's own
new password is refused when weak, by the rule it breaks, and once changed the old one no
longer signs in. No secret is in the output, the outbox, the store or the audit log.

Times are Asia/Shanghai wall-clock (``sh``).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner, Result

import exchange.store.all_models  # noqa: F401  (every table, for the dump)
from exchange.accounts import service as acc
from exchange.accounts.config import AccountSettings
from exchange.accounts.forms import parse_account_form
from exchange.cli.app import app
from exchange.kernel.errors import BadInput, Unauthorized
from exchange.kernel.settings import Settings
from exchange.store.models import AuditEvent, Base
from exchange.workflow.models import Notification
from exchange.workflow.users import Principal, create_user, principal_of, sign_in
from exchange.workspace import Workspace
from tests.test_accounts_frontend import codes  # noqa: F401  (a fixture: MariaDB areas)
from tests.test_accounts_frontend import open_ws as open_frontend
from tests.workflow_setup import sh

CITY = "11410400MB0000001X"
TAX = "11410400MB0000003Z"
CATALOG = f"""\
version: 1
departments:
  "{CITY}": {{name: 平顶山市市场监督管理局, level: city_department}}
  "{TAX}": 国家税务总局平顶山市税务局
nodes: []
resources: []
"""
LOGIN = "Scjg-Share-2026"  # long and of 4 classes: a password equal to it breaks only 'login'
ISSUED = "2026-01-05 10:00"
NINETY = AccountSettings(credential_max_age_days=90)
STRONG = "Qk7-vN2#pLw9xT"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def city(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Workspace, str]]:
    """A workspace where the city department was issued the platform account ``LOGIN`` at
    ``ISSUED``; yields it and the password issued."""
    url = (
        request.getfixturevalue("pg_database")
        if request.param == "postgresql"
        else f"sqlite:///{tmp_path / 'exchange.db'}"
    )
    path = tmp_path / "catalog.yaml"
    path.write_text(CATALOG, encoding="utf-8")
    ws = Workspace.open(path, Settings(home=tmp_path, db_url=url))
    with ws.store.session() as s:
        create_user(s, "admin", "admin", None, "test")
        create_user(s, "scjg", "requester", CITY, "test")
        admin, scjg = principal_of(s, "admin"), principal_of(s, "scjg")
    form = parse_account_form(
        {
            "account_type": "platform", "application_type": "new", "responsible_person": "王芳",
            "position": "信息科科长", "phone": "13812345678", "email": "wf@example.gov.cn",
            "reason": "开展数据共享及发布工作",
        }
    )  # fmt: skip
    v = acc.apply(ws, scjg, form, sh("2026-01-05 09:00"))
    got = acc.issue(ws, admin, v.id, login=LOGIN, now=sh(ISSUED))
    assert got.secret
    yield ws, got.secret
    ws.close()


def later(days: int) -> dt.datetime:
    return sh(ISSUED) + dt.timedelta(days=days)


def tick(ws: Workspace, days: int) -> int:
    return acc.tick(ws.store, later(days), settings=NINETY).rotation_reminders


def rotation_notices(ws: Workspace) -> list[tuple[str, dict[str, object]]]:
    with ws.store.session() as s:
        rows = s.execute(
            sa.select(Notification.recipient, Notification.payload)
            .where(Notification.kind == "account.rotation_due")
            .order_by(Notification.id)
        ).all()
        return [(r, p) for r, p in rows]


def password_cli(ws: Workspace, login: str, current: str, new: str, *more: str) -> Result:
    env = {
        "EXCHANGE_HOME": str(ws.settings.home),
        "EXCHANGE_CATALOG": ws.catalog.path,
        "EXCHANGE_DB_URL": ws.settings.db_url,
        "COLUMNS": "250",
    }
    args = ["account", "password", "--as", login, *more]
    return CliRunner().invoke(app, args, env=env, input=f"{current}\n{new}\n{new}\n")


def store_dump(ws: Workspace) -> str:
    """Every row of every table, as text (and, for SQLite, the database files' bytes)."""
    parts = []
    with ws.store.session() as s:
        for table in Base.metadata.sorted_tables:
            parts += [repr(tuple(row)) for row in s.execute(sa.select(table))]
    url = ws.settings.db_url
    if url.startswith("sqlite:///"):
        db = Path(url.removeprefix("sqlite:///"))
        for f in db.parent.glob(db.name + "*"):
            parts.append(f.read_bytes().decode("latin-1"))
    return "\n".join(parts)


def test_a_credential_is_reminded_after_its_age_once_per_period_and_not_before(
    city: tuple[Workspace, str],
) -> None:
    ws, secret = city
    assert tick(ws, 89) == 0 and rotation_notices(ws) == []  # not before the age
    assert tick(ws, 91) == 1
    assert tick(ws, 91) == 0  # the same tick again: nothing new
    assert tick(ws, 150) == 0  # still the first period
    assert len(rotation_notices(ws)) == 1
    recipient, payload = rotation_notices(ws)[0]
    assert recipient == f"requester:{CITY}"
    assert payload["login"] == LOGIN and payload["account_type"] == "platform"
    assert payload["contact"] == "王芳" and payload["period"] == 1
    assert payload["issued"] == "2026-01-05T10:00:00+08:00"
    assert payload["reset"] == (
        f"exchange account apply --type platform --application reset --existing-login {LOGIN}"
    )
    assert tick(ws, 181) == 1  # a second period, a second reminder
    assert [p["period"] for _, p in rotation_notices(ws)] == [1, 2]

    # The holder changes its password: the age starts over from the change.
    out = password_cli(ws, LOGIN, secret, STRONG, "--at", "2026-07-10 09:00")
    assert out.exit_code == 0, out.output
    assert tick(ws, 250) == 0
    assert tick(ws, 190 + 91) == 1

    with ws.store.session() as s:
        kinds = s.scalars(
            sa.select(AuditEvent.kind)
            .where(AuditEvent.kind == "account.rotation_due")
            .order_by(AuditEvent.id)
        ).all()
    assert len(kinds) == 3
    everything = store_dump(ws) + json.dumps([p for _, p in rotation_notices(ws)])
    assert everything.count(secret) == 0 and everything.count(STRONG) == 0


def test_the_age_is_a_setting_in_days(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EXCHANGE_CREDENTIAL_MAX_AGE_DAYS", raising=False)
    assert AccountSettings.from_env().credential_max_age_days == 90
    monkeypatch.setenv("EXCHANGE_CREDENTIAL_MAX_AGE_DAYS", "30")
    assert AccountSettings.from_env().credential_max_age_days == 30
    monkeypatch.setenv("EXCHANGE_CREDENTIAL_MAX_AGE_DAYS", "0")
    with pytest.raises(BadInput, match="EXCHANGE_CREDENTIAL_MAX_AGE_DAYS='0': expected calendar"):
        AccountSettings.from_env()


@pytest.mark.parametrize(
    ("weak", "rule"),
    [
        ("aB3-xY7", "length"),
        ("correcthorsebatterystaple", "classes"),
        ("scjg-share-2026", "login"),
        (CITY, "department"),
        ("Password@123", "common"),
    ],
)
def test_a_weak_new_password_is_refused_by_the_rule_it_breaks(
    city: tuple[Workspace, str], weak: str, rule: str
) -> None:
    ws, secret = city
    out = password_cli(ws, LOGIN, secret, weak)
    assert isinstance(out.exception, BadInput), out.output
    assert f"rule '{rule}'" in str(out.exception)
    assert weak not in str(out.exception) and weak not in out.output
    with ws.store.session() as s:
        assert sign_in(s, LOGIN, secret).name == LOGIN  # nothing changed


def test_the_same_password_again_is_refused(city: tuple[Workspace, str]) -> None:
    ws, secret = city
    out = password_cli(ws, LOGIN, secret, secret)
    assert isinstance(out.exception, BadInput) and "rule 'unchanged'" in str(out.exception)


def test_the_change_needs_the_current_password_and_retires_it(
    city: tuple[Workspace, str],
) -> None:
    ws, secret = city
    out = password_cli(ws, LOGIN, "not-the-password", STRONG)
    assert isinstance(out.exception, Unauthorized)

    out = password_cli(ws, LOGIN, secret, STRONG)
    assert out.exit_code == 0, out.output
    assert f"password of {LOGIN} changed" in out.output
    with ws.store.session() as s:
        who: Principal = sign_in(s, LOGIN, STRONG)
        assert (who.name, who.department) == (LOGIN, CITY)
        with pytest.raises(Unauthorized):
            sign_in(s, LOGIN, secret)  # the old one stops signing in
        changes = s.execute(
            sa.select(AuditEvent.kind, AuditEvent.actor, AuditEvent.payload)
            .where(AuditEvent.kind == "user.password_set")
            .order_by(AuditEvent.id)
        ).all()
    assert [(k, a) for k, a, _ in changes][-1] == ("user.password_set", LOGIN)
    for text in (out.output, store_dump(ws)):
        assert text.count(secret) == 0 and text.count(STRONG) == 0


def test_a_front_end_database_account_is_reminded_too_and_its_reset_starts_over(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    areas: tuple[str, str, str] = request.getfixturevalue("codes")  # fresh MariaDB areas
    city = areas[0]
    ws = open_frontend(tmp_path, *areas)
    with ws.store.session() as s:
        create_user(s, "admin", "admin", None, "test")
        create_user(s, "boss", "requester", city, "test")
        admin, boss = principal_of(s, "admin"), principal_of(s, "boss")
    base: dict[str, object] = {
        "account_type": "database", "responsible_person": "王芳", "position": "科长",
        "phone": "0375-2692830", "email": "wf@example.gov.cn", "reason": "首次对接数据库资源",
        "node": "fe_my",
    }  # fmt: skip
    v = acc.apply(ws, boss, parse_account_form(base), sh("2026-01-05 09:00"))
    first = acc.issue(ws, admin, v.id, now=sh(ISSUED))
    assert first.secret and first.login
    assert tick(ws, 89) == 0
    assert tick(ws, 91) == 1 and tick(ws, 91) == 0
    (recipient, payload), *_ = rotation_notices(ws)
    assert (recipient, payload["account_type"], payload["login"]) == (
        f"requester:{city}",
        "database",
        first.login,
    )
    assert payload["reset"] == (
        f"exchange account apply --type database --application reset --existing-login {first.login}"
    )

    r = acc.apply(
        ws, boss, parse_account_form({**base, "application_type": "reset",
                                      "existing_login": first.login}),
        later(92),
    )  # fmt: skip
    again = acc.issue(ws, admin, r.id, now=later(93))
    assert again.secret
    assert tick(ws, 93 + 89) == 0  # the reset credential's own age
    assert tick(ws, 93 + 91) == 1
    assert len(rotation_notices(ws)) == 2
    dump = store_dump(ws)
    for secret in (first.secret, again.secret):
        assert dump.count(secret) == 0
    ws.close()
