"""Shared test configuration: the backend under test, markers and hypothesis profiles."""

from __future__ import annotations

import os

import keras
import pytest
from hypothesis import HealthCheck, settings

BACKEND = keras.backend.backend()

# CI must never flake: the default profile derandomises hypothesis (a fixed seed per
# test) and has no deadline, since the first call of a backend function compiles.
settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=40,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
# Exploration: random seeds and more examples, `HYPOTHESIS_PROFILE=dev make test`.
settings.register_profile(
    "dev",
    deadline=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "backends(*names, reason): run only on the named Keras backends; the reason says why",
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    marker = item.get_closest_marker("backends")
    if marker is None:
        return
    reason = marker.kwargs.get("reason")
    if not reason:
        raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.backends needs a reason=")
    if BACKEND not in marker.args:
        pytest.skip(f"only on {', '.join(marker.args)} (running {BACKEND}): {reason}")


def pytest_report_header(config: pytest.Config) -> str:
    return f"keras {keras.__version__}, backend {BACKEND}"
