"""Dependencies run one way: providers ← state ← sync ← service (docs/architecture.md).

Checked two ways: statically, every ``import`` of our own packages in every
module points down the stack; and at run time, importing a provider
description loads no web framework, broker, store or HTTP client.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: what each layer may import of ours (queues.py is the routing rules, beside sync)
ALLOWED = {
    "providers": {"providers"},
    "state": {"providers", "state"},
    "queues": set(),
    "sync": {"providers", "state", "sync", "queues"},
    "service": {"providers", "state", "sync", "queues", "service"},
}
OURS = set(ALLOWED) | {"devtools", "simulator", "bench", "tests"}


def _imports(path: Path) -> list[tuple[int, str]]:
    """Top-level package names of every import in the file (also inside functions)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def _modules(layer: str) -> list[Path]:
    return [ROOT / "queues.py"] if layer == "queues" else sorted((ROOT / layer).rglob("*.py"))


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_imports_run_down_the_stack(layer):
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in _modules(layer)
        for line, name in _imports(path)
        if name in OURS and name not in ALLOWED[layer]
    ]
    assert wrong == []


HEAVY = (
    "flask",
    "celery",
    "kombu",
    "redis",
    "requests",
    "requests_oauthlib",
    "oauthlib",
    "cryptography",
    "sentry_sdk",
    "aiohttp",
    "werkzeug",
)


def test_a_provider_description_imports_alone():
    code = (
        "import json, sys, providers, providers.github; providers.provider_classes(); "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    loaded = set(json.loads(subprocess.check_output([sys.executable, "-c", code], cwd=ROOT)))
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))
