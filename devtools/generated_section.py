"""A generated section of a Markdown page, between two HTML-comment markers.

The provider table (README) and the settings tables (docs/settings.md) are
both kept this way: the page is prose, the part between the markers is made
from the code, and a test checks that it is up to date.
"""

from __future__ import annotations

import sys
from pathlib import Path


def replaced(page: str, start: str, end: str, body: str) -> str:
    """``page`` with what stands between ``start`` and ``end`` replaced by ``body``."""
    head, _, rest = page.partition(start)
    _, _, tail = rest.partition(end)
    return f"{head}{start}\n{body}\n{end}{tail}"


def rewrite(path: Path, start: str, end: str, body: str) -> int:
    """Bring ``path``'s generated section up to date; 2 when its markers are missing."""
    text = path.read_text()
    if start not in text or end not in text:
        print(f"{path}: no {start} … {end} markers", file=sys.stderr)
        return 2
    path.write_text(replaced(text, start, end, body))
    return 0
