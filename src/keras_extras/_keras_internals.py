"""The one door to what Keras does not promise: private names and version differences.

Each function here reads or writes one thing that a Keras release may change, and
names the Keras versions it was checked on; what the package does with it lives in
the caller. Everything else in keras_extras uses public `keras.*` API only
(tests/test_keras_internals.py checks it). When a new Keras breaks a door, it is
fixed here, once.

Checked on: Keras 3.10.0 (the floor in pyproject.toml, `make test-oldest`) and 3.15.1
(constraints.txt); since then CI also runs them on the latest patch of every minor
release in between and on keras-nightly (`make test-keras-matrix`, docs/install.rst).
"""

from __future__ import annotations

import re
from typing import Any

import keras
from keras.src.backend.common import global_state
from keras.src.models.functional import Functional

_KERAS_VERSION = tuple(int(part) for part in re.findall(r"\d+", keras.version())[:3])


# --- CustomModel (models.py) and its steps (_steps/) ---------------------------------


def functional_class() -> Any:
    """The class Keras gives a model built as `Model(inputs, outputs)`.

    Reads `keras.src.models.functional.Functional`. Checked on 3.10.0 and
    3.15.1.
    """
    return Functional


def unpickler(cls: Any) -> Any:
    """The function that `keras.Model.__reduce__` names to rebuild a model of `cls`.

    Reads the classmethod `cls._unpickle_model`. Checked on 3.10.0 and
    3.15.1.
    """
    return cls._unpickle_model


def call_has_training_arg(model: Any) -> bool:
    """Whether `model.call` takes `training`, as Keras's own trainers check it.

    Reads `Layer._call_has_training_arg`. Checked on 3.10.0 and 3.15.1.
    """
    return bool(model._call_has_training_arg)


def compute_loss(
    model: Any, x: Any, y: Any, y_pred: Any, sample_weight: Any, training: bool
) -> Any:
    """`model.compute_loss`, called with `training` only if the override takes it.

    Calls `Model._compute_loss`, Keras's wrapper for `compute_loss` overrides written
    before Keras 3.3 added `training`. Checked on 3.10.0 and 3.15.1.
    """
    return model._compute_loss(
        x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training
    )


def loss_tracker(model: Any) -> Any:
    """The `Mean` metric that reports `loss` in the logs.

    Reads `Trainer._loss_tracker`, set by `compile()`. Checked on 3.10.0 and
    3.15.1.
    """
    return model._loss_tracker


def compiled_loss_object(model: Any) -> Any | None:
    """The `CompileLoss` that `compile(loss=...)` made, or None without a loss.

    Reads `Trainer._compile_loss`. Checked on 3.10.0 and 3.15.1.
    """
    return model._compile_loss


def compiled_metrics_object(model: Any) -> Any | None:
    """The `CompileMetrics` of `compile(metrics=..., weighted_metrics=...)`, or None.

    None also for an object that is no Keras model. Reads `Trainer._compile_metrics`.
    Checked on 3.10.0 and 3.15.1.
    """
    return getattr(model, "_compile_metrics", None)


def aggregate_additional_loss(model: Any, loss: Any) -> Any:
    """A regularisation loss as Keras adds it to the total.

    Summed, and divided by the replicas under tf.distribute.

    Calls `Trainer._aggregate_additional_loss`. Checked on 3.10.0 and 3.15.1.
    """
    return model._aggregate_additional_loss(loss)


# --- ScheduledDropout (layers.py) -------------------------------------------------


def build_at_init(layer: Any) -> None:
    """Marks `layer` built in its `__init__`, as Keras's `Dropout` is.

    Calls `Layer._build_at_init`. Checked on 3.10.0 and 3.15.1.
    """
    layer._build_at_init()


