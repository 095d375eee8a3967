"""Lineage events a receiver misses are spooled and replayed: an HTTP receiver on loopback is
killed in the middle of a run; the run still succeeds, its closing event waits in
``$EXCHANGE_HOME/lineage-spool/``; once the receiver is back the next emission (or
``exchange tick``'s replay) sends it first, in order: no event lost, none sent twice."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from exchange.cli.app import app
from exchange.flow import QuietReporter, run_resource
from exchange.lineage import emit
from exchange.lineage.events import run_uuid
from exchange.workflow.grants import add_subscription
from exchange.workspace import Workspace
from tests.conftest import catalog_yaml
from tests.lineage_check import assert_valid
from tests.test_exchange_sqlite import FAR, RESOURCE, T0, make_source


class Receiver:
    """A lineage receiver (``POST /api/v1/lineage``) on a fixed loopback port that can be
    killed and started again; what it got, in order, survives its restarts."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.got: list[dict[str, Any]] = []
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        got = self.got

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                got.append(json.loads(body))
                self.send_response(201)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def kill(self) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()
        self.server = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Receiver]:
    for k in list(os.environ):
        if k.startswith("OPENLINEAGE"):
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)
    r = Receiver(free_port())
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "http")
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__URL", f"http://127.0.0.1:{r.port}")
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TIMEOUT", "2")
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__RETRY", '{"total": 0}')
    r.start()
    yield r
    if r.server is not None:
        r.kill()


class KillAtExtract(QuietReporter):
    """Kills the receiver when the run starts extracting: after START, before COMPLETE."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver

    def task(self, label: str, total: int | None) -> Callable[[int], None]:
        if label.startswith("extract") and self.receiver.server is not None:
            self.receiver.kill()
        return super().task(label, total)


def exchange(tmp_path: Path, make_workspace: Callable[[str], Workspace]) -> Workspace:
    nodes = {n: ("sqlite", f"{{path: {n}.db}}") for n in ("src", "a", "b")}
    ws = make_workspace(catalog_yaml(nodes, RESOURCE.replace("MODE", "incremental")))
    make_source(tmp_path / "src.db", [(i, f"企业{i}", f"内部{i}", T0) for i in range(1, 51)])
    add_subscription(ws, "R1", "a", ["id", "name"], FAR)
    add_subscription(ws, "R1", "b", ["id", "name", "secret_note"], FAR)
    return ws


def sent(r: Receiver) -> list[tuple[str, str]]:
    return [(e["run"]["runId"], e["eventType"]) for e in r.got]


def test_a_receiver_killed_mid_run_loses_no_event_and_gets_none_twice(
    tmp_path: Path,
    make_workspace: Callable[[str], Workspace],
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(emit, "PAUSE_SECONDS", 0.0)  # the next emission tries at once
    ws = exchange(tmp_path, make_workspace)

    first = run_resource(ws, "R1", reporter=KillAtExtract(receiver))

    assert first.status == "succeeded"  # the receiver's death is no failure of the run
    one = run_uuid(ws.installation_id, first.run_id)
    assert sent(receiver) == [(one, "START")]
    assert len(emit.spooled(tmp_path)) == 1  # the COMPLETE waits on disk

    receiver.start()
    make_source(tmp_path / "src.db", [(51, "新企业", None, T0)])
    second = run_resource(ws, "R1")

    two = run_uuid(ws.installation_id, second.run_id)
    assert sent(receiver) == [(one, "START"), (one, "COMPLETE"), (two, "START"), (two, "COMPLETE")]
    assert emit.spooled(tmp_path) == []
    assert_valid(receiver.got)


def test_while_the_receiver_is_down_new_events_queue_behind_the_spooled_ones(
    tmp_path: Path, make_workspace: Callable[[str], Workspace], receiver: Receiver
) -> None:
    ws = exchange(tmp_path, make_workspace)
    receiver.kill()

    runs = [run_resource(ws, "R1").run_id, run_resource(ws, "R1").run_id]

    assert receiver.got == []
    assert len(emit.spooled(tmp_path)) == 4
    receiver.start()
    env = {"EXCHANGE_HOME": str(tmp_path), "EXCHANGE_CATALOG": ws.catalog.path}
    tick = CliRunner().invoke(app, ["tick"], env=env)
    assert tick.exit_code == 0, tick.output
    assert "lineage: 4 spooled event(s) sent" in tick.output
    ids = [run_uuid(ws.installation_id, r) for r in runs]
    assert sent(receiver) == [(i, s) for i in ids for s in ("START", "COMPLETE")]
    assert emit.replay(tmp_path) == 0
    assert_valid(receiver.got)


def test_a_failed_send_warns_without_the_api_key(
    tmp_path: Path,
    make_workspace: Callable[[str], Workspace],
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv(
        "OPENLINEAGE__TRANSPORT__AUTH", '{"type": "api_key", "apiKey": "k-SECRET-1"}'
    )
    ws = exchange(tmp_path, make_workspace)
    receiver.kill()

    assert run_resource(ws, "R1").status == "succeeded"

    assert "spooled" in caplog.text
    assert "k-SECRET-1" not in caplog.text
    assert "k-SECRET-1" not in "".join(p.read_text() for p in emit.spooled(tmp_path))


class Refusing:
    """A receiver that is down: it accepts each connection and closes it at once, counting
    the attempts."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.attempts = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.attempts += 1
            conn.close()


