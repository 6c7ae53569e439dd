"""The one test harness every component's tests call.

It checks what every public object promises: a complete `get_config`, a round trip
through `from_config` and through a `.keras` file loaded in a fresh process.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import keras

BACKEND = keras.backend.backend()


# A functional model's `inputs` and `outputs` are in its config as its graph's ends.
FUNCTIONAL_CONFIG_KEYS = {"inputs": "input_layers", "outputs": "output_layers"}


def constructor_arguments(cls: type) -> list[str]:
    """The named parameters of `cls.__init__`, without self, *args and **kwargs."""
    params = inspect.signature(cls.__init__).parameters.values()
    return [
        p.name
        for p in params
        if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]


def assert_config_roundtrip(obj: Any) -> Any:
    """Every constructor argument is in `get_config`, and `from_config` rebuilds it.

    Returns:
        The rebuilt object.
    """
    config = obj.get_config()
    missing = [
        name
        for name in constructor_arguments(type(obj))
        if name not in config and FUNCTIONAL_CONFIG_KEYS.get(name) not in config
    ]
    assert not missing, f"{type(obj).__name__}.get_config() lacks {missing}"
    json.dumps(keras.saving.serialize_keras_object(obj))  # must be JSON-able
    # Keras's Model.from_config empties the dict it is given.
    clone = type(obj).from_config(copy.deepcopy(config))
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(obj))
    assert type(restored) is type(obj)
    assert restored.get_config() == config
    return clone


def run_in_fresh_process(code: str, timeout: float = 300) -> str:
    """Runs `code` in a new Python process on the current backend; returns its stdout.

    The process does not inherit this one's imports or registrations, so it shows what
    a user gets after a plain `import keras_extras`.
    """
    env = dict(os.environ, KERAS_BACKEND=BACKEND, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    assert proc.returncode == 0, f"fresh process failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def digits(n_train: int = 192, n_val: int = 64) -> tuple:
    """Train and validation splits of scikit-learn's bundled digits: float32 in [0, 1]."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype("float32")
    y = data.target.astype("int32")
    train = slice(0, n_train)
    val = slice(n_train, n_train + n_val)
    return (x[train], y[train]), (x[val], y[val])


@contextlib.contextmanager
def warnings_as_errors() -> Iterator[None]:
    """Turns every warning into an error, but the one NumPy 2 gives for Keras's conversions.

    Keras converts tensors with `np.array(x)`, which NumPy 2 answers with a
    DeprecationWarning about `__array__` on some backends; that is Keras's, not
    the code under test.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings(
            "ignore", message="__array__ implementation", category=DeprecationWarning
        )
        yield


def weight_values(model: Any) -> list:
    """`model.get_weights()`, without the DeprecationWarning NumPy 2 gives for it.

    Keras converts tensors with `np.array(x)`, which warns under NumPy 2; tests
    that turn warnings into errors around `fit` read weights with this instead.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="__array__ implementation", category=DeprecationWarning
        )
        return model.get_weights()


def assert_same_training(
    model: Any, history: Any, reference: Any, reference_history: Any, tol: float = 1e-5
) -> None:
    """Two training runs agree: every History series and every weight, to `tol`."""
    import numpy as np

    assert sorted(history.history) == sorted(reference_history.history)
    for key, values in history.history.items():
        np.testing.assert_allclose(
            values, reference_history.history[key], rtol=tol, atol=tol, err_msg=key
        )
    weights, reference_weights = weight_values(model), weight_values(reference)
    assert len(weights) == len(reference_weights)
    for i, (w, r) in enumerate(zip(weights, reference_weights, strict=True)):
        np.testing.assert_allclose(w, r, rtol=tol, atol=tol, err_msg=f"weight {i}")


def assert_doctests_pass(module: Any) -> None:
    """Runs the `>>>` examples of `module` on the current backend; all must pass."""
    import doctest

    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{module.__name__} has no examples"
    assert result.failed == 0, f"{result.failed} example(s) of {module.__name__} failed"
