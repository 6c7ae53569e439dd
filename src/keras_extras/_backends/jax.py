"""The metrics' eager updates on JAX: `jax.jit`, once per power of two of batch rows.

XLA compiles for static shapes only, and compiling an update takes some 200 ms on
a CPU, more than the built-in's operations one by one take for a new shape. So a
batch is padded with rows of weight 0 up to the next power of two, and a loop over
batches of varying length (bucketed sequences, a last partial batch) compiles once
per power of two instead of once per length.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from keras_extras._backends import CompiledCache

# Larger batches are compiled for their own length: the compilation is then small
# beside the work, and a float32 sum of more ones than 2**24 would not be exact.
PADDED_UP_TO = 2**20


def is_symbolic(x: Any) -> bool:
    """Whether `x` is a tracer (jax.jit, or a stateless step under jit)."""
    return isinstance(x, jax.core.Tracer)


@functools.cache
def eager(update: Callable) -> Callable:
    """`update(high, low, y_true, y_pred, sample_weight)`, jitted once per padded signature.

    A dropped compiled update frees its executable.
    """
    return CompiledCache(
        update,
        lambda fn, signature: jax.jit(fn),
        _signature,
        _release,
        adapt=_padded,
    )


def _release(jitted: Any) -> None:
    jitted.clear_cache()


def _signature(*args: Any) -> Hashable:
    return tuple(None if a is None else (a.shape, a.dtype) for a in args)


def _padded(high: Any, low: Any, y_true: Any, y_pred: Any, weight: Any) -> tuple:
    """The batch with rows of weight 0 added up to the next power of two, else as it is.

    No weight is a weight of 1 per sample (the same sums, by `keras.metrics.Mean`'s
    rule), so the added rows count nothing: their errors are finite and weigh 0.
    Left as they are: batches of a power of two, scalars, and weights whose first
    axis is not the batch's (a scalar, or an axis of size 1 that broadcasts).
    """
    args = (high, low, y_true, y_pred, weight)
    if y_pred.ndim == 0 or y_true.ndim == 0:
        return args
    n = y_pred.shape[0]
    rows = 1 << max(n - 1, 0).bit_length()
    if rows == n or n > PADDED_UP_TO or y_true.shape[0] != n:
        return args
    if weight is None:
        weight = np.ones(n, y_pred.dtype)
    elif weight.ndim == 0 or weight.shape[0] != n:
        return args
    return (high, low, *(_pad(x, rows) for x in (y_true, y_pred, weight)))


def _pad(x: Any, rows: int) -> Any:
    """`x` with rows of zeros added up to `rows`.

    In NumPy on the CPU, where jnp.pad would compile for each new shape; with
    jnp.pad on an accelerator, where the copy to the host would cost more.
    """
    widths = [(0, rows - x.shape[0])] + [(0, 0)] * (x.ndim - 1)
    if isinstance(x, np.ndarray) or all(d.platform == "cpu" for d in x.devices()):
        return jnp.asarray(np.pad(np.asarray(x), widths))
    return jnp.pad(x, widths)