def test_a_receiver_that_is_down_costs_one_quick_attempt_then_events_spool_at_once(
    tmp_path: Path, make_workspace: Callable[[str], Workspace], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Configured by OPENLINEAGE_URL alone (the client's default retries), a dead receiver
    is tried once, without the transport's retries; the process then spools without trying
    (``exchange tick`` replays), so the runs pay no timeout and no backoff."""
    for k in list(os.environ):
        if k.startswith("OPENLINEAGE"):
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)
    down = Refusing()
    monkeypatch.setenv("OPENLINEAGE_URL", f"http://127.0.0.1:{down.port}")
    ws = exchange(tmp_path, make_workspace)

    started = time.monotonic()
    assert run_resource(ws, "R1").status == "succeeded"
    assert run_resource(ws, "R1").status == "succeeded"
    took = time.monotonic() - started
    down.sock.close()

    assert down.attempts == 1
    assert len(emit.spooled(tmp_path)) == 4  # none lost: both runs' START and COMPLETE
    assert emit.paused()
    assert took < 20, took  # the client's own retries alone took ~9 s a send


def configure(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """The OpenLineage configuration of this process becomes ``env`` alone."""
    for k in list(os.environ):
        if k.startswith("OPENLINEAGE"):
            monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)


def http_env(r: Receiver) -> dict[str, str]:
    return {
        "OPENLINEAGE__TRANSPORT__TYPE": "http",
        "OPENLINEAGE__TRANSPORT__URL": f"http://127.0.0.1:{r.port}",
        "OPENLINEAGE__TRANSPORT__TIMEOUT": "2",
        "OPENLINEAGE__TRANSPORT__RETRY": '{"total": 0}',
    }


#: Configurations the client cannot turn into a transport, and the words that say what to fix.
MISCONFIGURED = {
    "a missing OPENLINEAGE_CONFIG file": (
        {"OPENLINEAGE_CONFIG": "{tmp}/missing.yml"},
        None,
        "OPENLINEAGE_CONFIG names {tmp}/missing.yml, which is not a readable file",
    ),
    "a file without a transport": (
        {},
        "facets: {}\n",
        "no transport type is set in {tmp}/openlineage.yml",
    ),
    "a file that is not YAML": ({}, "transport: [http\n", "{tmp}/openlineage.yml is not a"),
    "variables without a type": (
        {"OPENLINEAGE__TRANSPORT__URL": "http://k-SECRET-2@127.0.0.1:9"},
        None,
        "no transport type is set in the OPENLINEAGE__TRANSPORT__* variables",
    ),
    "an unknown transport type": (
        {"OPENLINEAGE__TRANSPORT__TYPE": "bogus"},
        None,
        "transport type 'bogus' is unknown (OPENLINEAGE__TRANSPORT__TYPE)",
    ),
    "OPENLINEAGE_URL that is not a URL": (
        {"OPENLINEAGE_URL": "k-SECRET-2-not-a-url"},
        None,
        "OPENLINEAGE_URL is not an http(s) URL",
    ),
    "an http transport's url that is not a URL": (
        {"OPENLINEAGE__TRANSPORT__TYPE": "http", "OPENLINEAGE__TRANSPORT__URL": "k-SECRET-2"},
        None,
        "OPENLINEAGE__TRANSPORT__URL is not an http(s) URL",
    ),
    "an http transport without a url": (
        {"OPENLINEAGE__TRANSPORT__TYPE": "http"},
        None,
        "transport type 'http' needs a url (OPENLINEAGE__TRANSPORT__URL)",
    ),
}


@pytest.mark.parametrize("case", list(MISCONFIGURED))
def test_a_configuration_that_names_no_usable_transport_keeps_every_event_and_says_what_to_fix(
    case: str,
    tmp_path: Path,
    make_workspace: Callable[[str], Workspace],
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two events wait in the spool (the receiver was down); then the configuration is one the
    client would turn into its console transport or fail to build. Nothing is printed or
    dropped: the spool keeps the old events and the new ones, one warning says what is wrong
    and where (never the configured value), and once the configuration is good again one
    replay sends them all, in order, each once."""
    env, yml, words = MISCONFIGURED[case]
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    ws = exchange(tmp_path, make_workspace)
    receiver.kill()
    runs = [run_resource(ws, "R1").run_id]
    assert len(emit.spooled(tmp_path)) == 2
    caplog.clear()

    configure(monkeypatch, {k: v.format(tmp=tmp_path) for k, v in env.items()})
    monkeypatch.setenv("OPENLINEAGE_API_KEY", "k-SECRET-1")
    if yml is not None:
        (tmp_path / "openlineage.yml").write_text(yml, encoding="utf-8")
    runs += [run_resource(ws, "R1").run_id, run_resource(ws, "R1").run_id]

    assert len(emit.spooled(tmp_path)) == 6  # the spool kept, the new events behind it
    told = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(told) == 1, told  # once, not per run or per event
    assert words.format(tmp=tmp_path) in told[0]
    assert "lineage-spool" in told[0]
    assert "SECRET" not in caplog.text
    assert "eventType" not in capsys.readouterr().out  # never the console
    assert "not enough values" not in caplog.text and "console." not in caplog.text

    (tmp_path / "openlineage.yml").unlink(missing_ok=True)
    configure(monkeypatch, http_env(receiver))
    receiver.start()
    env_cli = {"EXCHANGE_HOME": str(tmp_path), "EXCHANGE_CATALOG": ws.catalog.path}
    tick = CliRunner().invoke(app, ["tick"], env=env_cli)

    assert tick.exit_code == 0, tick.output
    assert "lineage: 6 spooled event(s) sent" in tick.output
    ids = [run_uuid(ws.installation_id, r) for r in runs]
    assert sent(receiver) == [(i, s) for i in ids for s in ("START", "COMPLETE")]
    assert emit.spooled(tmp_path) == []
    assert emit.replay(tmp_path) == 0
    assert_valid(receiver.got)


def test_creating_the_file_openlineage_config_names_sends_the_spool_with_the_next_run(
    tmp_path: Path,
    make_workspace: Callable[[str], Workspace],
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A missing configuration file is fixed by creating it: the same process's next
    emission sees it, sends what waited first, then the new events, none twice."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    ws = exchange(tmp_path, make_workspace)
    named = tmp_path / "conf" / "openlineage.yml"
    configure(monkeypatch, {"OPENLINEAGE_CONFIG": str(named)})
    first = run_resource(ws, "R1").run_id
    assert len(emit.spooled(tmp_path)) == 2
    assert emit.replay(tmp_path) == 0  # tick's replay keeps them too

    named.parent.mkdir()
    named.write_text(
        "transport:\n  type: http\n"
        f"  url: http://127.0.0.1:{receiver.port}\n  timeout: 2\n  retry: {{total: 0}}\n",
        encoding="utf-8",
    )
    second = run_resource(ws, "R1").run_id

    ids = [run_uuid(ws.installation_id, r) for r in (first, second)]
    assert sent(receiver) == [(i, s) for i in ids for s in ("START", "COMPLETE")]
    assert emit.spooled(tmp_path) == []
