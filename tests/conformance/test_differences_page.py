"""docs/differences.rst: every test a row names as asserting a difference exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_named_test_exists():
    page = (ROOT / "docs" / "differences.rst").read_text()
    named = set(re.findall(r"``(test_\w+)``", page))
    assert len(named) > 10
    defined = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        tree = ast.parse(path.read_text())
        defined.update(
            node.name
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
        )
    assert not named - defined, f"docs/differences.rst names missing tests: {named - defined}"
