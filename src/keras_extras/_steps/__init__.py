"""CustomModel's one dispatch point to backend code: its training and test steps.

`backend_steps()` picks the module of the current backend (`tensorflow`, `jax`,
`torch`), imported on first use, so importing keras_extras never imports a
backend; each has `train_step`, `test_step` and `replicas_in_sync`, and nothing
else. The helpers below hold what the three steps share, so that the loss is
recorded alike on every backend. The model is an argument: nothing here imports
`models` or another family module, only `_keras_internals` (tests/test_packaging.py
checks it).
"""

from __future__ import annotations

import importlib
import types
from typing import Any

import keras
from keras import ops

from keras_extras import _keras_internals

SUPPORTED_BACKENDS = ("tensorflow", "jax", "torch")

_LOADED: dict[str, types.ModuleType] = {}


def backend_steps() -> types.ModuleType:
    """The step module of the current Keras backend, imported on first use."""
    name = keras.backend.backend()
    module = _LOADED.get(name)
    # A dict lookup, not an import, on every step: torch.compile traces it.
    if module is None:
        if name not in SUPPORTED_BACKENDS:
            raise NotImplementedError(
                f"CustomModel has training steps for the {', '.join(SUPPORTED_BACKENDS)} "
                f"backends, but the Keras backend is {name!r}."
            )
        module = _LOADED[name] = importlib.import_module(f"{__name__}.{name}")
    return module


def replicas_in_sync() -> int:
    """How many replicas share a global batch (tf.distribute); 1 elsewhere."""
    return backend_steps().replicas_in_sync()


def forward(model: Any, x: Any, training: bool) -> Any:
    """Calls the model as Keras's own trainers do, `training` only if `call` takes it."""
    if _keras_internals.call_has_training_arg(model):
        return model(x, training=training)
    return model(x)


def evaluate_batch(model: Any, data: Any) -> dict:
    """A test step's work, alike on every backend: forward pass, loss, metrics."""
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    y_pred = forward(model, x, training=False)
    step_loss(model, x, y, y_pred, sample_weight, training=False)
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


def batch_size(x: Any) -> Any:
    """The number of samples in a batch, the weight of its loss in the epoch mean."""
    first = next(t for t in keras.tree.flatten(x) if t is not None)
    return ops.shape(first)[0]


def step_loss(model: Any, x: Any, y: Any, y_pred: Any, sample_weight: Any, training: bool) -> Any:
    """`compute_loss`, recorded once in the loss tracker as the loss of this batch.

    The tracker gets exactly what `compute_loss` returns, the loss that is
    minimised.
    """
    loss = model._unrecorded_loss(x, y, y_pred, sample_weight, training)
    record_loss(model, loss, batch_size(x))
    return loss


def record_loss(model: Any, loss: Any, samples: Any) -> None:
    """Adds one batch's loss to the tracker, undoing the 1/replicas scaling."""
    replicas = replicas_in_sync()
    if replicas > 1:
        loss = ops.multiply(loss, ops.cast(replicas, loss.dtype))
    _keras_internals.loss_tracker(model).update_state(loss, sample_weight=samples)
