"""The metrics' eager updates on JAX: `jax.jit`, the batch stage once per input shape.

XLA compiles for static shapes only, and an eager JAX operation is compiled per
input shape too. So a new batch length costs a compilation whichever way the
update runs; compiled as one function per shape it costs less than its operations
compiled one by one, and less again when only the batch stage is compiled per
shape: the accumulation, whose shapes never change, is compiled once, and the
per-shape program takes less than half as long to compile as the whole update
(issue 26). Padding a batch to a power of two would compile less often, but each
pad is an operation dispatched in every call, which made fixed batch lengths 3 to
5 times slower.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable
from typing import Any

import jax

from keras_extras._backends import CompiledCache


def is_symbolic(x: Any) -> bool:
    """Whether `x` is a tracer (jax.jit, or a stateless step under jit)."""
    return isinstance(x, jax.core.Tracer)


@functools.cache
def eager(batch: Callable, accumulate: Callable) -> Callable:
    """The update: `batch` jitted once per input shape, `accumulate` once.

    A dropped shape frees its executable.
    """
    add = jax.jit(accumulate)

    def compile(batch: Callable, signature: Hashable) -> Callable:
        sums = jax.jit(batch)

        def update(high: Any, low: Any, *inputs: Any) -> tuple[Any, Any, Any]:
            batch_sums, flag = sums(*inputs)
            return (*add(high, low, batch_sums), flag)

        update.release = sums.clear_cache  # type: ignore[attr-defined]
        return update

    return CompiledCache(batch, compile, _signature, _release)


def _release(update: Any) -> None:
    update.release()


def _signature(*args: Any) -> Hashable:
    return tuple(None if a is None else (a.shape, a.dtype) for a in args)
