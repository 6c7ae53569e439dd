"""The metrics' eager updates on torch: as they are, with RMSE's batch sums in torch's kernels.

Nothing is compiled (torch.compile's guards cost more per call than they save
here). A Keras operation costs several torch kernels on small tensors, so the
common shapes of RMSE's update and the overflow guard of the compensated sum run
in torch's own operations: the same arithmetic as `metrics._batch_sums` and
`_exact_mean._guard_overflow`, which tests/test_backends.py checks they equal bit
for bit.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch

from keras_extras._backends import chain


def is_symbolic(x: Any) -> bool:
    """Whether `x` has no value to read: torch.compile is tracing, or it is on "meta".

    Reading a value would break torch.compile's graph; Keras first builds
    compiled metrics on the meta device.
    """
    return torch.compiler.is_compiling() or (isinstance(x, torch.Tensor) and x.is_meta)


@functools.cache
def eager(batch: Callable, accumulate: Callable) -> Callable:
    """The update as it is: torch runs operations eagerly anyway."""
    return chain(batch, accumulate)


def guard_overflow(total: torch.Tensor, high: torch.Tensor, low: torch.Tensor) -> tuple:
    """`_exact_mean._guard_overflow`: `(high, low)` where `total` is finite, else `(total, 0)`.

    An eager sum on the CPU is read first: two floats cost less than the guard's three
    kernels, and a sum that overflowed is rare.
    """
    if total.device.type == "cpu" and not is_symbolic(total):
        if all(map(math.isfinite, total.tolist())):
            return high, low
    finite = torch.isfinite(total)
    return torch.where(finite, high, total), torch.where(finite, low, 0)


def batch_sums(
    y_true: torch.Tensor, y_pred: torch.Tensor, sample_weight: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """`metrics._batch_sums` in torch's operations, for the common shapes; None for others.

    Covered: dense targets of the predictions' shape, or class labels of their
    shape without the class axis (C > 1); no weight, or one per sample.
    """
    if is_symbolic(y_pred) or y_pred.ndim < 1:
        return None
    batch = y_pred.shape[:1]
    if sample_weight is not None and sample_weight.shape != batch:
        return None
    invalid = None
    if y_true.shape == y_pred.shape:
        squared = (y_pred - y_true).square_()
    elif y_pred.ndim >= 2 and y_true.shape == y_pred.shape[:-1] and y_pred.shape[-1] > 1:
        classes = y_pred.shape[-1]
        labels = y_true.to(y_pred.dtype)
        # A whole number in [0, classes) is its own clamped floor; NaN equals nothing.
        whole = labels.clamp(0, classes - 1).floor()
        invalid = labels != whole
        safe = torch.where(invalid, 0, whole).to(torch.int64).unsqueeze(-1)
        # y_pred - one_hot(labels) without the one-hot array: 1 off each label's entry.
        ones = torch.ones((), dtype=y_pred.dtype, device=y_pred.device).expand(safe.shape)
        squared = y_pred.scatter_add(-1, safe, -ones).square_()
        squared = torch.where(invalid, torch.nan, _mean_over(squared, squared.ndim - 1))
    else:
        return None
    per_sample = _mean_over(squared, 1)
    if sample_weight is None:
        count = torch.full((), batch[0], dtype=y_pred.dtype, device=y_pred.device)
        sums = torch.stack([per_sample.sum(), count])
    else:
        sums = torch.stack([(per_sample * sample_weight).sum(), sample_weight.sum()])
    return sums, None if invalid is None else invalid.any()


def _mean_over(x: torch.Tensor, first_axis: int) -> torch.Tensor:
    """`metrics._mean_over`: the sum over the axes from `first_axis` on, over their size."""
    axes = tuple(range(first_axis, x.ndim))
    if not axes:  # torch sums every axis for dim=()
        return x
    return x.sum(dim=axes) / float(math.prod(x.shape[first_axis:]))
