"""The ``files`` section of a file or folder resource, as a typed object, and its checks."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from exchange.kernel.kinds import FILE_NODE_KINDS

MARKER_SUFFIXES = {"ok": ".ok", "done": ".done", "md5": ".md5"}


@dataclass(frozen=True)
class FilesSpec:
    """Where the files lie on the provider's node and how they move.

    ``path`` is a directory (folder resources, and file resources with a ``pattern``) or one
    file (a file resource without a pattern), relative to the node's base directory.
    """

    path: str
    pattern: str | None = None
    recursive: bool = False
    mirror: bool = False
    marker: Literal["none", "ok", "done", "md5"] = "none"
    format: Literal["binary", "csv", "xlsx"] = "binary"
    encoding: Literal["auto", "utf-8", "gbk", "gb18030"] = "auto"
    delimiter: str = ","
    sheet: str | None = None
    verify: Literal["sha256", "size"] = "sha256"
    target_dir: str | None = None

    @property
    def tabular(self) -> bool:
        return self.format in ("csv", "xlsx")

    @property
    def marker_suffix(self) -> str | None:
        return MARKER_SUFFIXES.get(self.marker)


def files_spec(doc: dict[str, Any] | None, kind: str) -> FilesSpec | None:
    """Build the spec from a schema-valid ``files`` mapping (None when absent)."""
    if not doc:
        return None
    return FilesSpec(
        path=doc["path"],
        pattern=doc.get("pattern"),
        recursive=doc.get("recursive", kind == "folder"),
        mirror=doc.get("mirror", False),
        marker=doc.get("marker", "none"),
        format=doc.get("format", "binary"),
        encoding=doc.get("encoding", "auto"),
        delimiter=doc.get("delimiter", ","),
        sheet=doc.get("sheet"),
        verify=doc.get("verify", "sha256"),
        target_dir=doc.get("target_dir"),
    )


def files_problems(
    r: dict[str, Any], provider: dict[str, Any] | None
) -> Iterator[tuple[list[str | int], str]]:
    """Cross-checks of a resource's ``files`` section (paths relative to the resource)."""
    files = r.get("files")
    kind = r.get("kind")
    if files is not None and kind not in ("file", "folder"):
        yield ["files"], f"only file and folder resources have a files section, not {kind}"
        return
    if kind not in ("file", "folder") or not isinstance(files, dict):
        return
    if provider is not None and provider.get("kind") not in FILE_NODE_KINDS:
        yield (
            ["provider"],
            f"a {kind} resource needs a file node (sftp, ftp, ftps, local), "
            f"{r['provider']!r} is {provider.get('kind')}",
        )
    path = str(files.get("path", ""))
    if any(part == ".." for part in path.replace("\\", "/").split("/")):
        yield ["files", "path"], "the path must not climb out of the node's base with '..'"
    fmt = files.get("format", "binary")
    if fmt != "binary":
        if kind != "file":
            yield ["files", "format"], f"format {fmt} needs a file resource, not a folder"
        if r.get("fields") and not r.get("primary_key"):
            yield (
                ["primary_key"],
                f"a {fmt} resource with fields is delivered as a table: it needs a primary_key",
            )
    elif "encoding" in files or "delimiter" in files or "sheet" in files:
        yield ["files", "format"], "encoding, delimiter and sheet need format csv or xlsx"
    if fmt == "binary" and r.get("fields"):
        yield ["fields"], "fields describe a tabular file: set files.format to csv or xlsx"
