"""The quarantine key (the secret of the masked keys' digests) is never lost or replaced
silently.

From a review: when $EXCHANGE_HOME/quarantine.key was missing (the file lost, a worker with
another home, the CLI run from another directory) a new key was made without a word, and
every masked entry already in the store never matched again: never released, counted as new
on every run. Now the store keeps the key's check value; a missing, replaced or truncated key
file is refused, naming the file and saying to restore it.
"""

from __future__ import annotations

import datetime as dt
import errno
import os
from pathlib import Path

import pytest
import sqlalchemy as sa

from exchange.flow import run_resource
from exchange.kernel.errors import BadInput, is_terminal
from exchange.kernel.settings import Settings
from exchange.quality.models import ErrorReport, QuarantineEntry, QuarantineKeyCheck
from exchange.quality.quarantine import KEY_FILE, key_secret
from exchange.workflow.grants import add_subscription
from exchange.workspace import Workspace
from tests.conftest import catalog_yaml
from tests.sources import create_source, registry
from tests.test_quality_masked_keys import FAR, RESOURCE

PHONE = 11  # the column of tests.sources' rows


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def ws(request: pytest.FixtureRequest, tmp_path: Path) -> Workspace:
    """A run of IDS has quarantined one row by its masked ID number key."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'exchange.db'}"
    else:
        url = str(request.getfixturevalue("pg_database"))
    rows = [list(r) for r in registry(range(1, 11))]
    rows[3][PHONE] = "12"  # a bad phone: quarantined under its masked key
    create_source(f"sqlite:///{tmp_path / 'src.db'}", [tuple(r) for r in rows])
    nodes = {"src": ("sqlite", "{path: src.db}"), "dst": ("sqlite", "{path: dst.db}")}
    (tmp_path / "catalog.yaml").write_text(catalog_yaml(nodes, RESOURCE), "utf-8")
    workspace = Workspace.open(tmp_path / "catalog.yaml", Settings(home=tmp_path, db_url=url))
    add_subscription(workspace, "IDS", "dst", None, FAR, target_table="people")
    assert run_resource(workspace, "IDS").quarantined == 1
    yield workspace
    workspace.close()


def entries(ws: Workspace) -> list[tuple[str, bytes | None]]:
    with ws.store.session() as s:
        return [tuple(r) for r in s.execute(
            sa.select(QuarantineEntry.row_key, QuarantineEntry.key_digest)
        ).all()]  # fmt: skip


def test_the_store_keeps_the_check_value_of_the_key_it_was_masked_with(ws: Workspace) -> None:
    with ws.store.session() as s:
        check = s.get(QuarantineKeyCheck, 1)

    assert check is not None and len(check.check_value) == 32
    assert check.check_value != (ws.settings.home / KEY_FILE).read_bytes()
    assert key_secret(ws) == (ws.settings.home / KEY_FILE).read_bytes()


def test_a_missing_key_file_is_refused_not_made_anew(ws: Workspace) -> None:
    path = ws.settings.home / KEY_FILE
    path.unlink()
    before = entries(ws)

    with pytest.raises(BadInput) as refused:
        run_resource(ws, "IDS")

    assert f"the quarantine key {path} is missing: restore that file" in str(refused.value)
    assert is_terminal(refused.value)
    assert not path.exists()
    assert entries(ws) == before


def test_another_key_is_refused(ws: Workspace) -> None:
    path = ws.settings.home / KEY_FILE
    path.write_bytes(os.urandom(32))

    with pytest.raises(BadInput) as refused:
        key_secret(ws)

    assert f"the quarantine key {path} is not the key the metadata store's masked row keys" in (
        str(refused.value)
    )


def test_a_key_that_is_not_32_bytes_is_refused(ws: Workspace) -> None:
    path = ws.settings.home / KEY_FILE
    path.write_bytes(path.read_bytes()[:5])

    with pytest.raises(BadInput) as refused:
        key_secret(ws)

    assert f"the quarantine key {path} holds 5 bytes, not 32: restore" in str(refused.value)


def test_digests_made_before_the_check_was_kept_still_refuse_a_missing_key(
    ws: Workspace,
) -> None:
    with ws.store.session() as s:
        s.execute(sa.delete(QuarantineKeyCheck))
    (ws.settings.home / KEY_FILE).unlink()

    with pytest.raises(BadInput, match="is missing: restore that file"):
        key_secret(ws)


def test_without_hard_links_the_key_is_created_exclusively(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_link(src: object, dst: object) -> None:
        raise OSError(errno.EPERM, "hard links not supported")

    monkeypatch.setattr(os, "link", no_link)
    (tmp_path / "catalog.yaml").write_text(
        catalog_yaml({"src": ("sqlite", "{path: src.db}")}, RESOURCE), "utf-8"
    )
    settings = Settings(home=tmp_path / "home", db_url=f"sqlite:///{tmp_path / 'x.db'}")
    ws = Workspace.open(tmp_path / "catalog.yaml", settings)
    try:
        secret = key_secret(ws)
    finally:
        ws.close()

    path = tmp_path / "home" / KEY_FILE
    assert path.read_bytes() == secret and len(secret) == 32
    assert path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == [KEY_FILE]


def test_reports_without_masked_keys_do_not_need_a_key(tmp_path: Path) -> None:
    (tmp_path / "catalog.yaml").write_text(
        catalog_yaml({"src": ("sqlite", "{path: src.db}")}, RESOURCE), "utf-8"
    )
    settings = Settings(home=tmp_path, db_url=f"sqlite:///{tmp_path / 'x.db'}")
    ws = Workspace.open(tmp_path / "catalog.yaml", settings)
    try:
        with ws.store.session() as s:  # a report on a resource whose keys are not masked
            s.add(ErrorReport(resource_code="PLAIN", reporter="tax", row_keys=["5"],
                              key_digests=None, fields=[], description="x",
                              due_at=dt.datetime(2026, 12, 4), status="open"))  # fmt: skip

        assert len(key_secret(ws)) == 32  # the first key is made, not refused
    finally:
        ws.close()
