"""The README's provider table, rendered from the registry.

``python -m devtools.provider_docs`` rewrites the table between the README's
``<!-- providers:start -->`` and ``<!-- providers:end -->`` markers;
``tests/unit/test_provider_docs.py`` fails while the README is behind the
registry, so a new provider cannot be forgotten in the docs.
"""

from __future__ import annotations

from pathlib import Path

import providers
from devtools.generated_section import replaced, rewrite

README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- providers:start -->", "<!-- providers:end -->"


def quota_spec(limits) -> str:
    """The default quota as ``QUOTA_<PROVIDER>`` would write it."""
    return ",".join(
        f"{q.limit}/{q.window_s:g}/{q.scope}" + ("/adaptive" if q.adaptive else "") for q in limits
    )


def announced_spec(rules) -> str:
    """The limits a provider announces, as documented (the gate's prior): ``limit/window``
    per key, ``paging`` for a rule of paging calls only."""
    if not rules:
        return "none"
    parts = [
        f"{r.limit}/{r.window_s:g}" + (" paging" if r.applies_to == "paging" else "") for r in rules
    ]
    return f"{', '.join(parts)} per {rules[0].scope}"


def provider_table() -> str:
    rows = [
        "| provider | base URL setting (default) | relations | limits it announces "
        "(documented) | default `QUOTA_<PROVIDER>` | `PRICE_<PROVIDER>` | auth | pagination "
        "| page size |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, cls in providers.provider_classes().items():
        rows.append(
            f"| [{name}]({cls.DOCS}) | `{name.upper()}_API_URL` ({cls.API_URL}) "
            f"| {', '.join(cls.RELATIONS)} | {announced_spec(cls.ANNOUNCED_RULES)} "
            f"| `{quota_spec(cls.QUOTAS)}` | {cls.PRICE_USD:g} "
            f"| {cls.AUTH.value} | {cls.PAGINATION.value} | {cls.PAGE_SIZE} |"
        )
    return "\n".join(rows)


def rendered(readme: str) -> str:
    """``readme`` with its generated section brought up to date."""
    return replaced(readme, START, END, provider_table())


def main() -> int:
    return rewrite(README, START, END, provider_table())


if __name__ == "__main__":
    raise SystemExit(main())
