"""The settings table of ``docs/settings.md``, rendered from ``service.config.SETTINGS``.

``python -m devtools.settings_docs`` (or ``make docs``) rewrites the tables between
the page's ``<!-- settings:start -->`` and ``<!-- settings:end -->`` markers;
``tests/unit/test_settings_docs.py`` fails while the page is behind the
declaration, so a setting cannot be added, renamed or given a new default
without its documentation following.
"""

from __future__ import annotations

from pathlib import Path

from devtools.generated_section import replaced, rewrite
from service.config import FIXED, PER_PROVIDER, SETTINGS, Setting

PAGE = Path(__file__).resolve().parent.parent / "docs" / "settings.md"
START, END = "<!-- settings:start -->", "<!-- settings:end -->"


def shown_default(setting: Setting) -> str:
    """The default as an operator would write it (or the declaration's words for it)."""
    if setting.shown is not None:
        return setting.shown
    value = setting.default
    if value is None or value == {} or value == ():
        return "none"
    if isinstance(value, bool):
        return f"`{int(value)}`"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int):
        return str(value)
    return f"`{value}`"


def meaning(setting: Setting) -> str:
    """The declared meaning; a family's also names its variables."""
    if setting.var is None or PER_PROVIDER not in setting.var:
        return setting.meaning
    names = ", ".join(f"`{var}`" for var in setting.variables())
    return f"{setting.meaning}; one per provider: {names}"


def group_table(group: str) -> str:
    settings = [s for s in SETTINGS if s.group == group]
    if group == FIXED:
        rows = ["| `Settings` field | meaning | value |", "|---|---|---|"]
        rows += [f"| `{s.field}` | {s.meaning} | {shown_default(s)} |" for s in settings]
    else:
        rows = ["| variable | meaning | default |", "|---|---|---|"]
        rows += [f"| `{s.var}` | {meaning(s)} | {shown_default(s)} |" for s in settings]
    return "\n".join(rows)


def settings_tables() -> str:
    """One section per group, in the declaration's order."""
    groups = list(dict.fromkeys(setting.group for setting in SETTINGS))
    sections = []
    for group in groups:
        intro = ""
        if group == FIXED:
            intro = "Fields of `Settings` that no variable sets (tests may replace them).\n\n"
        sections.append(f"### {group}\n\n{intro}{group_table(group)}")
    return "\n\n".join(sections)


def rendered(page: str) -> str:
    """``page`` with its generated section brought up to date."""
    return replaced(page, START, END, settings_tables())


def main() -> int:
    return rewrite(PAGE, START, END, settings_tables())


if __name__ == "__main__":
    raise SystemExit(main())
