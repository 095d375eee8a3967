"""Which files of the provider's node make up a resource: pattern, recursion, markers."""

from __future__ import annotations

import fnmatch
import posixpath
from dataclasses import dataclass

from connectors.files import FileInfo, FileTransport, clean_path
from exchange.catalog.files_spec import MARKER_SUFFIXES, FilesSpec

PART_SUFFIX = ".exchange-part"  # our temporary upload names; never part of a resource


@dataclass(frozen=True)
class Listing:
    """A resource's files now: ready ones by relative path, and every path that exists."""

    ready: dict[str, FileInfo]  # relative path -> info (path in info is node-relative)
    present: frozenset[str]  # every relative path present, ready or not
    waiting: tuple[str, ...]  # files whose completion marker is not there yet


def source_root(spec: FilesSpec, t: FileTransport) -> tuple[str, FileInfo | None]:
    """The directory the resource's relative paths start at, and the file if ``path`` is one."""
    path = clean_path(spec.path)
    if spec.pattern is None:
        single = t.stat(path)
        if single is not None:
            return posixpath.dirname(path), single
    return path, None


def list_resource(spec: FilesSpec, t: FileTransport) -> Listing:
    """List the resource on the node; apply the pattern and the completion-marker rule."""
    root, single = source_root(spec, t)
    infos = [single] if single is not None else list(t.walk(root, spec.recursive))
    by_rel = {posixpath.relpath(i.path, root) if root else i.path: i for i in infos}
    markers = set(MARKER_SUFFIXES.values())
    suffix = spec.marker_suffix
    ready: dict[str, FileInfo] = {}
    present: set[str] = set()
    waiting: list[str] = []
    for rel, info in sorted(by_rel.items()):
        name = posixpath.basename(rel)
        if name.endswith(PART_SUFFIX) or (suffix is not None and name.endswith(tuple(markers))):
            continue
        if spec.pattern is not None and not fnmatch.fnmatchcase(name, spec.pattern):
            continue
        present.add(rel)
        if suffix is not None and rel + suffix not in by_rel:
            waiting.append(rel)
            continue
        ready[rel] = info
    return Listing(ready, frozenset(present), tuple(waiting))


def marker_path(spec: FilesSpec, info: FileInfo) -> str | None:
    """The node-relative path of a file's completion marker, if the resource uses one."""
    return info.path + spec.marker_suffix if spec.marker_suffix else None
