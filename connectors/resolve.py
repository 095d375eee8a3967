"""Resolve a node's connection *reference* to a URL at the moment it is needed.

One resolver for every caller: inside an Airflow task the Airflow connection is read through
Airflow (so secrets backends work and Airflow masks the password in task logs); in the CLI an
Airflow connection id falls back to the ``AIRFLOW_CONN_<ID>`` environment variable, read the
same way Airflow reads it (a URI or JSON).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.engine import URL

from exchange.kernel.errors import BadInput
from exchange.kernel.kinds import NODE_KINDS


class ConnectionSource(Protocol):
    """Where a node's connection comes from (the catalog's ``ConnectionRef``): exactly one of
    an environment variable, an Airflow connection id or a path; never the secret itself."""

    @property
    def env(self) -> str | None: ...

    @property
    def airflow_conn_id(self) -> str | None: ...

    @property
    def path(self) -> str | None: ...


class Node(Protocol):
    """What the resolver reads of a front-end node (the catalog's ``FrontEnd``)."""

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def connection(self) -> ConnectionSource: ...


# Airflow connection types -> node kinds: each kind by its own name (a local directory is a
# path in the catalog, never a connection), plus the names Airflow's providers use.
_CONN_TYPES = {k: k for k in NODE_KINDS if k != "local"} | {
    "postgres": "postgresql",
    "mariadb": "mysql",
    "ssh": "sftp",
}
# Extras of file connections (file names and settings, never secrets), carried as URL query
# parameters.
_FILE_EXTRAS = ("key_file", "known_hosts", "ca_file", "client")


def _from_airflow(conn_id: str) -> str | None:
    try:
        from airflow.sdk import BaseHook  # only present where Airflow is installed
    except ImportError:
        return None
    try:
        return str(BaseHook.get_connection(conn_id).get_uri())
    except Exception:  # outside a task, or not defined there: fall back to the environment
        return None


def _airflow_json_to_url(doc: dict[str, Any], conn_id: str) -> str:
    conn_type = _CONN_TYPES.get(str(doc.get("conn_type", "")).lower())
    if conn_type is None:
        raise BadInput(
            f"airflow connection {conn_id!r}: unsupported conn_type {doc.get('conn_type')!r}"
        )
    url = URL.create(
        conn_type,
        username=doc.get("login"),
        password=doc.get("password"),
        host=doc.get("host"),
        port=doc.get("port"),
        database=doc.get("schema"),
    )
    extra = doc.get("extra") or {}
    if isinstance(extra, str):
        extra = json.loads(extra or "{}")
    query = {k: str(extra[k]) for k in _FILE_EXTRAS if conn_type in ("sftp", "ftps") and k in extra}
    return url.update_query_dict(query).render_as_string(hide_password=False)


def airflow_conn_from_env(conn_id: str) -> str | None:
    """``AIRFLOW_CONN_<ID>`` as a URL, whether it holds a URI or Airflow's JSON form."""
    raw = os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}")
    if raw is None:
        return None
    raw = raw.strip()
    if raw.startswith("{"):
        try:
            return _airflow_json_to_url(json.loads(raw), conn_id)
        except json.JSONDecodeError:
            raise BadInput(f"AIRFLOW_CONN_{conn_id.upper()} is neither a URI nor JSON") from None
    return raw


def resolve_url(node: Node, base_dir: str | Path = ".") -> str:
    """The node's connection URL (it may hold a secret: never print or log it)."""
    ref = node.connection
    if ref.path is not None:
        path = Path(ref.path)
        if not path.is_absolute():
            path = Path(base_dir) / path
        if node.kind == "local":  # a directory on this machine
            return path.resolve().as_uri()
        return f"sqlite:///{path.resolve()}"
    if ref.env is not None:
        value = os.environ.get(ref.env)
        if not value:
            raise BadInput(f"node {node.name!r}: environment variable ${ref.env} is not set")
        return value
    assert ref.airflow_conn_id is not None
    url = _from_airflow(ref.airflow_conn_id) or airflow_conn_from_env(ref.airflow_conn_id)
    if url is None:
        raise BadInput(
            f"node {node.name!r}: airflow connection {ref.airflow_conn_id!r} is not defined "
            f"(set AIRFLOW_CONN_{ref.airflow_conn_id.upper()} or add it in Airflow)"
        )
    return url