def outermost_stateless_scope() -> Any | None:
    """The outermost `keras.StatelessScope` now open, or None.

    Reads the global attribute `"stateless_scope"` of
    `keras.src.backend.common.global_state` (the innermost scope) and each scope's
    `original_scope` (the scope open when it was entered). Checked on 3.10.0 and 3.15.1.
    """
    scope = global_state.get_global_attribute("stateless_scope")
    while getattr(scope, "original_scope", None) is not None:
        scope = scope.original_scope
    return scope


def current_call_context() -> Any | None:
    """The `CallContext` of the outermost `Layer.__call__` now running, or None.

    Reads the global attribute `"current_call_ctx"` of
    `keras.src.backend.common.global_state`, which `Layer.__call__` sets and clears
    (what `Layer._get_call_context()` returns, without creating one). Checked on
    3.10.0 and 3.15.1.
    """
    return global_state.get_global_attribute("current_call_ctx")


# --- RMSE (metrics.py) and the callbacks' directions --------------------------------


def set_direction(metric: Any, direction: str) -> None:
    """Declares that `metric` improves going `"up"` or `"down"`.

    Writes `Metric._direction`, which the callbacks with `mode="auto"`
    (`EarlyStopping`, `ModelCheckpoint`, `ReduceLROnPlateau`) read. Checked on
    3.10.0 and 3.15.1.
    """
    metric._direction = direction


def direction(metric: Any) -> str | None:
    """`"up"` or `"down"` where `metric` declares which way it improves, else None.

    Reads `Metric._direction`, set by the built-in metrics' constructors. Checked on
    3.10.0 and 3.15.1.
    """
    return getattr(metric, "_direction", None)


# --- LossHistory and TrainingPlotter (callbacks.py, plotter.py) ---------------------


def batch_index_is_last_step() -> bool:
    """Whether `on_train_batch_end` gets the index of an execution's last step.

    With `steps_per_execution`, Keras 3.11 and later pass the 0-based index of the
    last step of the execution; 3.10 passed the first (`EpochIterator` yielded the
    begin step only). Reads `keras.version()`. Checked on 3.10.0 and 3.15.1.
    """
    return _KERAS_VERSION >= (3, 11)


def compiled_metric_lists(compiled: Any) -> tuple[list, list]:
    """The metrics of a `CompileMetrics`, as `(output_name, [metrics])` pairs.

    Reads `CompileMetrics._flat_metrics` and `_flat_weighted_metrics`: per output, a
    `MetricsList` (with `output_name` and `metrics`) or None. They exist once the
    first step has built the object (on TensorFlow, not before).

    Checked on 3.10.0 and 3.15.1.

    Args:
        compiled: What `compiled_metrics_object` returned.

    Returns:
        `(unweighted, weighted)`, each a list of `(output_name or None, metrics)` in
        Keras's order; both empty before the object is built.
    """

    def pairs(groups: list | None) -> list:
        return [(group.output_name, list(group.metrics)) for group in groups or () if group]

    return (
        pairs(getattr(compiled, "_flat_metrics", None)),
        pairs(getattr(compiled, "_flat_weighted_metrics", None)),
    )


def callback_model(callback: Any) -> Any:
    """The model that Keras gave `callback` with `set_model`, as it was given.

    Reads `Callback._model` (the public `model` property also runs
    `jax_state_sync()` on JAX, which copies the whole training state to the model's
    variables). Checked on 3.10.0 and 3.15.1.

    Returns:
        The model, or `None` before `set_model` and after `forget_model`.
    """
    return callback._model


def forget_model(callback: Any) -> None:
    """Drops `callback`'s reference to its model, so that the model can be freed.

    Writes `Callback._model` (`set_model(None)` would do on every backend but is not
    documented to accept `None`). Checked on 3.10.0 and 3.15.1.
    """
    callback._model = None


def picklable_state(callback: Any) -> dict[str, Any]:
    """A copy of `callback.__dict__` for pickling, with `None` for its model.

    Writes `_model` in the copy, the attribute `callback_model` reads: a callback's
    model neither pickles nor belongs in a copy. Checked on 3.10.0 and
    3.15.1.
    """
    state = callback.__dict__.copy()
    state["_model"] = None
    return state
