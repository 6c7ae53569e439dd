"""The one door to what Keras does not promise: private names and version differences.

Every function here relies on something that a Keras release may change. Each says
what it relies on and the Keras versions it was checked on; everything else in
keras_extras uses public `keras.*` API only (tests/test_keras_internals.py checks it).
When a new Keras breaks one of these, it is fixed here, once.

Checked on: Keras 3.10.0 (the floor in pyproject.toml, `make test-oldest`) and 3.15.1
(constraints.txt).
"""

from __future__ import annotations

import re
from typing import Any

import keras


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


KERAS_VERSION = _version(keras.version())


def batch_end(batch: int, model: Any) -> int:
    """How many training steps of the epoch are done when `on_train_batch_end(batch)` runs.

    Relies on: Keras 3.11 and later pass `on_train_batch_end` the 0-based index of the
    last step of an execution of `steps_per_execution` steps; Keras 3.10 passed the
    first (`EpochIterator` yielded the begin step only). The last execution of an
    epoch may be shorter, so the result may overshoot the epoch's step count.
    Checked on 3.10.0 and 3.15.1.

    Args:
        batch: The index Keras passed.
        model: The model being trained (for its `steps_per_execution`).

    Returns:
        The number of steps done, as Keras would count them after the execution.
    """
    if KERAS_VERSION >= (3, 11):
        return batch + 1
    return batch + (getattr(model, "steps_per_execution", None) or 1)


# --- Callbacks: the model behind a callback, and what its metrics are. ---


def callback_model(callback: Any) -> Any:
    """The model that Keras gave `callback` with `set_model`, as it was given.

    Relies on: `keras.callbacks.Callback.set_model` stores the model in `_model`;
    the public `model` property also runs `jax_state_sync()` on JAX, which copies the
    whole training state to the model's variables, a cost a callback that reads no
    weights must not pay at every epoch. Checked on 3.10.0 and 3.15.1.

    Args:
        callback: A `keras.callbacks.Callback`.

    Returns:
        The model, or `None` before `set_model` and after `forget_model`.
    """
    return callback._model


def forget_model(callback: Any) -> None:
    """Drops `callback`'s reference to its model, so that the model can be freed.

    Relies on: the same `_model` attribute as `callback_model` (`set_model(None)`
    would do on every backend but is not documented to accept `None`). Checked on
    3.10.0 and 3.15.1.

    Args:
        callback: A `keras.callbacks.Callback`.
    """
    callback._model = None


def log_metric_objects(model: Any) -> dict[str, Any]:
    """Maps each key of `model`'s training logs to the metric object behind it.

    Relies on: `model.metrics` lists the loss tracker and one `CompileMetrics` object
    for the compiled metrics; `CompileMetrics` holds them in `_flat_metrics` and
    `_flat_weighted_metrics` (lists of `MetricsList` with `output_name` and `metrics`,
    or `None`) and names its results as copied here: an output-name prefix, then on a
    clash a `weighted_` prefix for a weighted metric, then a numeric suffix. Compiled
    metrics exist only after the first training step builds them (on TensorFlow).
    Checked on 3.10.0 and 3.15.1.

    Args:
        model: A Keras model, or `None`.

    Returns:
        `{log name: metric}`; empty for `None` or a model without metrics.
    """
    found: dict[str, Any] = {}
    for metric in getattr(model, "metrics", None) or []:
        if hasattr(metric, "_flat_metrics"):
            found.update(_compile_metric_names(metric))
        else:
            found[metric.name] = metric
    return found


def _compile_metric_names(compiled: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    counters: dict[str, int] = {}
    groups = ((False, compiled._flat_metrics), (True, compiled._flat_weighted_metrics))
    for weighted, lists in groups:
        for metric_list in lists:
            if not metric_list:
                continue
            prefix = f"{metric_list.output_name}_" if metric_list.output_name else ""
            for metric in metric_list.metrics:
                name = prefix + metric.name
                if name in counters:
                    if weighted:
                        name = prefix + "weighted_" + metric.name
                    if name in counters:
                        counters[name] += 1
                        name = f"{name}_{counters[name] - 1}"
                counters.setdefault(name, 1)
                found[name] = metric
    return found


def metric_direction(metric: Any) -> str | None:
    """Whether a greater value of `metric` is better: "max", "min", or `None` if unknown.

    Relies on: Keras metrics set `_direction` to "up" (accuracies, AUC, precision,
    ...) or "down" (errors, losses) in their constructor; others have none. Checked
    on 3.10.0 and 3.15.1.

    Args:
        metric: A Keras metric.

    Returns:
        "max", "min" or `None`.
    """
    return {"up": "max", "down": "min"}.get(str(getattr(metric, "_direction", "")))


def picklable_state(callback: Any) -> dict[str, Any]:
    """`callback`'s attributes, copied for pickling, without its model.

    Relies on: the same `_model` attribute as `callback_model`; a callback's model
    neither pickles nor belongs in a copy. Checked on 3.10.0 and 3.15.1.

    Args:
        callback: A `keras.callbacks.Callback`.

    Returns:
        A copy of `callback.__dict__`, with `None` for the model.
    """
    state = callback.__dict__.copy()
    state["_model"] = None
    return state
