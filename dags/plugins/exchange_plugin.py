"""Airflow plugin: the exchange REST API inside the Airflow 3 api-server, under ``/exchange``,
and the API gateway under ``/gateway`` (``exchange gateway`` runs it on its own, faster).

Airflow loads it from its plugins folder (``AIRFLOW__CORE__PLUGINS_FOLDER`` = this directory,
``dags/plugins``; ``dags/.airflowignore`` keeps the DAG processor out of it). The app opens its
workspace from the environment (``EXCHANGE_CATALOG``, ``EXCHANGE_HOME``, ``EXCHANGE_DB_URL``) at
its first request, so loading the plugin touches no database. OpenAPI: ``/exchange/docs``.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from exchange.api import create_app
from exchange.gateway.app import create_app as create_gateway


class ExchangePlugin(AirflowPlugin):
    """Mounts ``exchange.api.create_app()`` on the api-server."""

    name = "city_exchange"
    fastapi_apps = [
        {"app": create_app(), "url_prefix": "/exchange", "name": "city-exchange API"},
        # The API gateway (departments' calls with authorization codes): it opens its
        # workspace, upstream clients, Redis and spool at its first call, as the API does.
        {"app": create_gateway(), "url_prefix": "/gateway", "name": "city-exchange gateway"},
    ]
