"""The pages whose tables name tests: every test a row names exists, and no cell is a gap.

docs/differences.rst names the test asserting each difference from Keras;
docs/distribution.rst the test checking each component under each engine.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("page", ["differences.rst", "distribution.rst"])
def test_every_named_test_exists(page):
    text = (ROOT / "docs" / page).read_text()
    named = set(re.findall(r"``(test_\w+)``", text))
    assert len(named) >= 10, "the page names fewer tests than it has rows"
    defined = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        tree = ast.parse(path.read_text())
        defined.update(
            node.name
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
        )
    assert not named - defined, f"docs/{page} names missing tests: {named - defined}"


def test_distribution_table_has_no_untested_cell():
    text = (ROOT / "docs" / "distribution.rst").read_text()
    table = text[text.index(".. list-table::") : text.index("Which engine on which backend")]
    cells = re.findall(r"^\s+(?:\* )?- (.*)$", table, flags=re.MULTILINE)
    assert len(cells) == 6 * 11, "the table has 6 columns and a header row plus 10 rows"
    untested = [cell for cell in cells if "not tested" in cell.lower()]
    assert not untested, f"docs/distribution.rst leaves cells untested: {untested}"
