"""CustomModel's steps on the PyTorch backend: `backward()` on the loss."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
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


def is_symbolic(x: Any) -> bool:
    """Whether `x` has no value to read: torch.compile is tracing, or it is on "meta".

    Reading a value would break torch.compile's graph; Keras first builds
    compiled metrics on the meta device.
    """
    return torch.compiler.is_compiling() or (isinstance(x, torch.Tensor) and x.is_meta)


def _finite_error(error: torch.Tensor) -> torch.Tensor:
    # Where the sum is finite, so is its error; where it is not, inf - inf made
    # the error NaN or infinite: 0, as metrics._finite_error has it, in one kernel.
    return torch.nan_to_num(error, nan=0.0, posinf=0.0, neginf=0.0)


def eager_rmse_update(generic: Callable) -> Callable:
    """RMSE's eager update: `_rmse_update` below where it applies, else `generic`.

    Not torch.compile: its guards cost more per call than they save here.
    """
    return lambda *args: _rmse_update(*args) or generic(*args)


def _rmse_update(
    high: torch.Tensor,
    low: torch.Tensor,
    y_true: torch.Tensor,
    y_pred: torch.Tensor,
    sample_weight: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None:
    """RMSE's eager update in plain torch operations, for the common shapes; else None.

    Keras's operations cost several times a torch kernel's dispatch on small
    tensors, and an eager update is some twenty of them. This is the same
    arithmetic as `metrics._rmse_update` (whose result it must equal): dense
    targets of the predictions' shape, or labels of their shape without the
    class axis; no weight or one per sample. Other cases return None, for
    the general code.
    """
    batch = y_pred.shape[:1]
    if y_pred.ndim < 1 or (sample_weight is not None and sample_weight.shape != batch):
        return None
    if y_true.shape == y_pred.shape:
        squared, invalid = (y_pred - y_true).square_(), None
    elif y_pred.ndim == 2 and y_true.shape == batch and y_pred.shape[1] > 1:
        classes = y_pred.shape[1]
        labels = y_true.to(y_pred.dtype)
        # A whole number in [0, classes) is its own clamped floor; NaN equals nothing.
        whole = labels.clamp(0, classes - 1).floor()
        invalid = labels != whole
        safe = torch.where(invalid, 0, whole).to(torch.int64).unsqueeze(1)
        # y_pred - one_hot(labels) without the one-hot array: 1 off each label's entry.
        ones = torch.ones((), dtype=y_pred.dtype, device=y_pred.device).expand(safe.shape)
        squared = y_pred.scatter_add(1, safe, -ones).square_()
    else:
        return None
    per_sample = squared
    if squared.ndim > 1:  # torch sums every axis for dim=()
        per_sample = squared.sum(dim=tuple(range(1, squared.ndim))) / math.prod(squared.shape[1:])
    if invalid is not None:
        per_sample = torch.where(invalid, torch.nan, per_sample)
    if sample_weight is None:
        pair = torch.stack(
            [per_sample.sum(), torch.full((), batch[0], dtype=high.dtype, device=high.device)]
        )
    else:
        pair = torch.stack([(per_sample * sample_weight).sum(), sample_weight.sum()])
    # Compensated addition, as metrics._compensated_add.
    s = high + pair
    b_virtual = s - high
    error = _finite_error((high - (s - b_virtual)) + (pair - b_virtual))
    low = low + error
    new_high = s + low
    new_low = _finite_error(low - (new_high - s))
    return new_high, new_low, None if invalid is None else invalid.any()
