"""Resolve a node's connection *reference* to a URL at the moment it is needed.

One resolver for every caller: inside an Airflow task the Airflow connection is read through
Airflow (so secrets backends work and Airflow masks the password in task logs); in the CLI an
Airflow connection id falls back to the ``AIRFLOW_CONN_<ID>`` environment variable, read the
same way Airflow reads it (a URI or JSON). ``resolve_secret`` does the same for a credential
alone (an upstream HTTP node's token): the connection's password.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

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
            raise BadInput(f"node {node.name!r}: environment variable ${ref.env} {_unset(value)}")
        return value
    if ref.airflow_conn_id is None:  # an http node: a base URL and auth, no connection
        raise BadInput(f"node {node.name!r} is {node.kind}: it has no connection to open")
    url = _from_airflow(ref.airflow_conn_id) or airflow_conn_from_env(ref.airflow_conn_id)
    if url is None:
        raise BadInput(
            f"node {node.name!r}: airflow connection {ref.airflow_conn_id!r} is not defined "
            f"(set AIRFLOW_CONN_{ref.airflow_conn_id.upper()} or add it in Airflow)"
        )
    return url


def _airflow_password(conn_id: str) -> str | None:
    """The password of an Airflow connection read through Airflow (inside a task); ``""`` for
    one without a password, None where Airflow is absent or does not know it."""
    try:
        from airflow.sdk import BaseHook  # only present where Airflow is installed
    except ImportError:
        return None
    try:
        return str(BaseHook.get_connection(conn_id).password or "")
    except Exception:  # outside a task, or not defined there: fall back to the environment
        return None


def _env_conn_password(conn_id: str) -> str | None:
    """The password of ``AIRFLOW_CONN_<ID>`` (a URI or Airflow's JSON form); None when unset."""
    name = f"AIRFLOW_CONN_{conn_id.upper()}"
    raw = os.environ.get(name)
    if raw is None:
        return None
    raw = raw.strip()
    if raw.startswith("{"):
        try:
            doc = json.loads(raw)
        except json.JSONDecodeError:
            raise BadInput(f"{name} is neither a URI nor JSON") from None
        return str(doc.get("password") or "") if isinstance(doc, dict) else ""
    try:
        password = urlsplit(raw).password
    except ValueError:  # a malformed port or host: said without the text, which holds the secret
        raise BadInput(f"{name} is neither a URI nor JSON") from None
    return unquote(password or "")


def resolve_secret(ref: ConnectionSource, what: str) -> str:
    """The secret ``ref`` points to (never print or log it): an environment variable's value,
    or an Airflow connection's password (through Airflow inside a task, else
    ``AIRFLOW_CONN_<ID>``). ``what`` names the holder in messages ("node 'prov_gw'")."""
    if ref.env is not None:
        value = os.environ.get(ref.env)
        if not value:
            raise BadInput(f"{what}: environment variable {ref.env} {_unset(value)}")
        return value
    if ref.airflow_conn_id is not None:
        conn_id = ref.airflow_conn_id
        password = _airflow_password(conn_id)
        if password is None:
            password = _env_conn_password(conn_id)
        if password is None:
            raise BadInput(
                f"{what}: airflow connection {conn_id!r} is not defined "
                f"(set AIRFLOW_CONN_{conn_id.upper()} or add it in Airflow)"
            )
        if not password:
            raise BadInput(f"{what}: airflow connection {conn_id!r} has no password")
        return password
    raise BadInput(
        f"{what}: a credential comes from an environment variable ({{env: VAR}}) or an "
        f"Airflow connection ({{airflow_conn_id: ID}}), not a path"
    )


def _unset(value: str | None) -> str:
    """Why an environment variable gives nothing: an operator looks for a missing export and
    for an empty one in different places."""
    return "is not set" if value is None else "is set but empty"
