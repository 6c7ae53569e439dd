"""Private Keras (and matplotlib) API is used in one module only: `_keras_internals.py`.

The guard reads every module of the package with `ast` and fails on

* an import of `keras.src` (or `from keras import src`);
* an attribute of the form `x._name`, or `getattr`/`setattr`/`hasattr`/`delattr`
  with the string `"_name"`, where `_name` is a private name that Keras or
  matplotlib defines: one found on the classes and objects listed in
  `_private_names()`, whatever object it is read from (`self` included: a
  keras_extras class that subclasses a Keras one inherits its private names);
* a method named like one of those, which would override a private method.

Names that keras_extras gives its own objects are free, as long as they do not
collide with a Keras name (a collision would be a bug waiting for a Keras release).
"""

from __future__ import annotations

import ast
import functools
import pathlib

import keras
import numpy as np
import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "src" / "keras_extras"
INTERNALS = PACKAGE / "_keras_internals.py"


def _private(names: object) -> set[str]:
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


@functools.cache
def _private_names() -> frozenset[str]:
    """Private names Keras defines, on its classes and on instances of them."""
    classes = [
        keras.Model,
        keras.Sequential,
        keras.layers.Layer,
        keras.layers.Dropout,
        keras.layers.Dense,
        keras.metrics.Metric,
        keras.metrics.Mean,
        keras.metrics.RootMeanSquaredError,
        keras.losses.Loss,
        keras.callbacks.Callback,
        keras.callbacks.History,
        keras.optimizers.Optimizer,
        keras.Variable,
        keras.StatelessScope,
    ]
    names: set[str] = set()
    for cls in classes:
        names |= _private(dir(cls))
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse", metrics=["mae"], weighted_metrics=["mse"])
    # Building the compiled loss and metrics gives them their private attributes too.
    model.evaluate(np.zeros((2, 2)), np.zeros((2, 1)), verbose=0)
    instances = [
        model,
        model._compile_metrics,
        model._compile_loss,
        model.layers[0],
        keras.layers.Dropout(0.5),
        keras.metrics.Mean(),
        keras.metrics.RootMeanSquaredError(),
        keras.metrics.Accuracy(),
        keras.callbacks.Callback(),
        keras.optimizers.SGD(),
    ]
    for instance in instances:
        names |= _private(vars(instance))
    try:
        import matplotlib.axes
        import matplotlib.figure
        import matplotlib.ticker
    except ImportError:  # pragma: no cover - matplotlib is in the dev extras
        pass
    else:
        for cls in (matplotlib.ticker.LogFormatter, matplotlib.axes.Axes, matplotlib.figure.Figure):
            names |= _private(dir(cls))
    return frozenset(names)


_ATTRIBUTE_FUNCTIONS = {"getattr", "setattr", "hasattr", "delattr"}


def violations(source: str, private: frozenset[str] | set[str]) -> list[str]:
    """Each use of private Keras API in `source`, as `line: what`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [
                f"{node.lineno}: import {a.name}"
                for a in node.names
                if a.name == "keras.src" or a.name.startswith("keras.src.")
            ]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module == "keras.src" or module.startswith("keras.src."):
                found.append(f"{node.lineno}: from {module} import ...")
            elif module == "keras" and any(a.name == "src" for a in node.names):
                found.append(f"{node.lineno}: from keras import src")
        elif isinstance(node, ast.Attribute) and node.attr in private:
            found.append(f"{node.lineno}: .{node.attr}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _ATTRIBUTE_FUNCTIONS
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value in private
        ):
            found.append(f"{node.lineno}: {node.func.id}(..., {node.args[1].value!r})")
        elif isinstance(node, ast.ClassDef):
            found += [
                f"{item.lineno}: def {item.name} (overrides a private method)"
                for item in node.body
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))
                and item.name in private
            ]
    return found


def _modules() -> list[pathlib.Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p != INTERNALS)


def test_private_keras_api_is_used_only_in_keras_internals():
    private = _private_names()
    report = {
        str(path.relative_to(PACKAGE)): found
        for path in _modules()
        if (found := violations(path.read_text(), private))
    }
    assert report == {}, (
        "Private Keras/matplotlib API outside _keras_internals.py; add a documented "
        f"function there instead: {report}"
    )


def test_the_guard_sees_the_uses_in_keras_internals():
    # The one module allowed to use private API does, so the guard must see it there;
    # if this fails, the name list has lost what the guard is for.
    found = "\n".join(violations(INTERNALS.read_text(), _private_names()))
    for expected in (
        "keras.src",
        "._compute_loss",
        "._loss_tracker",
        "'_compile_metrics'",
        "._unpickle_model",
        "'_flat_weighted_metrics'",
        "._direction",
        "._model",
    ):
        assert expected in found, (expected, found)


def test_the_guard_knows_the_private_names_it_is_for():
    private = _private_names()
    for name in (
        "_compile_loss",
        "_compile_metrics",
        "_loss_tracker",
        "_compute_loss",
        "_call_has_training_arg",
        "_aggregate_additional_loss",
        "_build_at_init",
        "_direction",
        "_model",
        "_unpickle_model",
        "_num_to_string",
        "_flat_metrics",
        "_flat_weighted_metrics",
    ):
        assert name in private, name


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import keras.src.backend", "import keras.src.backend"),
        ("from keras.src.models.functional import Functional", "from keras.src.models"),
        ("from keras import src", "from keras import src"),
        ("model._loss_tracker.update_state(1)", "._loss_tracker"),
        ("self._model = None", "._model"),
        ("getattr(metric, '_direction', None)", "getattr(..., '_direction')"),
        ("setattr(layer, '_build_at_init', f)", "setattr(..., '_build_at_init')"),
        (
            "class F(LogFormatter):\n    def _num_to_string(self, x, a, b):\n        return ''",
            "def _num_to_string",
        ),
    ],
)
def test_the_guard_flags(source, expected):
    found = violations(source, _private_names())
    assert len(found) == 1 and expected in found[0], found


@pytest.mark.parametrize(
    "source",
    [
        "import keras\nkeras.ops.sum(x)",
        "self._own_private_state = 1",
        "model._step_records_loss = True",
        "getattr(obj, 'name', None)",
        "from keras_extras import _keras_internals",
    ],
)
def test_the_guard_lets_pass(source):
    assert violations(source, _private_names()) == []
