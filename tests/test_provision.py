"""Issuing departments' front-end accounts (exchange/accounts/provision.py) on real servers.

Each department's issued account reads and writes its own tables and is refused on the other
department's; a reset makes the old password fail (MariaDB checks passwords on the shared
server; PostgreSQL's reset is pinned on a private SCRAM cluster by the conformance suite); the
admin connection is a reference; and no issued secret is found anywhere the engine writes.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pymysql
import pytest
from psycopg import sql

from connectors.provision.base import checked_name
from connectors.provision.registry import open_provisioner
from exchange.accounts.provision import Issued, area_name, issue_account
from exchange.kernel.errors import BadInput, NotFound
from exchange.workspace import Workspace
from tests.conftest import MARIADB, PG_ADMIN

PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
MY_URL = "mysql://root@127.0.0.1:3306/"


def catalog(a: str, b: str) -> str:
    return f"""
departments: {{{a}: 市场监督管理局, {b}: 税务局}}
nodes:
  - name: fe_pg
    kind: postgresql
    connection: {{env: PROV_PG_URL}}
    admin: {{env: PROV_PG_ADMIN}}
  - name: fe_my
    kind: mysql
    connection: {{env: PROV_MY_URL}}
    admin: {{env: PROV_MY_ADMIN}}
resources: []
"""


@pytest.fixture
def departments(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """Two fresh department codes; their roles, users, schemas and databases go afterwards."""
    a, b = (f"T{secrets.token_hex(4).upper()}" for _ in range(2))
    for var, url in [
        ("PROV_PG_URL", PG_URL),
        ("PROV_PG_ADMIN", PG_URL),
        ("PROV_MY_URL", MY_URL),
        ("PROV_MY_ADMIN", MY_URL),
    ]:
        monkeypatch.setenv(var, url)
    yield a, b
    names = [area_name(a), area_name(b)]
    with psycopg.connect(PG_ADMIN, autocommit=True) as c:
        for n in names:
            c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(n)))
    with open_provisioner("fe_pg", "postgresql", PG_URL) as prov:
        for n in names:
            prov.revoke(n)
    conn = pymysql.connect(**MARIADB, autocommit=True)
    with conn.cursor() as cur:
        for n in names:
            cur.execute(f"DROP DATABASE IF EXISTS `{n}`")  # fresh names made above
            cur.execute("DROP USER IF EXISTS %s@'%%'", (n,))
    conn.close()


@pytest.fixture
def ws(make_workspace: Callable[[str], Workspace], departments: tuple[str, str]) -> Workspace:
    return make_workspace(catalog(*departments))


def pg_as(issued: Issued) -> psycopg.Connection[object]:
    return psycopg.connect(
        host="127.0.0.1",
        user=issued.login,
        password=issued.secret,
        dbname="postgres",
        autocommit=True,
    )


def my_as(issued: Issued) -> pymysql.connections.Connection[object]:
    return pymysql.connect(
        host="127.0.0.1", user=issued.login, password=issued.secret, autocommit=True
    )


def test_a_postgresql_account_reaches_its_own_schema_and_is_refused_on_the_other(
    ws: Workspace, departments: tuple[str, str]
) -> None:
    a, b = departments
    mine = issue_account(ws, department=a, account_type="database", node="fe_pg", reset=False)
    theirs = issue_account(ws, department=b, account_type="database", node="fe_pg", reset=False)
    assert (mine.login, mine.node, mine.account_type) == (area_name(a), "fe_pg", "database")
    assert mine.reach == f"schema {area_name(a)} on node fe_pg"
    with pg_as(theirs) as c:
        c.execute("CREATE TABLE enterprise (uscc text)")  # its search_path is its schema
        c.execute("INSERT INTO enterprise VALUES ('91410100MA4F000001')")
    with pg_as(mine) as c:
        c.execute("CREATE TABLE enterprise (uscc text)")
        c.execute("INSERT INTO enterprise VALUES ('91410400MA4F000002')")
        assert c.execute("SELECT uscc FROM enterprise").fetchall() == [("91410400MA4F000002",)]
        other = sql.Identifier(area_name(b), "enterprise")
        for stmt in ("SELECT * FROM {}", "DELETE FROM {}"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute(sql.SQL(stmt).format(other))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("CREATE TABLE public.planted (x int)")


def test_a_mariadb_account_reaches_its_own_database_and_a_reset_retires_the_old_password(
    ws: Workspace, departments: tuple[str, str]
) -> None:
    a, b = departments
    mine = issue_account(ws, department=a, account_type="database", node="fe_my", reset=False)
    theirs = issue_account(ws, department=b, account_type="database", node="fe_my", reset=False)
    assert mine.reach == f"database {area_name(a)} on node fe_my"
    conn = my_as(theirs)
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE `{area_name(b)}`.t (v text)")
    conn.close()
    conn = my_as(mine)
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE `{area_name(a)}`.t (v text)")
        cur.execute(f"INSERT INTO `{area_name(a)}`.t VALUES ('own')")  # noqa: S608 - fresh names made by the test
        cur.execute(f"SELECT v FROM `{area_name(a)}`.t")  # noqa: S608 - fresh names made by the test
        assert cur.fetchall() == (("own",),)
        with pytest.raises(pymysql.err.OperationalError):
            cur.execute(f"SELECT * FROM `{area_name(b)}`.t")  # noqa: S608 - fresh names made by the test
        with pytest.raises(pymysql.err.OperationalError):
            cur.execute("SELECT * FROM mysql.user")
    conn.close()
    renewed = issue_account(ws, department=a, account_type="database", node="fe_my", reset=True)
    assert renewed.login == mine.login and renewed.secret != mine.secret
    with pytest.raises(pymysql.err.OperationalError):
        my_as(mine)
    my_as(renewed).close()


def test_new_and_reset_are_what_the_application_said(
    ws: Workspace, departments: tuple[str, str]
) -> None:
    a, _ = departments
    with pytest.raises(NotFound, match="no database account on node 'fe_my' to reset"):
        issue_account(ws, department=a, account_type="database", node="fe_my", reset=True)
    issue_account(ws, department=a, account_type="database", node="fe_my", reset=False)
    with pytest.raises(BadInput, match="already has database account"):
        issue_account(ws, department=a, account_type="database", node="fe_my", reset=False)


def test_the_node_is_named_when_more_than_one_fits(
    ws: Workspace, departments: tuple[str, str]
) -> None:
    a, _ = departments
    with pytest.raises(BadInput, match="name the node .*fe_my, fe_pg"):
        issue_account(ws, department=a, account_type="database", node=None, reset=False)
    with pytest.raises(BadInput, match="node 'fe_my' is mysql, not sftp or ftp"):
        issue_account(ws, department=a, account_type="ftp", node="fe_my", reset=False)
    with pytest.raises(BadInput, match="account type 'platform' is not provisioned"):
        issue_account(ws, department=a, account_type="platform", node=None, reset=False)


def test_no_issued_secret_is_found_in_output_logs_or_the_home(
    ws: Workspace,
    departments: tuple[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, b = departments
    caplog.set_level(logging.DEBUG)
    issued = [
        issue_account(ws, department=a, account_type="database", node="fe_pg", reset=False),
        issue_account(ws, department=b, account_type="database", node="fe_my", reset=False),
        issue_account(ws, department=a, account_type="database", node="fe_pg", reset=True),
        issue_account(ws, department=b, account_type="database", node="fe_my", reset=True),
    ]
    assert all(i.secret not in repr(i) for i in issued)
    out = capsys.readouterr()
    haystacks = [out.out, out.err, caplog.text]
    # The store, the audit log and everything else the engine keeps live under the home.
    for path in tmp_path.rglob("*"):
        if path.is_file():
            haystacks.append(path.read_bytes().decode("utf-8", "replace"))
    found = [i.login for i in issued for h in haystacks if i.secret in h]
    assert found == []
    # The servers keep verifiers, never the password itself.
    with psycopg.connect(PG_ADMIN) as c:
        row = c.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (area_name(a),)
        ).fetchone()
    assert row is not None and str(row[0]).startswith("SCRAM-SHA-256$")
    assert issued[2].secret not in str(row[0])


def test_the_admin_connection_is_a_reference_never_a_secret(
    make_workspace: Callable[[str], Workspace],
) -> None:
    from exchange.kernel.errors import CatalogError

    text = catalog("A1", "B1").replace("admin: {env: PROV_PG_ADMIN}", "admin: postgres://x:pw@h/d")
    with pytest.raises(CatalogError) as err:
        make_workspace(text)
    assert "pw@h" not in str(err.value)


def test_an_sftp_account_is_a_key_confined_to_the_departments_directory(
    make_workspace: Callable[[str], Workspace],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    import io

    import paramiko

    from tests.servers.provisioned import ProvisionedSFTPServer

    root, keys = tmp_path / "sftp", tmp_path / "keys"
    monkeypatch.setenv("PROV_SFTP_URL", "sftp://exchange@127.0.0.1/")
    monkeypatch.setenv("PROV_SFTP_ADMIN", f"file://{root}?keys={keys}")
    ws = make_workspace(
        """
