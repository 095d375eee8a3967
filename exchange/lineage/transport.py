"""The OpenLineage client of the standard configuration, or, when that configuration names no
transport the client can build, a plain statement of what to fix and where.

openlineage-python turns a configuration it cannot use into one of two things: a console
transport (``$OPENLINEAGE_CONFIG`` naming a missing file, a file or variables without a
transport type), which would "take" every event, the spooled ones too, and print them; or an
exception whose text is the library's (``not enough values to unpack``) and may quote a URL
with a key in it. So the configuration is read here first, as the client reads it (the
variable's file, ``./openlineage.yml``, ``~/.openlineage/openlineage.yml``, then the
``OPENLINEAGE__`` variables over it, and ``$OPENLINEAGE_URL``), the client is built with its
own log quiet, and the transport it built is checked for the console fallback. Whatever is
wrong raises ``Misconfigured``, whose message names the variable or file to fix and never a
value (a URL or a header may hold a key); the caller keeps the events in its spool.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from openlineage.client import OpenLineageClient
from openlineage.client.transport import get_default_factory
from openlineage.client.transport.composite import CompositeTransport
from openlineage.client.transport.console import ConsoleTransport

ENV_PREFIX = "OPENLINEAGE__"
_ALIASED = "OPENLINEAGE__TRANSPORT__TRANSPORTS__DEFAULT_HTTP__"
_HTTP_KINDS = ("http", "async_http")


class Misconfigured(Exception):
    """The configuration names no transport the client can build; the message says what to
    fix and where, without a configured value."""


@dataclass(frozen=True)
class Configuration:
    """The transport section as the client would see it, and where each part comes from."""

    transport: dict[str, Any]
    file: Path | None  # the YAML file the client reads, if any
    env: dict[str, str]  # OPENLINEAGE__ variables, by their upper-case name


def build() -> OpenLineageClient:
    """The client of the current configuration; ``Misconfigured`` when it would print to the
    console instead, or cannot be built."""
    config = read_configuration()
    problem = diagnose(config)
    if problem is not None:
        raise Misconfigured(problem)
    before = {k: v for k, v in os.environ.items() if k.startswith(_ALIASED)}
    try:
        with _library_quiet():
            ol = OpenLineageClient()
    except Exception as exc:
        raise Misconfigured(
            f"openlineage-python could not build the transport configured in "
            f"{_sources(config)} ({type(exc).__name__}): check its settings"
        ) from None
    finally:
        # The client copies $OPENLINEAGE_URL into OPENLINEAGE__TRANSPORT__TRANSPORTS__...
        # variables of this process; they are put back as they were, so that the process's
        # configuration stays what its owner set (and unsetting the URL turns lineage off).
        for k in [k for k in os.environ if k.startswith(_ALIASED)]:
            if k not in before:
                del os.environ[k]
        os.environ.update(before)
    if _has_console(ol.transport) and "console" not in _declared_types(config.transport):
        raise Misconfigured(
            f"no transport could be made of {_sources(config)} (openlineage-python would "
            "print the events to the console): declare one as docs/lineage.md shows"
        )
    return ol


def read_configuration() -> Configuration:
    """The transport section the client would use; ``Misconfigured`` when its file is
    missing or not YAML."""
    named = os.environ.get("OPENLINEAGE_CONFIG")
    if named and not _readable(Path(named)):
        raise Misconfigured(f"OPENLINEAGE_CONFIG names {named}, which is not a readable file")
    file = _config_file()
    from_file: Any = {}
    if file is not None:
        try:
            from_file = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark is not None else ""
            raise Misconfigured(f"{file} is not a readable YAML file{where}") from None
        if not isinstance(from_file, dict):
            raise Misconfigured(f"{file} is not a YAML mapping (transport: ...)")
    env = {k.upper(): v for k, v in os.environ.items() if k.upper().startswith(ENV_PREFIX)}
    from_env = _env_config(env)
    url = os.environ.get("OPENLINEAGE_URL")
    if url and not any(k.startswith(_ALIASED) for k in env):
        # the client adds $OPENLINEAGE_URL as the HTTP transport "default_http" of a composite
        section = from_env.setdefault("transport", {})
        if isinstance(section, dict):
            inner = section.setdefault("transports", {})
            if isinstance(inner, dict):
                inner["default_http"] = {"type": "http", "url": url}
    transport = _merge(_mapping(from_file.get("transport")), _mapping(from_env.get("transport")))
    return Configuration(transport=transport, file=file, env=env)


def diagnose(config: Configuration) -> str | None:
    """What is wrong with the transport section, in plain words naming where; None if
    nothing is seen before the client builds it."""
    if not config.transport.get("type"):
        url = os.environ.get("OPENLINEAGE_URL")
        if url:  # the client's HTTP transport of $OPENLINEAGE_URL
            return None if _http_url(url) else "OPENLINEAGE_URL is not an http(s) URL"
        return (
            f"no transport type is set in {_sources(config)}: set transport.type in the file "
            "or OPENLINEAGE__TRANSPORT__TYPE"
        )
    return _check(config, config.transport, ["transport"])


def _check(config: Configuration, section: dict[str, Any], keys: list[str]) -> str | None:
    kind = section.get("type")
    where = _origin(config, [*keys, "type"])
    if not isinstance(kind, str) or not kind:
        return f"the transport at {_origin(config, keys)} declares no type"
    known = get_default_factory().transports
    if kind not in known and "." not in kind:
        names = ", ".join(sorted(known))
        return f"transport type '{kind}' is unknown ({where}); known types: {names}"
    if kind not in known and not _importable(kind):
        return f"transport type '{kind}' ({where}) names no class that can be imported"
    if kind in _HTTP_KINDS:
        url_at = _origin(config, [*keys, "url"])
        if kind == "async_http" and keys == ["transport"] and not section.get("url"):
            url = os.environ.get("OPENLINEAGE_URL")  # the client copies it there
            if url:
                return None if _http_url(url) else "OPENLINEAGE_URL is not an http(s) URL"
        if not section.get("url"):
            return f"transport type '{kind}' needs a url ({url_at})"
        if not _http_url(section["url"]):
            return f"{url_at} is not an http(s) URL"
    if kind == "composite":
        return _check_composite(config, section, keys)
    return None


def _check_composite(config: Configuration, section: dict[str, Any], keys: list[str]) -> str | None:
    inner: Any = section.get("transports")
    named: list[tuple[str, Any]]
    if isinstance(inner, dict):
        named = [(str(name), value) for name, value in inner.items() if value]
    elif isinstance(inner, list):
        named = [(str(i), value) for i, value in enumerate(inner)]
    else:
        missing = _origin(config, [*keys, "transports"])
        return f"the composite transport needs transports ({missing})"
    if not named:
        return f"the composite transport lists no transport ({_origin(config, keys)})"
    for name, value in named:
        at = [*keys, "transports", name]
        if at == ["transport", "transports", "default_http"] and _url_aliased(config):
            # the client puts $OPENLINEAGE_URL here, as an HTTP transport
            if not _http_url(os.environ["OPENLINEAGE_URL"]):
                return "OPENLINEAGE_URL is not an http(s) URL"
            continue
        if not isinstance(value, dict):
            return f"the transport at {_origin(config, at)} is not a mapping"
        problem = _check(config, value, at)
        if problem is not None:
            return problem
    return None


def _url_aliased(config: Configuration) -> bool:
    return bool(os.environ.get("OPENLINEAGE_URL")) and not any(
        k.startswith(_ALIASED) for k in config.env
    )


def _origin(config: Configuration, keys: list[str]) -> str:
    """The variable that sets ``keys`` (or the nearest one above, holding JSON), else the
    key in the file."""
    for i in range(len(keys), 0, -1):
        name = ENV_PREFIX + "__".join(keys[:i]).upper()
        if name in config.env:
            return name
    if config.file is not None:
        return f"{'.'.join(keys)} in {config.file}"
    return ENV_PREFIX + "__".join(keys).upper()


def _sources(config: Configuration) -> str:
    parts = [str(config.file)] if config.file is not None else []
    if any(k.startswith(ENV_PREFIX + "TRANSPORT") for k in config.env):
        parts.append("the OPENLINEAGE__TRANSPORT__* variables")
    return " and ".join(parts) or "the OpenLineage configuration"


def _config_file() -> Path | None:
    """The YAML file the client reads, in the client's order."""
    named = os.environ.get("OPENLINEAGE_CONFIG")
    candidates = [Path(named)] if named else []
    candidates += [Path.cwd() / "openlineage.yml"]
    candidates += [Path(os.path.expanduser("~/.openlineage")) / "openlineage.yml"]
    return next((p for p in candidates if _readable(p)), None)


