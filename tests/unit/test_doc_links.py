"""Every relative link in the documentation resolves: the file exists and the
``#anchor``, if any, is a heading of it (GitHub's slugs)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: the documentation a newcomer follows from the README
PAGES = sorted(
    [ROOT / "README.md", ROOT / "bench" / "README.md", ROOT / "simulator" / "README.md"]
    + list((ROOT / "docs").glob("*.md"))
)

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
LINK = re.compile(r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # https:, mailto:, …


def _prose(text: str) -> str:
    """``text`` without fenced code blocks (a ``# comment`` there is no heading)."""
    return FENCE.sub("", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text, lower case, punctuation dropped,
    spaces as hyphens."""
    text = LINK.sub(r"\1", heading).replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading's anchor, repeated ones numbered as GitHub does (``-1``, ``-2``)."""
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.findall(_prose(page.read_text())):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def relative_links(page: Path) -> list[str]:
    text = CODE_SPAN.sub("", _prose(page.read_text()))
    return [target for _, target in LINK.findall(text) if not EXTERNAL.match(target)]


def broken(page: Path) -> list[str]:
    """The links of ``page`` that lead nowhere, each with the reason."""
    problems = []
    for target in relative_links(page):
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.exists():
            problems.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{target}: no heading #{anchor} in {resolved.name}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    assert broken(page) == []


def test_the_readme_links_to_every_other_page():
    linked = {link.partition("#")[0] for link in relative_links(ROOT / "README.md")}
    others = {str(page.relative_to(ROOT)) for page in PAGES} - {"README.md"}
    assert others - linked == set()


@pytest.mark.parametrize(
    "heading, expected",
    [
        ("Secrets and their rotation", "secrets-and-their-rotation"),
        ("PostgreSQL, Redis, the broker and cron", "postgresql-redis-the-broker-and-cron"),
        ("What a third-party app may read (2026)", "what-a-third-party-app-may-read-2026"),
        ("Seen in real recorded responses (`tests/fixtures/real/`)",
         "seen-in-real-recorded-responses-testsfixturesreal"),
        ("Control endpoints (`/_sim/`, never counted)", "control-endpoints-_sim-never-counted"),
        ("[Providers](#providers) and more", "providers-and-more"),
    ],
)  # fmt: skip
def test_slugs_are_githubs(heading, expected):
    assert slug(heading) == expected


def test_a_broken_link_is_found(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n## Two words\n\n[ok](#two-words) [bad](#three) [gone](missing.md)\n"
        "```\n# not a heading\n[in code](nowhere.md)\n```\n`[span](nowhere.md)`\n"
    )
    assert broken(page) == ["#three: no heading #three in page.md", "missing.md: no such file"]
