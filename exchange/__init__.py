"""The exchange engine: catalog, metadata store, pipeline steps and the CLI."""

from __future__ import annotations

DISTRIBUTION = "city-exchange"


def __getattr__(name: str) -> str:
    """``exchange.__version__``: the installed distribution's version, read on first use (every
    module of the engine imports this package; most never ask)."""
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"
