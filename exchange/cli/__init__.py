"""The ``exchange`` command line (typer + rich): a thin face over the services in ``exchange``."""
