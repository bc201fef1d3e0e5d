"""No Celery countdown/ETA in service code: waits go to the delayed set.

Celery's countdown and ETA keep a delayed task in worker memory, and on the
Redis broker a delay past the visibility timeout is delivered again and
again. Park the task instead (``state.delayed.DelayedSet.park``).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECKED = ("service", "providers")
# keyword arguments (countdown=5, eta = when) and option dicts ({"countdown": 5})
FORBIDDEN = re.compile(r"\b(countdown|eta)\s*=(?!=)|[\"'](countdown|eta)[\"']\s*:")


def offending_lines() -> list[str]:
    found = []
    for folder in CHECKED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if FORBIDDEN.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    return found


def test_service_code_never_uses_countdown_or_eta():
    assert (ROOT / "service").is_dir() and any((ROOT / "service").rglob("*.py"))
    assert offending_lines() == [], "park the task in the delayed set instead"


def test_the_pattern_catches_the_usual_forms():
    for line in (
        "self.retry(exc=exc, countdown=30)",
        "task.apply_async(args, eta = when)",
        'options = {"countdown": 5}',
    ):
        assert FORBIDDEN.search(line), line
    for line in ("beta=0.8", "if countdown == 0:", "estimated_time_to_regain_access"):
        assert not FORBIDDEN.search(line), line
