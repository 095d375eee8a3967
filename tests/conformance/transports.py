"""What every ``FileTransport`` must do (connectors/files/base.py), as one reusable suite.

A transport runs the suite by subclassing ``TransportConformance`` in a test module and
overriding its ``node`` fixture: a ``Node`` whose URL's base directory is ``base``, a fresh
empty local directory the test can see (the in-process test servers serve local
directories), so that every test arranges its files and checks the outcome on the disk itself,
not only through the transport under test. ``transport`` (a connection opened by
``open_transport``, closed afterwards) may be overridden too.

    class TestFileTransport(TransportConformance):
        @pytest.fixture(params=NODES)
        def node(self, request: pytest.FixtureRequest) -> Node: ...

tests/test_conformance_transports.py runs it on every transport the engine has.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from connectors.files import (
    AccessDenied,
    FileInfo,
    FileMissing,
    FileTransport,
    open_transport,
)
from exchange.kernel.errors import BadInput, is_terminal


@dataclass(frozen=True)
class Node:
    """A file node under test: how to open it and the local directory its base maps to."""

    kind: str  # the node kind given to open_transport
    url: str  # its connection URL; the URL's path is the node's base directory
    #: Where that base lies on the test's disk: empty at the start, in a directory of the
    #: test's own (the test of ``..`` puts a file beside it that must stay out of reach).
    base: Path
    known_hosts: str | None = None  # the platform's default known_hosts (open_transport's)
    #: Make a base-relative directory refuse writes (None: the test cannot arrange that here).
    deny: Callable[[str], None] | None = None


def put(node: Node, rel: str, data: bytes) -> bytes:
    """Place a file on the node's disk, behind the transport's back."""
    path = node.base / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def read_all(t: FileTransport, path: str, offset: int = 0) -> bytes:
    with t.open_read(path, offset) as fh:
        return b"".join(iter(lambda: fh.read(65_536), b""))


def write_all(t: FileTransport, path: str, data: bytes, offset: int = 0) -> None:
    with t.open_write(path, offset) as fh:
        for i in range(0, len(data), 65_536):
            fh.write(data[i : i + 65_536])


def paths(infos: Iterable[FileInfo]) -> list[str]:
    return sorted(i.path for i in infos)


class TransportConformance:
    """The behaviour of connectors.files.base.FileTransport; override ``node``."""

    @pytest.fixture
    def node(self) -> Node:
        raise NotImplementedError("a conformance test module overrides the node fixture")

    @pytest.fixture
    def transport(self, node: Node) -> Iterator[FileTransport]:
        with open_transport("conformance", node.kind, node.url, known_hosts=node.known_hosts) as t:
            yield t

    # -- stat ---------------------------------------------------------------------------
    def test_stat_gives_a_files_path_size_and_mtime(
        self, node: Node, transport: FileTransport
    ) -> None:
        put(node, "out/a.csv", b"id,name\n1,x\n")

        info = transport.stat("out/a.csv")

        assert info is not None
        assert (info.path, info.size) == ("out/a.csv", 12)
        assert abs(info.mtime - (node.base / "out/a.csv").stat().st_mtime) < 2

    def test_stat_of_a_missing_file_is_none(self, node: Node, transport: FileTransport) -> None:
        put(node, "out/a.csv", b"x")
        assert transport.stat("out/nothing.csv") is None
        assert transport.stat("nowhere/nothing.csv") is None

    def test_stat_of_a_directory_is_none(self, node: Node, transport: FileTransport) -> None:
        put(node, "out/a.csv", b"x")
        assert transport.stat("out") is None

    # -- list_dir and walk ------------------------------------------------------------------
    def test_list_dir_gives_files_and_directories_by_their_paths_under_the_base(
        self, node: Node, transport: FileTransport
    ) -> None:
        put(node, "out/a.csv", b"12345")
        put(node, "out/sub/b.csv", b"x")
        (node.base / "out/empty").mkdir()

        entries = sorted(transport.list_dir("out"), key=lambda e: e[0].path)

        assert [(i.path, is_dir) for i, is_dir in entries] == [
            ("out/a.csv", False),
            ("out/empty", True),
            ("out/sub", True),
        ]
        assert entries[0][0].size == 5
        assert [(i.path, d) for i, d in transport.list_dir("")] == [("out", True)]

    def test_list_dir_of_a_missing_directory_is_file_missing_and_terminal(
        self, node: Node, transport: FileTransport
    ) -> None:
        with pytest.raises(FileMissing) as err:
            list(transport.list_dir("no/such/dir"))
        assert is_terminal(err.value)
        assert "'conformance'" in str(err.value)  # the message names the node

    def test_walk_without_recursion_gives_the_files_of_one_directory(
        self, node: Node, transport: FileTransport
    ) -> None:
        for rel in ("out/a.csv", "out/b.csv", "out/sub/c.csv", "other/d.csv"):
            put(node, rel, rel.encode())

        assert paths(transport.walk("out", recursive=False)) == ["out/a.csv", "out/b.csv"]

    def test_walk_with_recursion_gives_every_file_below_with_its_size(
        self, node: Node, transport: FileTransport
    ) -> None:
        for rel in ("out/a.csv", "out/sub/c.csv", "out/sub/deeper/e.csv", "other/d.csv"):
            put(node, rel, rel.encode())
        (node.base / "out/empty").mkdir()

        found = list(transport.walk("out", recursive=True))

        assert paths(found) == ["out/a.csv", "out/sub/c.csv", "out/sub/deeper/e.csv"]
        assert {i.path: i.size for i in found}["out/sub/deeper/e.csv"] == len(
            "out/sub/deeper/e.csv"
        )
        assert paths(transport.walk("", recursive=True)) == [
            "other/d.csv",
            "out/a.csv",
            "out/sub/c.csv",
            "out/sub/deeper/e.csv",
        ]

    def test_walk_of_a_missing_directory_is_file_missing(
        self, node: Node, transport: FileTransport
    ) -> None:
        with pytest.raises(FileMissing):
            list(transport.walk("no/such/dir", recursive=True))

    # -- read -------------------------------------------------------------------------------
    def test_read_from_offset_zero_gives_the_whole_file_across_chunks(
        self, node: Node, transport: FileTransport
    ) -> None:
        data = put(node, "big.bin", os.urandom(2_500_000))  # more than two 1 MiB chunks
        assert read_all(transport, "big.bin") == data

    def test_read_from_an_offset_gives_the_rest_of_the_file(
        self, node: Node, transport: FileTransport
    ) -> None:
        data = put(node, "f.bin", os.urandom(300_000))
        for offset in (1, 65_536, 299_999, 300_000):
            assert read_all(transport, "f.bin", offset) == data[offset:], offset

    def test_reading_a_missing_file_is_file_missing_and_terminal(
        self, node: Node, transport: FileTransport
    ) -> None:
        with pytest.raises(FileMissing) as err:
            read_all(transport, "missing.csv")
        assert is_terminal(err.value)
        assert "'conformance'" in str(err.value)

    def test_a_read_closed_before_its_end_leaves_the_connection_usable(
        self, node: Node, transport: FileTransport
    ) -> None:
        data = put(node, "big.bin", os.urandom(2_000_000))
        with transport.open_read("big.bin") as fh:
            assert fh.read(10) == data[:10]
        assert read_all(transport, "big.bin", 1_999_990) == data[1_999_990:]
        info = transport.stat("big.bin")
        assert info is not None and info.size == len(data)

    def test_reads_writes_and_stat_after_a_listing_are_byte_for_byte(
        self, node: Node, transport: FileTransport
    ) -> None:
        # Line ends too: a listing must not leave the connection in a text mode.
        data = put(node, "out/a.bin", b"id\r\n1\n2\r\n\x00\xff" * 1000)
        put(node, "out/sub/b.bin", b"x")

        assert len(list(transport.list_dir("out"))) == 2
        assert len(list(transport.walk("", recursive=True))) == 2

        info = transport.stat("out/a.bin")
        assert info is not None and info.size == len(data)
        assert read_all(transport, "out/a.bin") == data
        write_all(transport, "out/c.bin", data)
        assert (node.base / "out/c.bin").read_bytes() == data

    def test_read_text_gives_the_first_bytes_of_a_small_file_as_text(
        self, node: Node, transport: FileTransport
    ) -> None:
        put(node, "a.csv.md5", "营业执照 ok\n".encode())
        assert transport.read_text("a.csv.md5") == "营业执照 ok\n"
        put(node, "b.csv.md5", "营业执照".encode())
        assert transport.read_text("b.csv.md5", limit=3) == "营"  # one character: 3 bytes

    # -- write ------------------------------------------------------------------------------
    def test_write_from_zero_creates_the_file(self, node: Node, transport: FileTransport) -> None:
        data = os.urandom(2_500_000)
        put(node, "in/keep.txt", b"")
        write_all(transport, "in/new.bin", data)
        assert (node.base / "in/new.bin").read_bytes() == data

    def test_write_from_zero_truncates_an_existing_file(
        self, node: Node, transport: FileTransport
    ) -> None:
        put(node, "a.txt", b"a much longer old content\n")
        write_all(transport, "a.txt", b"new\n")
        assert (node.base / "a.txt").read_bytes() == b"new\n"

    def test_write_from_an_offset_keeps_the_prefix_and_resumes(
        self, node: Node, transport: FileTransport
    ) -> None:
        data = os.urandom(200_000)
        put(node, "part.bin", data[:123_456])  # what an interrupted upload left

        write_all(transport, "part.bin", data[123_456:], offset=123_456)

        assert (node.base / "part.bin").read_bytes() == data

    def test_a_zero_byte_file_is_written_stat_listed_and_read_as_empty(
        self, node: Node, transport: FileTransport
    ) -> None:
        transport.makedirs("in")
        write_all(transport, "in/empty.ok", b"")

        assert (node.base / "in/empty.ok").read_bytes() == b""
        info = transport.stat("in/empty.ok")
        assert info is not None and info.size == 0
        assert [(i.path, i.size) for i in transport.walk("in", recursive=False)] == [
            ("in/empty.ok", 0)
        ]
        assert read_all(transport, "in/empty.ok") == b""
        assert transport.read_text("in/empty.ok") == ""

    def test_a_refused_directory_is_access_denied_and_terminal(
        self, node: Node, transport: FileTransport
    ) -> None:
        if node.deny is None:
            pytest.skip(f"cannot make a directory refuse writes on this {node.kind} node")
        (node.base / "ro").mkdir()
        node.deny("ro")

        with pytest.raises(AccessDenied) as err:
            write_all(transport, "ro/r.txt", b"x")

        assert is_terminal(err.value)
        assert "'conformance'" in str(err.value)
        assert not (node.base / "ro/r.txt").exists()

    # -- rename, remove, makedirs -----------------------------------------------------------
    def test_rename_moves_a_file(self, node: Node, transport: FileTransport) -> None:
        put(node, "in/a.exchange-part", b"payload")
        transport.rename("in/a.exchange-part", "in/a.csv")
        assert (node.base / "in/a.csv").read_bytes() == b"payload"
        assert not (node.base / "in/a.exchange-part").exists()

    def test_rename_onto_an_existing_file_replaces_it(
        self, node: Node, transport: FileTransport
    ) -> None:
        put(node, "in/a.csv", b"old version")
        put(node, "in/a.exchange-part", b"new version")

        transport.rename("in/a.exchange-part", "in/a.csv")

        assert (node.base / "in/a.csv").read_bytes() == b"new version"
        assert not (node.base / "in/a.exchange-part").exists()

    def test_rename_onto_an_existing_file_never_leaves_it_missing_where_atomic(
        self, node: Node, transport: FileTransport
    ) -> None:
        if not transport.atomic_replace:
            pytest.skip(f"{type(transport).__name__} does not promise an atomic replace")
        target = node.base / "in/a.csv"
        put(node, "in/a.csv", b"version 0")
        missing: list[int] = []
        stop = threading.Event()

        def watch() -> None:  # a reader on the node's side, looking all the time
            while not stop.is_set():
                if not target.exists():
                    missing.append(1)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            for i in range(1, 6):
                put(node, "in/a.exchange-part", f"version {i}".encode())
                transport.rename("in/a.exchange-part", "in/a.csv")
        finally:
            stop.set()
            watcher.join(5)

        assert target.read_bytes() == b"version 5"
        assert not missing, "the target was missing while it was being replaced"

    def test_remove_deletes_a_file(self, node: Node, transport: FileTransport) -> None:
        put(node, "in/a.csv", b"x")
        put(node, "in/b.csv", b"y")
        transport.remove("in/a.csv")
        assert sorted(p.name for p in (node.base / "in").iterdir()) == ["b.csv"]

    def test_removing_a_missing_file_is_not_an_error(
        self, node: Node, transport: FileTransport
    ) -> None:
        put(node, "in/b.csv", b"y")
        transport.remove("in/missing.csv")
        transport.remove("in/missing.csv")
        assert (node.base / "in/b.csv").exists()

    def test_makedirs_creates_nested_directories(
        self, node: Node, transport: FileTransport
    ) -> None:
        transport.makedirs("in/2026/11/24")
        assert (node.base / "in/2026/11/24").is_dir()
        write_all(transport, "in/2026/11/24/a.csv", b"x")
        assert (node.base / "in/2026/11/24/a.csv").read_bytes() == b"x"

    def test_makedirs_of_existing_directories_is_fine(
        self, node: Node, transport: FileTransport
    ) -> None:
        put(node, "in/2026/keep.csv", b"x")
        transport.makedirs("in/2026")  # all there
        transport.makedirs("in/2026/12")  # partly there
        transport.makedirs("")  # the base itself
        assert (node.base / "in/2026/12").is_dir()
        assert (node.base / "in/2026/keep.csv").read_bytes() == b"x"

    # -- paths ------------------------------------------------------------------------------
    def test_paths_cannot_climb_out_of_the_base(self, node: Node, transport: FileTransport) -> None:
        outside = node.base.parent / "outside.txt"
        outside.write_bytes(b"not the node's")
        put(node, "in/a.csv", b"x")
        operations: dict[str, Callable[[str], object]] = {
            "stat": transport.stat,
            "list_dir": lambda p: list(transport.list_dir(p)),
            "walk": lambda p: list(transport.walk(p, recursive=True)),
            "open_read": lambda p: read_all(transport, p),
            "open_write": lambda p: write_all(transport, p, b"overwritten"),
            "rename from": lambda p: transport.rename(p, "in/b.csv"),
            "rename onto": lambda p: transport.rename("in/a.csv", p),
            "remove": transport.remove,
            "makedirs": transport.makedirs,
            "read_text": transport.read_text,
        }
        for name, op in operations.items():
            for path in ("../outside.txt", "in/../../outside.txt", "..", "a/../../.."):
                with pytest.raises(BadInput, match="leaves the node's base directory"):
                    op(path)
                assert outside.read_bytes() == b"not the node's", (name, path)
        assert sorted(p.name for p in node.base.parent.iterdir()) == sorted(
            [node.base.name, "outside.txt"]
        )
        assert (node.base / "in/a.csv").read_bytes() == b"x"

    def test_an_absolute_path_is_taken_under_the_base(
        self, node: Node, transport: FileTransport
    ) -> None:
        put(node, "in/a.csv", b"x")
        info = transport.stat("/in/a.csv")
        assert info is not None and info.path == "in/a.csv"
        write_all(transport, "/in/b.csv", b"y")
        assert (node.base / "in/b.csv").read_bytes() == b"y"

    def test_chinese_file_and_directory_names_round_trip(
        self, node: Node, transport: FileTransport
    ) -> None:
        data = "统一社会信用代码,企业名称\n".encode()
        transport.makedirs("企业年报/2026年")
        write_all(transport, "企业年报/2026年/营业执照 扫描件.pdf", data)

        assert (node.base / "企业年报/2026年/营业执照 扫描件.pdf").read_bytes() == data
        assert paths(transport.walk("企业年报", recursive=True)) == [
            "企业年报/2026年/营业执照 扫描件.pdf"
        ]
        info = transport.stat("企业年报/2026年/营业执照 扫描件.pdf")
        assert info is not None and info.size == len(data), info
        transport.rename("企业年报/2026年/营业执照 扫描件.pdf", "企业年报/2026年/年报.pdf")
        assert read_all(transport, "企业年报/2026年/年报.pdf") == data
        put(node, "市场监管/名单.csv", b"x")
        assert [(i.path, d) for i, d in transport.list_dir("市场监管")] == [
            ("市场监管/名单.csv", False)
        ]

    # -- sha256 -----------------------------------------------------------------------------
    def test_sha256_is_none_or_the_files_digest(self, node: Node, transport: FileTransport) -> None:
        data = put(node, "a.bin", os.urandom(1_500_000))
        put(node, "empty.bin", b"")
        for path, content in (("a.bin", data), ("empty.bin", b"")):
            digest = transport.sha256(path)
            assert digest is None or digest == hashlib.sha256(content).hexdigest(), path
