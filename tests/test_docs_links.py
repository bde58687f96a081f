"""The README and the documentation pages link to files and sections that exist.

Sections move between pages (the README links into docs/, the pages into each other, the metric's card
and METHOD.md); a link to a renamed heading or a moved file fails here, naming the page and the link.
Links to web addresses are not followed (the tests are offline).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# The pages read: README.md and every page of docs/.
PAGES = ["README.md", *sorted(path.relative_to(REPO).as_posix() for path in (REPO / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)\)")  # [text](target), ![alt](target)


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def prose(path: Path) -> list[str]:
    """The lines of a Markdown file outside fenced code blocks (a fence's info string has no backtick)."""
    lines, fence = [], None
    for line in path.read_text(encoding="utf-8").splitlines():
        opening = re.match(r"^(`{3,}|~{3,})([^`]*)$", line)
        if fence is None and opening:
            fence = opening.group(1)
        elif fence is not None and line.strip() == fence:
            fence = None
        elif fence is None:
            lines.append(line)
    return lines


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file (a repeated one gets -1, -2, ...)."""
    seen: dict[str, int] = {}
    found = set()
    for line in prose(path):
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            name = anchor(heading.group(1))
            count = seen.get(name, 0)
            seen[name] = count + 1
            found.add(name if count == 0 else f"{name}-{count}")
    return found


def links(page: str) -> list[str]:
    return [
        match.group(1) for line in prose(REPO / page) for match in LINK.finditer(re.sub(r"`[^`]*`", "", line))
    ]


def broken(page: str) -> list[str]:
    problems = []
    for target in links(page):
        if re.match(r"^[a-z]+:", target):  # https:, mailto:
            continue
        path_part, _, fragment = target.partition("#")
        path = (REPO / page).parent / path_part if path_part else REPO / page
        if not path.resolve().is_relative_to(REPO.resolve()) or not path.exists():
            problems.append(f"{target}: no such file")
        elif fragment and path.suffix == ".md" and fragment not in anchors(path):
            problems.append(f"{target}: {path.relative_to(REPO)} has no heading with that anchor")
    return problems


@pytest.mark.parametrize("page", PAGES)
def test_every_link_points_at_an_existing_file_and_heading(page):
    assert broken(page) == [], page


def test_every_docs_page_is_reachable_from_the_readme_or_the_index():
    """No page of docs/ is left where no reader finds it."""
    linked = set()
    for page in ("README.md", "docs/index.md"):
        for target in links(page):
            path = ((REPO / page).parent / target.partition("#")[0]).resolve()
            linked.add(path)
    pages = {path.resolve() for path in (REPO / "docs").glob("*.md")} - {
        (REPO / "docs" / "index.md").resolve()
    }
    assert pages <= linked, sorted(path.name for path in pages - linked)


def test_the_readme_stays_short():
    """The README is the pitch, the set-up, one example per entry point and links; the rest lives in docs/."""
    assert len((REPO / "README.md").read_bytes()) <= 15_000
