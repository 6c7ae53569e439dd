"""Conformance tests: Keras's own test cases for the built-ins keras_extras replaces.

Each test runs the same inputs through the Keras built-in and the keras_extras
component and requires the same outputs, or asserts the documented difference listed
in docs/differences.rst.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The shared harness lives one folder up (tests/harness.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
