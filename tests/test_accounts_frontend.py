"""The whole path to a front-end database account: a second-level unit applies through its
supervising department's consent, the platform issues its account on the MariaDB front-end
within the clock, the account reaches the unit's own database and is refused on another
department's; a reset retires the old password. The secret is nowhere in the store."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest
import sqlalchemy as sa

from exchange.accounts import service as acc
from exchange.accounts.forms import parse_account_form
from exchange.accounts.provision import area_name
from exchange.kernel.errors import IllegalTransition
from exchange.kernel.settings import Settings
from exchange.store.models import AuditEvent
from exchange.workflow.models import Notification
from exchange.workflow.users import create_user, principal_of
from exchange.workspace import Workspace
from tests.conftest import MARIADB
from tests.workflow_setup import sh

MY_URL = "mysql://root@127.0.0.1:3306/"


@pytest.fixture
def codes(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str, str]]:
    """Fresh codes of a city department, its unit and another department; their MariaDB
    databases and users go afterwards."""
    city, unit, other = (f"T{secrets.token_hex(4).upper()}" for _ in range(3))
    monkeypatch.setenv("ACC_MY_URL", MY_URL)
    monkeypatch.setenv("ACC_MY_ADMIN", MY_URL)
    try:
        pymysql.connect(**MARIADB, connect_timeout=3).close()
    except pymysql.err.OperationalError as exc:
        pytest.skip(f"MariaDB is not reachable: {exc}")
    yield city, unit, other
    conn = pymysql.connect(**MARIADB, autocommit=True)
    with conn.cursor() as cur:
        for code in (city, unit, other):
            name = area_name(code)
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")  # fresh names made above
            cur.execute("DROP USER IF EXISTS %s@'%%'", (name,))
    conn.close()


def open_ws(home: Path, city: str, unit: str, other: str) -> Workspace:
    text = f"""
departments:
  {city}: {{name: 平顶山市市场监督管理局, level: city_department}}
  {unit}: {{name: 市场监管信息中心, level: second_level_unit, supervisor: {city}}}
  {other}: 税务局
nodes:
  - name: fe_my
    kind: mysql
    connection: {{env: ACC_MY_URL}}
    admin: {{env: ACC_MY_ADMIN}}
