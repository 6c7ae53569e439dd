"""CustomModel's steps on the JAX backend: pure functions of the model state.

Keras passes the state in and expects the new state back, so every part of
the step that reads or writes a variable (the forward pass, the loss and its
tracker, the hooks, the metrics) runs in a `StatelessScope` that maps each
variable to its current value, and the values it assigns are collected
afterwards. Hooks therefore see live values under `jax.jit` too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import keras

from keras_extras import _steps


def replicas_in_sync() -> int:
    """keras.distribution shards the batch inside one program: one replica."""
    return 1


def _stateless(fn: Callable[[], Any], state: dict) -> tuple[Any, dict]:
    """Runs `fn()` on `state`, {name: (variables, values)}; returns its result and new state.

    Variables that `fn` assigns get their new values in the returned state;
    the others keep theirs.
    """
    mapping = [
        pair for variables, values in state.values() for pair in zip(variables, values, strict=True)
    ]
    with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
        result = fn()
    new_state = {}
    for name, (variables, values) in state.items():
        new_values = []
        for variable, value in zip(variables, values, strict=True):
            new = scope.get_current_value(variable)
            new_values.append(value if new is None else new)
        new_state[name] = (variables, new_values)
    return result, new_state


# Methods of Keras's JAX trainer that its default step calls and this step does not.
_KERAS_STEP_METHODS = ("compute_loss_and_updates", "stateless_compute_loss")


def _check_no_keras_step_override(model: Any) -> None:
    """Raises if `model` overrides a part of Keras's JAX step but relies on this one.

    keras.Model's default JAX step would run the override; this step never
    calls it, and ignoring it would train on another loss without a word.
    A subclass with its own `train_step` may use these names for helpers.
    """
    if model._overrides_train_step():
        return
    cls = type(model)
    for name in _KERAS_STEP_METHODS:
        if getattr(cls, name) is not getattr(keras.Model, name):
            raise TypeError(
                f"{cls.__name__} overrides `{name}`, which keras.Model's default JAX "
                "step calls but CustomModel's step does not, so it would be ignored. "
                "Put the loss in `compute_loss` (it runs on every backend), or "
                "override `train_step` and call the helper from there."
            )


def _values(state: dict, *names: str) -> tuple:
    return tuple(state[name][1] for name in names)


def train_step(model: Any, state: tuple, data: Any) -> tuple[dict, tuple]:
    """One training step: `(logs, new_state)` from `(state, data)`."""
    _check_no_keras_step_override(model)
    trainable, non_trainable, optimizer_vars, metrics_vars = state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    optimizer = model.optimizer

    def named_state(trainable, non_trainable, metrics_vars, optimizer_vars):
        return {
            "trainable": (model.trainable_variables, trainable),
            "non_trainable": (model.non_trainable_variables, non_trainable),
            "metrics": (model.metrics_variables, metrics_vars),
            "optimizer": (optimizer.variables, optimizer_vars),
        }

    def scaled_loss(trainable, non_trainable, metrics_vars):
        # The loss is recorded outside the differentiated function, as Keras's own
        # step does: with jit off, every operation inside it is traced for the
        # gradient, at several times the cost of running it.
        def forward_and_loss():
            y_pred = _steps.forward(model, x, training=True)
            loss = model._unrecorded_loss(x, y, y_pred, sample_weight, training=True)
            return optimizer.scale_loss(loss), (loss, y_pred)

        (scaled, (loss, y_pred)), new = _stateless(
            forward_and_loss, named_state(trainable, non_trainable, metrics_vars, optimizer_vars)
        )
        return scaled, (loss, y_pred, *_values(new, "non_trainable", "metrics"))

    grad_fn = jax.value_and_grad(scaled_loss, has_aux=True)
    (_, (loss, y_pred, non_trainable, metrics_vars)), gradients = grad_fn(
        trainable, non_trainable, metrics_vars
    )

    if model._transforms_gradients():
        # The hook may draw random numbers or update metrics: keep those changes.
        gradients, new = _stateless(
            lambda: model._hooked_gradients(gradients, model.trainable_variables),
            named_state(trainable, non_trainable, metrics_vars, optimizer_vars),
        )
        non_trainable, metrics_vars = _values(new, "non_trainable", "metrics")

    trainable, optimizer_vars = optimizer.stateless_apply(optimizer_vars, gradients, trainable)

    def record_and_compute_metrics():
        _steps.record_loss(model, loss, _steps.batch_size(x))
        return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    logs, new = _stateless(
        record_and_compute_metrics,
        named_state(trainable, non_trainable, metrics_vars, optimizer_vars),
    )
    non_trainable, metrics_vars = _values(new, "non_trainable", "metrics")
    return logs, (trainable, non_trainable, optimizer_vars, metrics_vars)


def test_step(model: Any, state: tuple, data: Any) -> tuple[dict, tuple]:
    """One evaluation step: `(logs, new_state)` from `(state, data)`."""
    _check_no_keras_step_override(model)
    trainable, non_trainable, metrics_vars = state
    logs, new = _stateless(
        lambda: _steps.evaluate_batch(model, data),
        {
            "trainable": (model.trainable_variables, trainable),
            "non_trainable": (model.non_trainable_variables, non_trainable),
            "metrics": (model.metrics_variables, metrics_vars),
        },
    )
    non_trainable, metrics_vars = _values(new, "non_trainable", "metrics")
    return logs, (trainable, non_trainable, metrics_vars)
