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


def functional_variant(cls: type) -> type:
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
    """A regularisation loss as Keras adds it to the total: summed, and divided by the
    replicas under tf.distribute.

    Relies on: `Trainer._aggregate_additional_loss`. Checked on 3.10.0 and 3.15.1.
    """
    return model._aggregate_additional_loss(loss)


# --- ScheduledDropout (layers.py) -------------------------------------------------


def build_at_init(layer: Any) -> None:
    """Marks `layer` built in its `__init__`, as Keras's own layers without weights
    of their own shape do (`Dropout` among them), so that its variables are tracked
    and saved before the first call.

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
