"""The repository documents itself: a stranger who clones it can follow every reference.

The README is short and starts with the two set-up commands; every relative link in the
README and docs/ resolves to a file of the repository; nothing points outside it (to design
notes or source documents a cloner does not have); user-facing pages carry no issue numbers or
notes for the next developer; every source-document reference in the code and the docs
("001 附件4", "004 §9") is explained in docs/rules.md; every path the Makefile names exists.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
RULES = DOCS / "rules.md"
README_MAX_LINES = 150
# development.md is for people changing the engine: the one page where work notes belong.
DEVELOPER_PAGES = {"development.md"}

LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")
# "exchange code issue 7" is a command (issuing subscription 7's code), not an issue number.
ISSUE = re.compile(r"(?<!code )\bissues?[\s-]*#?\d+|(?:^|[\s(])#\d+\b", re.IGNORECASE)
WORK_NOTE = re.compile(r"next session|next developer|state for the next", re.IGNORECASE)
OUTSIDE = ("../shared", "DESIGN.md", "/work/", "seeds/")
# A source document (000-004) and the part of it cited: a section (§9), an attachment (附件4)
# or a named part (申请, 评价).
CITATION = re.compile(r"(?<![\w.-])(00[0-4])\s*(§\s*\d+|附件\s*\d+|[\u4e00-\u9fff]{2,})")
SOURCE_TREES = ("exchange", "connectors", "quality", "schemas", "dags", "docker", "bench")
SOURCE_SUFFIXES = {".py", ".yaml", ".yml", ".json", ".sh", ".md"}


def pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def user_pages() -> list[Path]:
    return [p for p in pages() if p.name not in DEVELOPER_PAGES or p.parent != DOCS]


def prose(path: Path) -> str:
    """The page's text; fenced blocks included (a transcript can point outside too)."""
    return path.read_text(encoding="utf-8")


def relative_links(path: Path) -> list[str]:
    out: list[str] = []
    for target in LINK.findall(prose(path)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("#"):
            continue  # a URL (http:, mailto:) or an anchor on the same page
        out.append(target.split("#", 1)[0])
    return out


def _where(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("page", pages(), ids=_where)
def test_every_relative_link_resolves_to_a_file_of_the_repository(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        resolved = (page.parent / target).resolve()
        if not resolved.is_relative_to(ROOT) or not resolved.exists():
            broken.append(target)
    assert not broken, f"{_where(page)} links to what a clone does not have: {broken}"


@pytest.mark.parametrize("page", pages(), ids=_where)
def test_no_page_points_outside_the_repository(page: Path) -> None:
    text = prose(page)
    found = [needle for needle in OUTSIDE if needle in text]
    assert not found, f"{_where(page)} refers outside the repository: {found}"


@pytest.mark.parametrize("page", user_pages(), ids=_where)
def test_user_pages_carry_no_issue_numbers_or_work_notes(page: Path) -> None:
    lines = prose(page).splitlines()
    found = [
        f"line {n}: {line.strip()}"
        for n, line in enumerate(lines, 1)
        if ISSUE.search(line) or WORK_NOTE.search(line)
    ]
    assert not found, f"{_where(page)} has development notes: {found}"


def test_the_readme_is_short() -> None:
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines, at most {README_MAX_LINES}"


def setup_block(text: str) -> list[str]:
    """The command lines of the first fenced block, which must come before any section."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("## "):
            raise AssertionError(f"README.md: section {line!r} comes before the set-up commands")
        if FENCE.match(line):
            block: list[str] = []
            for inner in lines[i + 1 :]:
                if FENCE.match(inner):
                    return block
                if inner.strip() and not inner.strip().startswith("#"):
                    block.append(inner.split("#", 1)[0].strip())
            raise AssertionError("README.md: the set-up block is never closed")
    raise AssertionError("README.md has no fenced block of set-up commands")


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", text, re.MULTILINE))


def test_the_readme_starts_with_the_two_set_up_commands() -> None:
    commands = setup_block(README.read_text(encoding="utf-8"))
    assert commands == ["make demo", "make test"], f"README.md starts with {commands}"
    assert {"demo", "test"} <= make_targets()


def makefile_paths() -> list[str]:
    """Paths the Makefile names (recipes and comments): anything with a slash or a file
    suffix, but not what a variable expands to (``$(BIN)/python``)."""
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    found = re.findall(
        r"(?<![\w$().-])((?:[\w.-]+/)+[\w.-]*|[\w-]+\.(?:toml|txt|md|sh|py|yaml|json))",
        text,
    )
    return sorted({path.rstrip(".") for path in found})  # a sentence's full stop is no part


def test_every_path_the_makefile_names_exists() -> None:
    paths = makefile_paths()
    assert "docker/local/stack.sh" in paths  # the scan sees the recipes' paths
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert not missing, f"the Makefile names paths a clone does not have: {missing}"


def citations() -> dict[tuple[str, str], str]:
    """Every (document, part) cited in the code and the docs, with one place citing it."""
    files = [p for p in pages() if p != RULES]
    for tree in SOURCE_TREES:
        files += [p for p in (ROOT / tree).rglob("*") if p.suffix in SOURCE_SUFFIXES]
    found: dict[tuple[str, str], str] = {}
    for path in files:
        for doc, part in CITATION.findall(path.read_text(encoding="utf-8", errors="replace")):
            found.setdefault((doc, re.sub(r"\s+", "", part)), _where(path))
    return found


def rules_sections() -> dict[str, str]:
    """docs/rules.md's text per source document, from its '## 00N — title' heading."""
    sections: dict[str, str] = {}
    current = None
    for line in RULES.read_text(encoding="utf-8").splitlines():
        heading = re.match(r"^## (00[0-4])\b", line)
        if heading:
            current = heading.group(1)
            sections[current] = ""
        elif line.startswith("## "):
            current = None
        elif current:
            sections[current] += re.sub(r"\s+", "", line)
    return sections


def test_rules_names_each_source_document() -> None:
    assert set(rules_sections()) == {"000", "001", "002", "003", "004"}


def test_every_source_reference_is_explained_in_rules() -> None:
    sections = rules_sections()
    cited = citations()
    assert ("001", "附件4") in cited and ("004", "§9") in cited  # the scan finds them
    unexplained = [
        f"{doc} {part} (cited in {where})"
        for (doc, part), where in sorted(cited.items())
        if part not in sections.get(doc, "")
    ]
    assert not unexplained, f"docs/rules.md does not explain: {unexplained}"


@pytest.mark.parametrize("page", [p for p in pages() if p != RULES], ids=_where)
def test_a_page_citing_a_source_document_links_to_rules(page: Path) -> None:
    if not CITATION.search(prose(page)):
        return
    assert any(Path(t).name == "rules.md" for t in relative_links(page)), (
        f"{_where(page)} cites a source document but does not link to docs/rules.md"
    )
