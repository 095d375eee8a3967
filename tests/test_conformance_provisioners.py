"""The provisioner conformance suite (tests/conformance/provisioners.py) on every kind.

PostgreSQL runs on a private cluster of its own (initdb in a temporary directory, as the
``postgres`` system user): the shared server trusts every loopback login, so only a cluster
that checks SCRAM passwords shows an old password failing. MariaDB runs on the shared server
(it checks passwords), FTP and SFTP on the test servers reading the files the engine writes.
"""

from __future__ import annotations

import ftplib
import io
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import psycopg
import pymysql
import pytest
from psycopg import sql

from connectors.provision.base import AccountProvisioner
from connectors.provision.registry import PROVISIONERS, open_provisioner
from exchange.kernel.kinds import PROVISIONED_KINDS
from tests.conformance.provisioners import Harness, ProvisionerConformance, Refused
from tests.conftest import MARIADB
from tests.servers.provisioned import ProvisionedSFTPServer, provisioned_ftp

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def scram_pg() -> Iterator[int]:
    """A private PostgreSQL cluster whose loopback logins need a SCRAM password (the admin,
    ``postgres``, is trusted); yields its port."""
    initdb = PG_BIN / "initdb"
    if not initdb.exists() or shutil.which("runuser") is None or os.geteuid() != 0:
        pytest.skip("a private PostgreSQL cluster needs initdb and runuser as root")
    # Not under pytest's root-only temporary tree: the postgres user must reach it.
    base = Path(tempfile.mkdtemp(prefix="scram_pg_"))
    os.chown(base, *_postgres_ids())
    data = base / "data"
    as_pg = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*as_pg, str(initdb), "-D", str(data), "-A", "trust", "-U", "postgres"],
        check=True,
        capture_output=True,
    )
    (data / "pg_hba.conf").write_text(
        "local all postgres trust\n"
        "host all postgres 127.0.0.1/32 trust\n"
        "host all all 127.0.0.1/32 scram-sha-256\n"
    )
    port = _free_port()
    opts = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
    ctl = [*as_pg, str(PG_BIN / "pg_ctl"), "-D", str(data), "-w", "-l", str(base / "log")]
    subprocess.run([*ctl, "-o", opts, "start"], check=True, capture_output=True)
    try:
        yield port
    finally:
        subprocess.run([*ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def _postgres_ids() -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam("postgres")
    return entry.pw_uid, entry.pw_gid


class PostgreSQLHarness(Harness):
    kind = "postgresql"

    def __init__(self, port: int):
        self.port = port
        self.admin_url = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def provisioner(self) -> AccountProvisioner:
        return open_provisioner("fe_pg", "postgresql", self.admin_url)

    def _as(self, login: str, secret: str) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(
                host="127.0.0.1",
                port=self.port,
                user=login,
                password=secret,
                dbname="postgres",
                autocommit=True,
            )
        except psycopg.OperationalError as exc:
            raise Refused(str(exc)) from exc

    def seed(self, area: str, name: str, payload: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as c:
            table = sql.Identifier(area, name)
            c.execute(sql.SQL("CREATE TABLE {} (v text)").format(table))
            c.execute(sql.SQL("INSERT INTO {} VALUES (%s)").format(table), (payload,))

    def write(self, login: str, secret: str, area: str, name: str, payload: str) -> None:
        with self._as(login, secret) as c:
            table = sql.Identifier(area, name)
            try:
                c.execute(sql.SQL("CREATE TABLE {} (v text)").format(table))
                c.execute(sql.SQL("INSERT INTO {} VALUES (%s)").format(table), (payload,))
            except psycopg.errors.InsufficientPrivilege as exc:
                raise Refused(str(exc)) from exc

    def read(self, login: str, secret: str, area: str, name: str) -> str:
        with self._as(login, secret) as c:
            try:
                row = c.execute(
                    sql.SQL("SELECT v FROM {}").format(sql.Identifier(area, name))
                ).fetchone()
            except psycopg.errors.InsufficientPrivilege as exc:
                raise Refused(str(exc)) from exc
            assert row is not None
            return str(row[0])

    def cleanup(self, logins: list[str], areas: list[str]) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as c:
            for area in areas:
                c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(area)))
        with self.provisioner() as prov:
            for login in logins:
                prov.revoke(login)


class MariaDBHarness(Harness):
    kind = "mysql"
    admin_url = "mysql://root@127.0.0.1:3306/"

    def provisioner(self) -> AccountProvisioner:
        return open_provisioner("fe_my", "mysql", self.admin_url)

    def _as(self, login: str, secret: str) -> pymysql.connections.Connection[Any]:
        try:
            return pymysql.connect(
                host="127.0.0.1", port=3306, user=login, password=secret, autocommit=True
            )
        except pymysql.err.OperationalError as exc:
            raise Refused(str(exc)) from exc

    def _run(self, conn: Any, *statements: tuple[str, tuple[Any, ...]]) -> list[Any]:
        rows: list[Any] = []
        try:
            with conn.cursor() as cur:
                for stmt, args in statements:
                    cur.execute(stmt, args or None)
                    rows = list(cur.fetchall())
        except pymysql.err.OperationalError as exc:  # 1142/1044: command denied
            raise Refused(str(exc)) from exc
        finally:
            conn.close()
        return rows

    def seed(self, area: str, name: str, payload: str) -> None:
        t = f"`{area}`.`{name}`"  # test names are fresh identifiers made here
        self._run(
            pymysql.connect(**MARIADB, autocommit=True),
            (f"CREATE TABLE {t} (v text)", ()),
            (f"INSERT INTO {t} VALUES (%s)", (payload,)),  # noqa: S608 - fresh names made by the test
        )

    def write(self, login: str, secret: str, area: str, name: str, payload: str) -> None:
        t = f"`{area}`.`{name}`"
        self._run(
            self._as(login, secret),
            (f"CREATE TABLE {t} (v text)", ()),
            (f"INSERT INTO {t} VALUES (%s)", (payload,)),  # noqa: S608 - fresh names made by the test
        )

    def read(self, login: str, secret: str, area: str, name: str) -> str:
        rows = self._run(self._as(login, secret), (f"SELECT v FROM `{area}`.`{name}`", ()))  # noqa: S608 - fresh names made by the test
        return str(rows[0][0])

    def cleanup(self, logins: list[str], areas: list[str]) -> None:
        conn = pymysql.connect(**MARIADB, autocommit=True)
        with conn.cursor() as cur:
            for area in areas:
                cur.execute(f"DROP DATABASE IF EXISTS `{area}`")
            for login in logins:
                cur.execute("DROP USER IF EXISTS %s@'%%'", (login,))
        conn.close()


class FTPHarness(Harness):
    kind = "ftp"

    def __init__(self, root: Path, accounts: Path, port: int):
        self.root, self.accounts, self.port = root, accounts, port

    def provisioner(self) -> AccountProvisioner:
        return open_provisioner("fe_files", "ftp", f"file://{self.root}?accounts={self.accounts}")

    def _as(self, login: str, secret: str) -> ftplib.FTP:
        ftp = ftplib.FTP()
        ftp.connect("127.0.0.1", self.port, timeout=10)
        try:
            ftp.login(login, secret)
        except ftplib.error_perm as exc:
            ftp.close()
            raise Refused(str(exc)) from exc
        return ftp

    def _path(self, login: str, area: str, name: str) -> str:
        return name if area == login else f"../{area}/{name}"

    def seed(self, area: str, name: str, payload: str) -> None:
        (self.root / area / name).write_text(payload)

    def write(self, login: str, secret: str, area: str, name: str, payload: str) -> None:
        ftp = self._as(login, secret)
        try:
            ftp.storbinary(f"STOR {self._path(login, area, name)}", io.BytesIO(payload.encode()))
        except ftplib.error_perm as exc:
            raise Refused(str(exc)) from exc
        finally:
            ftp.close()
        # a path outside the home is resolved inside it by the server: not the other's area
        if area != login and not (self.root / area / name).exists():
            raise Refused("written inside the own home, not the other's directory")

    def read(self, login: str, secret: str, area: str, name: str) -> str:
        ftp = self._as(login, secret)
        out = io.BytesIO()
        try:
            ftp.retrbinary(f"RETR {self._path(login, area, name)}", out.write)
        except ftplib.error_perm as exc:
            raise Refused(str(exc)) from exc
        finally:
            ftp.close()
        return out.getvalue().decode()


class SFTPHarness(Harness):
    kind = "sftp"

    def __init__(self, root: Path, keys: Path, port: int):
        self.root, self.keys, self.port = root, keys, port

    def provisioner(self) -> AccountProvisioner:
        return open_provisioner("fe_files", "sftp", f"file://{self.root}?keys={self.keys}")

    def _as(self, login: str, secret: str) -> tuple[paramiko.Transport, paramiko.SFTPClient]:
        key = paramiko.Ed25519Key.from_private_key(io.StringIO(secret))
        t = paramiko.Transport(("127.0.0.1", self.port))
        try:
            t.connect(username=login, pkey=key)
        except paramiko.AuthenticationException as exc:
            t.close()
            raise Refused(str(exc)) from exc
        client = paramiko.SFTPClient.from_transport(t)
        assert client is not None
        return t, client

    def _path(self, login: str, area: str, name: str) -> str:
        return f"/files/{name}" if area == login else f"/../{area}/files/{name}"

    def seed(self, area: str, name: str, payload: str) -> None:
        (self.root / area / "files" / name).write_text(payload)

    def write(self, login: str, secret: str, area: str, name: str, payload: str) -> None:
        t, client = self._as(login, secret)
        try:
            with client.open(self._path(login, area, name), "w") as fh:
                fh.write(payload.encode())
        except OSError as exc:
            raise Refused(str(exc)) from exc
        finally:
            t.close()
        if area != login and not (self.root / area / "files" / name).exists():
            raise Refused("the chroot kept the write inside the own directory")

    def read(self, login: str, secret: str, area: str, name: str) -> str:
        t, client = self._as(login, secret)
        try:
            with client.open(self._path(login, area, name), "r") as fh:
                return bytes(fh.read()).decode()
        except OSError as exc:
            raise Refused(str(exc)) from exc
        finally:
            t.close()


@pytest.fixture(scope="module")
def ftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FTPHarness]:
    base = tmp_path_factory.mktemp("ftp_prov")
    root, accounts = base / "root", base / "etc" / "ftp-accounts"
    with provisioned_ftp(root, accounts) as srv:
        yield FTPHarness(root, accounts, srv.port)


