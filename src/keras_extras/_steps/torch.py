"""CustomModel's steps on the PyTorch backend: `backward()` on the loss."""

from __future__ import annotations

import warnings
from typing import Any

import keras
import torch

from keras_extras import _steps


def replicas_in_sync() -> int:
    """Keras's torch trainer runs one replica."""
    return 1


def train_step(model: Any, data: Any) -> dict:
    """One training step, eager or under torch.compile (`jit_compile=True`)."""
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    y_pred = _steps.forward(model, x, training=True)
    # Gradients accumulate in `.grad` across backward() calls.
    model.zero_grad()
    loss = _steps.step_loss(model, x, y, y_pred, sample_weight, training=True)
    loss = model.optimizer.scale_loss(loss)
    variables = model.trainable_weights[:]
    if variables:
        loss.backward()
        gradients = [v.value.grad for v in variables]
        with torch.no_grad():
            gradients = model._hooked_gradients(gradients, variables)
            model.optimizer.apply(gradients, variables)
    else:
        warnings.warn("The model does not have any trainable weights.", stacklevel=2)
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


def test_step(model: Any, data: Any) -> dict:
    """One evaluation step; Keras runs it under torch.no_grad()."""
    return _steps.evaluate_batch(model, data)