def _readable(path: Path) -> bool:
    try:
        return path.is_file() and os.access(path, os.R_OK)
    except OSError:
        return False


def _env_config(env: dict[str, str]) -> dict[str, Any]:
    """``OPENLINEAGE__A__B=v`` as ``{"a": {"b": v}}``, as the client reads them: a value is
    JSON when it parses, else the string; a shorter name wins over a longer one under it."""
    config: dict[str, Any] = {}
    for name, raw in sorted(env.items(), reverse=True):
        keys = [k.lower() for k in name[len(ENV_PREFIX) :].split("__")]
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        current = config
        for key in keys[:-1]:
            nested = current.get(key)
            if not isinstance(nested, dict):
                nested = current[key] = {}
            current = nested
        current[keys[-1]] = value
    return config


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _http_url(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parts = urlsplit(value.strip())
        return parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        return False


def _importable(path: str) -> bool:
    module, _, name = path.rpartition(".")
    try:
        return hasattr(importlib.import_module(module), name)
    except Exception:  # any failure of a user's module: it cannot be used
        return False


def _declared_types(section: Any) -> set[str]:
    if isinstance(section, dict):
        found = {section["type"]} if isinstance(section.get("type"), str) else set()
        for value in section.values():
            found |= _declared_types(value)
        return found
    if isinstance(section, list):
        return set().union(*(_declared_types(v) for v in section)) if section else set()
    return set()


def _has_console(transport: Any) -> bool:
    if isinstance(transport, ConsoleTransport):
        return True
    if isinstance(transport, CompositeTransport):
        return any(_has_console(t) for t in transport.transports)
    return False


@contextmanager
def _library_quiet() -> Iterator[None]:
    """The client's own log off while it is built (it quotes values, and says "will print
    events to console" of a fallback that is refused here); left alone when the user asked
    for it with ``$OPENLINEAGE_CLIENT_LOGGING``."""
    if os.environ.get("OPENLINEAGE_CLIENT_LOGGING"):
        yield
        return
    names = ["openlineage"]
    names += [n for n in logging.root.manager.loggerDict if n.startswith("openlineage.")]
    loggers = [logging.getLogger(n) for n in names]
    before = [logger.level for logger in loggers]
    for logger in loggers:  # a logger with a level of its own would not inherit the parent's
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for logger, level in zip(loggers, before, strict=True):
            logger.setLevel(level)