@pytest.fixture(scope="module")
def sftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SFTPHarness]:
    base = tmp_path_factory.mktemp("sftp_prov")
    root, keys = base / "root", base / "keys"
    with ProvisionedSFTPServer(root, keys) as srv:
        yield SFTPHarness(root, keys, srv.port)


class TestPostgreSQL(ProvisionerConformance):
    @pytest.fixture
    def harness(self, scram_pg: int) -> Harness:
        return PostgreSQLHarness(scram_pg)


class TestMariaDB(ProvisionerConformance):
    @pytest.fixture
    def harness(self) -> Harness:
        try:
            pymysql.connect(**MARIADB, connect_timeout=3).close()
        except pymysql.err.OperationalError as exc:
            pytest.skip(f"MariaDB is not reachable: {exc}")
        return MariaDBHarness()


class TestFTP(ProvisionerConformance):
    @pytest.fixture
    def harness(self, ftp_server: FTPHarness) -> Harness:
        return ftp_server


class TestSFTP(ProvisionerConformance):
    @pytest.fixture
    def harness(self, sftp_server: SFTPHarness) -> Harness:
        return sftp_server


def test_every_provisioned_kind_runs_the_suite() -> None:
    tested = {PostgreSQLHarness.kind, MariaDBHarness.kind, FTPHarness.kind, SFTPHarness.kind}
    assert tested == set(PROVISIONERS) == set(PROVISIONED_KINDS)


def test_the_private_cluster_checks_passwords(scram_pg: int) -> None:
    # What makes the reset test meaningful: a wrong password is refused here.
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host="127.0.0.1", port=scram_pg, user="nobody", password="x").close()
