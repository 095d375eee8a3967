"""Airflow plugin: the exchange REST API inside the Airflow 3 api-server, under ``/exchange``,
and the API gateway under ``/gateway`` (``exchange gateway`` runs it on its own, faster).

Airflow loads it from its plugins folder (``AIRFLOW__CORE__PLUGINS_FOLDER`` = this directory,
``dags/plugins``; ``dags/.airflowignore`` keeps the DAG processor out of it). The app opens its
workspace from the environment (``EXCHANGE_CATALOG``, ``EXCHANGE_HOME``, ``EXCHANGE_DB_URL``) at
its first request, so loading the plugin touches no database. OpenAPI: ``/exchange/docs``.

Every task process loads the plugins folder too (for the plugins' macros and listeners, when it
builds the task's template context), and only the api-server mounts apps: so the two apps, and
the API's and the gateway's imports, are built the first time something reads
``fastapi_apps`` (the api-server, ``airflow plugins``), never when a task starts.
"""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

from airflow.plugins_manager import AirflowPlugin

log = logging.getLogger(__name__)


@cache
def _apps() -> list[dict[str, Any]]:
    from exchange.api import create_app
    from exchange.gateway.app import create_app as create_gateway

    return [
        {"app": create_app(), "url_prefix": "/exchange", "name": "city-exchange API"},
        # The API gateway (departments' calls with authorization codes): it opens its
        # workspace, upstream clients, Redis and spool at its first call, as the API does.
        {"app": create_gateway(), "url_prefix": "/gateway", "name": "city-exchange gateway"},
    ]


class _BuiltWhenRead:
    """A class attribute whose value is built on its first read, from the class or an
    instance alike (Airflow reads plugin attributes from instances of the plugin class)."""

    def __get__(self, instance: object, owner: type | None = None) -> list[dict[str, Any]]:
        try:
            return _apps()
        except Exception:
            # What Airflow did when the module failed to import: the api-server runs on,
            # without the exchange's apps, and says why.
            log.exception("city-exchange plugin: cannot build the API apps")
            return []


class ExchangePlugin(AirflowPlugin):
    """Mounts ``exchange.api.create_app()`` and the gateway on the api-server."""

    name = "city_exchange"
    fastapi_apps = _BuiltWhenRead()  # type: ignore[assignment]
