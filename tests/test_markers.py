"""The suite's own switches: a mistake in a marker or in the backends to test is an error."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent

MARKED = """
import pytest


@pytest.mark.backends("tensorfow", "jax", reason="a typo")
def test_typo():
    pass


@pytest.mark.backends("jax")
def test_no_reason():
    pass


@pytest.mark.backends(reason="no backend named")
def test_no_backend():
    pass


@pytest.mark.backends("tensorflow", "jax", "torch", reason="every backend")
def test_fine():
    pass
"""


def test_a_backends_marker_with_an_unknown_name_or_no_reason_is_an_error(tmp_path):
    """Catches a typo in a backend's name, which would otherwise skip its test on every
    backend, reported as an ordinary skip."""
    shutil.copy(TESTS / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_marked.py").write_text(MARKED)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "-q"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"),
    )
    assert proc.returncode == 4, proc.stdout + proc.stderr  # pytest's usage error
    assert "test_marked.py::test_typo: unknown backends ['tensorfow']" in proc.stderr
    assert "test_marked.py::test_no_reason: @pytest.mark.backends needs a reason=" in proc.stderr
    assert "test_marked.py::test_no_backend: unknown backends (none given)" in proc.stderr
    assert "test_fine" not in proc.stderr


def test_an_empty_or_misspelt_backend_list_for_the_install_tests_is_an_error():
    """`make test-install INSTALL_BACKENDS=...` hands the list over as
    KERAS_EXTRAS_TEST_BACKENDS. Catches the run that, given no backend, skipped every
    per-backend test and passed."""
    for value in ("", " ", "tensorfow jax"):
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--co", "-q"],
            cwd=TESTS.parent / "tests_install",
            capture_output=True,
            text=True,
            timeout=600,
            env=dict(os.environ, KERAS_EXTRAS_TEST_BACKENDS=value),
        )
        assert proc.returncode not in (0, 5), (value, proc.stdout)
        assert f"KERAS_EXTRAS_TEST_BACKENDS={value!r}: name one or more of" in proc.stdout
