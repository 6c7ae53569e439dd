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
# The Keras-release legs (`make test-keras`): the same fixed seeds, fewer examples. What
# they test is how the code meets each Keras's API, which the first examples reach; the
# arithmetic of many more is the same on every release and `make test` runs it.
settings.register_profile("matrix", settings.get_profile("ci"), max_examples=10)
# Exploration: random seeds and more examples, `HYPOTHESIS_PROFILE=dev make test`.
settings.register_profile(
    "dev",
    deadline=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# The backends Keras 3 runs on. A name outside them (a typo such as "tensorfow") would
# skip its test on every backend, so it is an error, as a missing reason is.
KERAS_BACKENDS = ("tensorflow", "jax", "torch", "numpy", "openvino")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "backends(*names, reason): run only on the named Keras backends; the reason says why",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    problems = []
    for item in items:
        for marker in item.iter_markers("backends"):
            unknown = [name for name in marker.args if name not in KERAS_BACKENDS]
            if unknown or not marker.args:
                problems.append(f"{item.nodeid}: unknown backends {unknown or '(none given)'}")
            if not marker.kwargs.get("reason"):
                problems.append(f"{item.nodeid}: @pytest.mark.backends needs a reason=")
    if problems:
        raise pytest.UsageError(
            f"@pytest.mark.backends takes names of {KERAS_BACKENDS} and a reason:\n  "
            + "\n  ".join(problems)
        )


def pytest_runtest_setup(item: pytest.Item) -> None:
    marker = item.get_closest_marker("backends")
    if marker is not None and BACKEND not in marker.args:
        reason = marker.kwargs["reason"]
        pytest.skip(f"only on {', '.join(marker.args)} (running {BACKEND}): {reason}")


def pytest_report_header(config: pytest.Config) -> str:
    return f"keras {keras.__version__}, backend {BACKEND}"