resources: []
"""
    path = home / "catalog.yaml"
    path.write_text(text, encoding="utf-8")
    return Workspace.open(path, Settings(home=home, db_url=f"sqlite:///{home / 'x.db'}"))


def test_a_unit_gets_a_least_privilege_database_account_through_its_supervisor(
    tmp_path: Path, codes: tuple[str, str, str]
) -> None:
    city, unit, other = codes
    ws = open_ws(tmp_path, *codes)
    with ws.store.session() as s:
        create_user(s, "admin", "admin", None, "test")
        create_user(s, "boss", "requester", city, "test")
        create_user(s, "center", "requester", unit, "test")
        create_user(s, "tax", "requester", other, "test")
        admin, boss, center, tax = (principal_of(s, n) for n in ("admin", "boss", "center", "tax"))
    base = {
        "account_type": "database", "responsible_person": "王芳", "position": "科长",
        "phone": "0375-2692830", "email": "wf@example.gov.cn", "reason": "首次对接数据库资源",
        "node": "fe_my",
    }  # fmt: skip
    v = acc.apply(ws, center, parse_account_form(base), sh("2026-11-02 09:00"))
    v = acc.consent(ws, boss, v.id, None, sh("2026-11-02 15:00"))
    mine = acc.issue(ws, admin, v.id, now=sh("2026-11-03 10:00"))
    assert [(d.kind, d.status) for d in mine.application.deadlines] == [
        ("consent", "met"),
        ("answer", "met"),
    ]
    assert mine.login == area_name(unit) and mine.reach and mine.secret
    t = acc.apply(ws, tax, parse_account_form(base), sh("2026-11-02 09:00"))
    theirs = acc.issue(ws, admin, t.id, now=sh("2026-11-02 10:00"))
    assert theirs.secret

    def connect(login: str, password: str) -> pymysql.connections.Connection[object]:
        return pymysql.connect(host="127.0.0.1", user=login, password=password, autocommit=True)

    with connect(theirs.login or "", theirs.secret) as c, c.cursor() as cur:
        cur.execute(f"CREATE TABLE `{area_name(other)}`.enterprise (uscc varchar(18))")
    with connect(mine.login or "", mine.secret) as c, c.cursor() as cur:
        cur.execute(f"CREATE TABLE `{area_name(unit)}`.enterprise (uscc varchar(18))")
        # area names of the fresh codes above, not values
        cur.execute(f"INSERT INTO `{area_name(unit)}`.enterprise VALUES ('x')")  # noqa: S608
        with pytest.raises(pymysql.err.OperationalError):
            cur.execute(f"SELECT * FROM `{area_name(other)}`.enterprise")  # noqa: S608

    r = acc.apply(
        ws, center, parse_account_form({**base, "application_type": "reset",
                                        "existing_login": mine.login}),
        sh("2026-11-09 09:00"),
    )  # fmt: skip
    r = acc.consent(ws, boss, r.id, None, sh("2026-11-09 10:00"))
    again = acc.issue(ws, admin, r.id, now=sh("2026-11-09 11:00"))
    assert again.login == mine.login and again.secret != mine.secret
    with pytest.raises(pymysql.err.OperationalError):
        connect(mine.login or "", mine.secret)
    connect(again.login or "", again.secret or "").close()

    with ws.store.session() as s:
        stored = [json.dumps(p) for p in s.scalars(sa.select(AuditEvent.payload))]
        stored += [json.dumps(p) for p in s.scalars(sa.select(Notification.payload))]
    dump = "\n".join(stored) + (tmp_path / "x.db").read_bytes().decode("latin-1")
    for secret in (mine.secret, theirs.secret, again.secret):
        assert secret and secret not in dump
    ws.close()


def test_a_reset_issued_twice_at_once_hands_out_the_password_that_works(
    tmp_path: Path, codes: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retry racing the first issue waits for it and is refused; had both provisioned, the
    second's password would have replaced the one the first handed to the applicant."""
    city, unit, other = codes
    ws = open_ws(tmp_path, *codes)
    with ws.store.session() as s:
        create_user(s, "admin", "admin", None, "test")
        create_user(s, "tax", "requester", other, "test")
        admin, tax = principal_of(s, "admin"), principal_of(s, "tax")
    base = {
        "account_type": "database", "responsible_person": "李强", "position": "主任",
        "phone": "0375-2692830", "email": "lq@example.gov.cn", "reason": "对接", "node": "fe_my",
    }  # fmt: skip
    t = acc.apply(ws, tax, parse_account_form(base), sh("2026-11-02 09:00"))
    first = acc.issue(ws, admin, t.id, now=sh("2026-11-02 10:00"))
    r = acc.apply(
        ws, tax, parse_account_form({**base, "application_type": "reset",
                                     "existing_login": first.login}),
        sh("2026-11-09 09:00"),
    )  # fmt: skip
    import exchange.accounts.provision as provision

    slow = provision.generate_password
    monkeypatch.setattr(
        provision, "generate_password", lambda p=None: (time.sleep(0.5), slow(p))[1]
    )
    results: list[object] = []

    def issue() -> None:
        try:
            results.append(acc.issue(ws, admin, r.id, now=sh("2026-11-09 10:00")))
        except IllegalTransition as exc:
            results.append(exc)

    threads = [threading.Thread(target=issue) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    issued = [x for x in results if isinstance(x, acc.Issued)]
    assert len(results) == 2 and len(issued) == 1
    pymysql.connect(
        host="127.0.0.1", user=issued[0].login, password=issued[0].secret or ""
    ).close()  # the password the applicant was given is the server's
    ws.close()
