"""The REST API (FastAPI): ``create_app()``; ``exchange serve`` runs it, Airflow mounts it."""

from exchange.api.app import create_app

__all__ = ["create_app"]
