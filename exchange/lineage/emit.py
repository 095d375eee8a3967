"""Sending lineage events: configured the standard way, off otherwise, never failing a run.

The client is openlineage-python's ``OpenLineageClient()``, which reads ``$OPENLINEAGE_URL``
(and ``$OPENLINEAGE_API_KEY``), ``$OPENLINEAGE_CONFIG``, ``./openlineage.yml``,
``~/.openlineage/openlineage.yml`` and ``OPENLINEAGE__TRANSPORT__*``. With none of them the
client would print every event to the console, so emission is off instead; so it is with
``OPENLINEAGE_DISABLED=true``. A configuration the client cannot turn into a transport (a
missing file, no transport type, an unknown type, a URL that is not http(s)) is no reason to
print the events or drop them (``transport``): they are spooled, the spool is kept, and one
warning per configuration and process says what to fix.

An event the transport fails to take (the HTTP transport raises on a refused connection or an
error status) is spooled as a file under ``$EXCHANGE_HOME/lineage-spool/``
(written to a temporary name, fsync'd, renamed: whole or absent), and every later emission
first replays the spool in order; while the spool cannot be emptied, new events join it behind
the old ones, so the receiver sees them in the order they were made. ``exchange tick`` replays
it too. A receiver that is down must not slow runs: the spool is the engine's retry, so the
HTTP transport makes one attempt (no retries of its own unless ``retry`` is configured) that
waits at most ``CONNECT_TIMEOUT`` seconds to connect, and after a failure this process spools
at once, without trying, for ``PAUSE_SECONDS`` (``replay``, i.e. ``exchange tick``, always
tries). One process at a time works on the spool (an ``flock`` on its lock file). Nothing here
raises into a run: a failure is a warning naming the event and the error's class, never the
error's text (it may quote a URL or a header with an API key).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import RunEvent
from openlineage.client.serde import Serde
from openlineage.client.transport.composite import CompositeTransport
from openlineage.client.transport.http import HttpTransport
from openlineage.client.transport.http_common import DEFAULT_RETRY_CONFIG

from exchange.kernel.modes import private_dirs
from exchange.lineage.config import configured
from exchange.lineage.structure import event_from_dict
from exchange.lineage.transport import Misconfigured, build

log = logging.getLogger(__name__)

SPOOL_DIR = "lineage-spool"
LOCK_FILE = ".lock"
SUFFIX = ".json"
_HOME_FILE = "~/.openlineage/openlineage.yml"

#: Seconds an HTTP transport may take to connect (its configured ``timeout`` still bounds
#: the answer): an unreachable host costs a run this much, once per pause.
CONNECT_TIMEOUT = 1.0
#: Seconds after a failed send during which this process spools without trying.
PAUSE_SECONDS = 60.0
#: The engine's HTTP retries when none are configured: none (the spool retries).
NO_RETRY: dict[str, Any] = {**DEFAULT_RETRY_CONFIG, "total": 0, "connect": 0, "read": 0}

_lock = threading.Lock()
_clients: dict[tuple[Any, ...], OpenLineageClient | Misconfigured] = {}
_warned: set[tuple[Any, ...]] = set()  # configurations whose misconfiguration was told
_seq = 0
_paused_until = 0.0  # time.monotonic() before which sends go straight to the spool


def _config_key() -> tuple[Any, ...]:
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("OPENLINEAGE")))
    # the configuration files as they are now: a file created or fixed is a new configuration
    files: list[tuple[str, int | None, int | None]] = []
    for name in (os.environ.get("OPENLINEAGE_CONFIG"), "openlineage.yml", _HOME_FILE):
        if name:
            try:
                st = os.stat(os.path.expanduser(name))
                files.append((name, st.st_mtime_ns, st.st_size))
            except OSError:
                files.append((name, None, None))
    return (env, os.getcwd(), os.path.expanduser("~"), tuple(files))


def client() -> OpenLineageClient:
    """The client of the current configuration (one per configuration and process);
    ``Misconfigured`` when that configuration names no transport the client can build."""
    key = _config_key()
    found = _clients.get(key)
    if found is None:
        try:
            found = build()
            _quick(found.transport)
        except Misconfigured as wrong:
            found = wrong
        _resume()  # a new configuration: its receiver is tried at once
        _clients.clear()
        _clients[key] = found
    if isinstance(found, Misconfigured):
        raise found
    return found


def _tell(wrong: Misconfigured, home: Path) -> None:
    """Warn once per configuration and process that events wait for a fix."""
    key = _config_key()
    if key in _warned:
        return
    _warned.add(key)
    log.warning(
        "lineage: %s; the events are kept in %s (%d now) and sent once that is fixed",
        wrong, spool_dir(home), len(spooled(home)),
    )  # fmt: skip


def _quick(transport: Any) -> None:
    """Make HTTP transports fail fast: no retries unless configured, a short connect."""
    if isinstance(transport, CompositeTransport):
        for inner in transport.transports:
            _quick(inner)
        return
    if not isinstance(transport, HttpTransport):
        return
    if transport.config.retry == DEFAULT_RETRY_CONFIG:  # not configured: the defaults
        transport.config.retry = dict(NO_RETRY)
        transport.session = requests.Session()  # mounted anew with the retries above
    read = float(transport.config.timeout)
    transport.timeout = (min(CONNECT_TIMEOUT, read), read)  # type: ignore[assignment]


def _pause() -> None:
    global _paused_until
    _paused_until = time.monotonic() + PAUSE_SECONDS


def _resume() -> None:
    global _paused_until
    _paused_until = 0.0


def paused() -> bool:
    """Whether a recent failure has this process spool without trying."""
    return time.monotonic() < _paused_until


def spool_dir(home: Path) -> Path:
    return home / SPOOL_DIR


@contextmanager
def _spool_locked(directory: Path) -> Iterator[None]:
    private_dirs(directory)
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        with _lock:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _spool(directory: Path, event: RunEvent) -> Path:
    """Write one event to the spool: a temporary name, fsync, rename (whole or absent)."""
    global _seq
    _seq += 1
    name = f"{time.time_ns():020d}-{os.getpid()}-{_seq:06d}{SUFFIX}"
    tmp = directory / (name + ".tmp")
    data = Serde.to_json(event).encode("utf-8")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, directory / name)
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return directory / name


def spooled(home: Path) -> list[Path]:
    """The spooled events, oldest first."""
    directory = spool_dir(home)
    if not directory.is_dir():
        return []
    return sorted(directory.glob("*" + SUFFIX))


def _describe(event: RunEvent) -> str:
    state = event.eventType.value if event.eventType is not None else "?"
    return f"{state} of {event.job.name} (run {event.run.runId})"


def _replay(ol: OpenLineageClient, home: Path) -> bool:
    """Send the spooled events in order, each file removed once sent; True when the spool is
    empty, False at the first one the transport still fails to take (sends then pause)."""
    for path in spooled(home):
        try:
            event = event_from_dict(json.loads(path.read_text(encoding="utf-8")))
        except Exception as exc:  # not an event (damaged by hand?): set aside, not resent
            path.rename(path.with_suffix(".bad"))
            log.warning(
                "lineage: spooled %s is not an event (%s): set aside", path.name, type(exc).__name__
            )
            continue
        try:
            ol.emit(event)
        except Exception as exc:
            _pause()
            log.warning(
                "lineage: the transport still fails (%s); %d event(s) wait in %s",
                type(exc).__name__, len(spooled(home)), spool_dir(home),
            )  # fmt: skip
            return False
        path.unlink()
    return True


def send(home: Path, events: Sequence[RunEvent]) -> int:
    """Emit ``events`` after whatever the spool holds; spool what fails. Returns how many
    events were sent now (spooled ones included). Never raises."""
    if not configured():
        return 0
    try:
        return _send(home, events)
    except Exception as exc:
        log.warning("lineage: could not emit %d event(s) (%s)", len(events), type(exc).__name__)
        return 0


def _send(home: Path, events: Sequence[RunEvent]) -> int:
    directory = spool_dir(home)
    sent = 0
    with _spool_locked(directory):
        try:
            ol = client()
        except Misconfigured as wrong:  # nowhere to send: all of them wait, the spool kept
            for event in events:
                _spool(directory, event)
            _tell(wrong, home)
            return 0
        before = len(spooled(home))
        clear = not paused() and _replay(ol, home)
        sent += before - len(spooled(home))
        for event in events:
            if clear:
                try:
                    ol.emit(event)
                    sent += 1
                    continue
                except Exception as exc:
                    _pause()
                    log.warning(
                        "lineage: could not send the %s (%s): spooled",
                        _describe(event), type(exc).__name__,
                    )  # fmt: skip
                    clear = False
            _spool(directory, event)
    return sent


def replay(home: Path) -> int:
    """Send what the spool holds (``exchange tick``), paused or not (a success ends the
    pause); returns how many were sent."""
    if not configured() or not spooled(home):
        return 0
    try:
        with _spool_locked(spool_dir(home)):
            try:
                ol = client()
            except Misconfigured as wrong:
                _tell(wrong, home)
                return 0
            before = len(spooled(home))
            if _replay(ol, home):
                _resume()
            return before - len(spooled(home))
    except Exception as exc:
        log.warning("lineage: could not replay the spool (%s)", type(exc).__name__)
        return 0