departments: {SCJG: 市场监督管理局, SWJ: 税务局}
nodes:
  - name: fe_files
    kind: sftp
    connection: {env: PROV_SFTP_URL}
    admin: {env: PROV_SFTP_ADMIN}
resources: []
"""
    )
    mine = issue_account(ws, department="SCJG", account_type="ftp", node=None, reset=False)
    theirs = issue_account(ws, department="SWJ", account_type="ftp", node=None, reset=False)
    assert mine.reach == "directory d_scjg on node fe_files"
    assert (keys / "d_scjg").read_text().startswith("restrict ssh-ed25519 ")
    (root / "d_swj" / "files" / "theirs.csv").write_text("swj")
    with ProvisionedSFTPServer(root, keys) as srv:
        t = paramiko.Transport(("127.0.0.1", srv.port))
        t.connect(
            username=mine.login, pkey=paramiko.Ed25519Key.from_private_key(io.StringIO(mine.secret))
        )
        client = paramiko.SFTPClient.from_transport(t)
        assert client is not None
        with client.open("/files/ours.csv", "w") as fh:
            fh.write(b"scjg")
        assert client.listdir("/files") == ["ours.csv"]
        with pytest.raises(OSError):
            client.open("/../d_swj/files/theirs.csv").read()
        t.close()
        renewed = issue_account(ws, department="SCJG", account_type="ftp", node=None, reset=True)
        t = paramiko.Transport(("127.0.0.1", srv.port))
        with pytest.raises(paramiko.AuthenticationException):
            t.connect(
                username=mine.login,
                pkey=paramiko.Ed25519Key.from_private_key(io.StringIO(mine.secret)),
            )
        t.close()
    assert (root / "d_scjg" / "files" / "ours.csv").read_text() == "scjg"
    assert renewed.secret != mine.secret and theirs.login == "d_swj"


def test_two_departments_never_share_an_area() -> None:
    """Names are cut down to what a server takes; codes that would meet there carry a hash."""
    codes = [
        "12410400MB0000002Y",
        "Edu-1",
        "edu.1",
        "EDU_1",
        "edu_1",
        "EDU1",
        "edu1",
        "教育局",
        "卫健委",
    ]
    names = [area_name(c) for c in codes]
    assert len(set(names)) == len(codes)
    assert area_name("12410400MB0000002Y") == "d_12410400mb0000002y"  # the credit code's form
    assert all(checked_name(n, "area") == n for n in names)
    assert area_name("x" * 200) != area_name("x" * 199)
