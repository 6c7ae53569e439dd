"""The one door to what Keras does not promise: private names and version differences.

Every function here relies on something that a Keras release may change. Each says
what it relies on and the Keras versions it was checked on; everything else in
keras_extras uses public `keras.*` API only (tests/test_keras_internals.py checks it).
When a new Keras breaks one of these, it is fixed here, once.

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


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


KERAS_VERSION = _version(keras.version())


# --- CustomModel (models.py) and its steps (_steps/) ---------------------------------


def is_functional(model: Any) -> bool:
    """Whether `model` is a functional model (built as `Model(inputs, outputs)`).

    Relies on: `keras.src.models.functional.Functional`, the class Keras gives such
    models. Checked on 3.10.0 and 3.15.1.
    """
    return isinstance(model, Functional)


def init_functional(model: Any, *args: Any, **kwargs: Any) -> None:
    """Runs `Functional.__init__` on `model`, whose class `functional_variant` made.

    Relies on: `Functional.__init__(inputs, outputs, name=..., ...)`. Checked on 3.10.0
    and 3.15.1.
    """
    Functional.__init__(model, *args, **kwargs)


_FUNCTIONAL_VARIANTS: dict[type, type] = {}


def functional_variant(cls: Any) -> type:
    """`cls` with `Functional` among its bases, made once per class.

    Keras builds `SubclassOfModel(inputs, outputs)` by rewriting the `__bases__` of
    the subclass and of all its parents, for good. After one functional `CustomModel`,
    every later `class M(CustomModel)` with its own `__init__` would then fail. Giving
    the instance a separate class that inherits from both leaves `cls` as it is. The
    variant carries the name and the registered name of `cls`, so that summaries,
    `get_config`, `.keras` files and pickles show `cls`, and loading gives the same
    kind of model back.

    Relies on: `Functional`, and `Model._unpickle_model`, the classmethod that
    `Model.__reduce__` names. Checked on 3.10.0 and 3.15.1.
    """
    if cls not in _FUNCTIONAL_VARIANTS:

        def __reduce__(self: Any) -> tuple:
            # Pickle finds a class by its name, which is `cls`'s: unpickle through `cls`.
            return cls._unpickle_model, keras.Model.__reduce__(self)[1]

        variant = type(
            cls.__name__,
            (cls, Functional),
            {"__module__": cls.__module__, "__reduce__": __reduce__},
        )
        variant.__qualname__ = cls.__qualname__
        registered = keras.saving.get_registered_name(cls)
        if ">" in registered:
            package, name = registered.split(">", 1)
            register = keras.saving.register_keras_serializable(package=package, name=name)
            register(variant)
            # Registering the variant took over the name; loading must give `cls`.
            register(cls)
        _FUNCTIONAL_VARIANTS[cls] = variant
    return _FUNCTIONAL_VARIANTS[cls]


def call_has_training_arg(model: Any) -> bool:
    """Whether `model.call` takes `training`, as Keras's own trainers check it.

    Relies on: `Layer._call_has_training_arg`. Checked on 3.10.0 and 3.15.1.
    """
    return bool(model._call_has_training_arg)


def compute_loss(
    model: Any, x: Any, y: Any, y_pred: Any, sample_weight: Any, training: bool
) -> Any:
    """`model.compute_loss`, called with `training` only if the override takes it.

    Relies on: `Model._compute_loss`, Keras's wrapper for `compute_loss` overrides
    written before Keras 3.3 added `training`. Checked on 3.10.0 and 3.15.1.
    """
    return model._compute_loss(
        x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training
    )


def loss_tracker(model: Any) -> Any:
    """The `Mean` metric that reports `loss` in the logs.

    Relies on: `Trainer._loss_tracker`, set by `compile()`. Checked on 3.10.0 and
    3.15.1.
    """
    return model._loss_tracker


def compiled_loss_object(model: Any) -> Any | None:
    """The `CompileLoss` that `compile(loss=...)` made, or None without a loss.

    Relies on: `Trainer._compile_loss`. Checked on 3.10.0 and 3.15.1.
    """
    return model._compile_loss


def compiled_metrics_object(model: Any) -> Any | None:
    """The `CompileMetrics` of `compile(metrics=..., weighted_metrics=...)`, or None.

    Relies on: `Trainer._compile_metrics`. Checked on 3.10.0 and 3.15.1.
    """
    return model._compile_metrics


def aggregate_additional_loss(model: Any, loss: Any) -> Any:
    """A regularisation loss as Keras adds it to the total.

    Summed, and divided by the replicas under tf.distribute.

    Relies on: `Trainer._aggregate_additional_loss`. Checked on 3.10.0 and 3.15.1.
    """
    return model._aggregate_additional_loss(loss)


# --- ScheduledDropout (layers.py) -------------------------------------------------


def build_at_init(layer: Any) -> None:
    """Marks `layer` built in its `__init__`.

    Keras's own layers without weights of their own shape do this (`Dropout` among
    them), so that their variables are tracked and saved before the first call.

    Relies on: `Layer._build_at_init`. Checked on 3.10.0 and 3.15.1.
    """
    layer._build_at_init()


def forward_pass_memo() -> dict | None:
    """A dict that lives exactly as long as the current forward pass, or None.

    `ScheduledDropout` keeps in it the step its counter had when the pass began, so
    that the layer advances once per pass however often it is called. The pass is the
    first of:

    * the outermost `keras.StatelessScope` (the global attribute `"stateless_scope"`
      and each scope's `original_scope`). JAX's trainer runs a step through
      `Model.stateless_call`, which opens one such scope but calls `Model.call`
      directly, so there no layer call spans the pass;
    * the `CallContext` that the outermost `Layer.__call__` opens and clears when it
      returns (the global attribute `"current_call_ctx"`, what
      `Layer._get_call_context()` returns; read here, never created).

    The dict is an attribute of that scope or context, so it is dropped with it.
    Returns None outside both: `call` was invoked directly, and that call is a pass of
    its own.

    Relies on: `keras.src.backend.common.global_state` and the two attribute names
    above. Checked on 3.10.0 and 3.15.1.
    """
    owner = global_state.get_global_attribute("stateless_scope")
    if owner is not None:
        while getattr(owner, "original_scope", None) is not None:
            owner = owner.original_scope
    else:
        owner = global_state.get_global_attribute("current_call_ctx")
    if owner is None:
        return None
    memo = getattr(owner, "_keras_extras_memo", None)
    if memo is None:
        memo = {}
        owner._keras_extras_memo = memo
    return memo


# --- RMSE (metrics.py) ------------------------------------------------------------


def set_direction(metric: Any, direction: str) -> None:
    """Declares that `metric` improves going `"up"` or `"down"`.

    Keras's callbacks with `mode="auto"` (`EarlyStopping`, `ModelCheckpoint`,
    `ReduceLROnPlateau`) read it, as they do for the built-in metrics.

    Relies on: `Metric._direction`, which those callbacks read. Checked on 3.10.0 and
    3.15.1.
    """
    metric._direction = direction


# --- LossHistory (callbacks.py) ---------------------------------------------------


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
