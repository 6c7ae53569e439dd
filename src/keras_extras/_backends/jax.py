"""The metrics' eager updates on JAX: `jax.jit`, once per input signature.

XLA compiles for static shapes only, and an eager JAX operation is compiled per
input shape too: an update compiled as one function costs one compilation for a
new batch length where its operations one by one cost several. Padding a batch to
a power of two would compile less often, but each pad is an operation dispatched
in every call, which made fixed batch lengths 3 to 5 times slower (issue 26).
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
def eager(update: Callable) -> Callable:
    """`update`, jitted once per input signature; a dropped one frees its executable."""
    return CompiledCache(update, lambda fn, signature: jax.jit(fn), _signature, _release)


def _release(jitted: Any) -> None:
    jitted.clear_cache()


def _signature(*args: Any) -> Hashable:
    return tuple(None if a is None else (a.shape, a.dtype) for a in args)
