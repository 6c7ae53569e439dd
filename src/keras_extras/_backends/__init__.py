"""The one dispatch point to the backend code of the metrics: how an update runs eagerly.

Each backend has one small module here (`tensorflow`, `jax`, `torch`), imported on
first use, so that importing keras_extras imports no backend. Each has:

* `is_symbolic(x)`: whether `x` is being traced into a compiled graph, so has no
  value to read;
* `eager(batch, accumulate)`: a metric's eager update, `update(high, low,
  *inputs)`, which returns the new state pair `accumulate(high, low, sums)` and the
  flag, where `sums, flag = batch(*inputs)`; both are pure functions of tensors.
  An eager update is some twenty Keras operations, each dispatched on its own;
  TensorFlow and JAX compile it instead, into a cache of at most `COMPILED_LIMIT`
  entries. TensorFlow traces the two stages as one function, once for every
  batch length; JAX compiles `batch` once per input shape and `accumulate`, whose
  shapes never change, once. On torch it runs as it is.

and torch's module, where a Keras operation costs several torch kernels, also has
`batch_sums` and `guard_overflow` in torch's own operations (see there).
"""

from __future__ import annotations

import collections
import importlib
import types
from collections.abc import Callable, Hashable
from typing import Any

import keras

# Compiled updates kept per function: enough for the batch shapes of bucketed
# sequences and a last partial batch, few enough that memory stays bounded.
COMPILED_LIMIT = 64

_LOADED: dict[str, types.ModuleType] = {}


def _module() -> types.ModuleType:
    name = keras.backend.backend()
    module = _LOADED.get(name)
    if module is None:
        module = _LOADED[name] = importlib.import_module(f"{__name__}.{name}")
    return module


def is_symbolic(x: Any) -> bool:
    """Whether `x` is being traced into a compiled graph, so has no value to read."""
    return bool(_module().is_symbolic(x))


def eager(batch: Callable, accumulate: Callable) -> Callable:
    """The update `accumulate(high, low, batch(*inputs)[0])`, compiled where that pays.

    Returns:
        `update(high, low, *inputs) -> (high, low, flag)`, `flag` being the second
        value that `batch` returns.
    """
    compiled: Callable = _module().eager(batch, accumulate)
    return compiled


def chain(batch: Callable, accumulate: Callable) -> Callable:
    """The two stages of an update as one function, run as they are."""

    def update(high: Any, low: Any, *inputs: Any) -> tuple[Any, Any, Any]:
        sums, flag = batch(*inputs)
        return (*accumulate(high, low, sums), flag)

    return update


def batch_sums(y_true: Any, y_pred: Any, sample_weight: Any) -> tuple[Any, Any] | None:
    """RMSE's `(sums, maybe_invalid)` of one batch in the backend's own kernels, or None.

    None where the backend has no such kernel (it compiles the general code) or
    the kernel does not cover these shapes.
    """
    kernel = getattr(_module(), "batch_sums", None)
    return None if kernel is None else kernel(y_true, y_pred, sample_weight)


def guard_overflow(total: Any, high: Any, low: Any) -> tuple[Any, Any] | None:
    """`_exact_mean._guard_overflow` in the backend's own kernels, or None where it has none."""
    kernel = getattr(_module(), "guard_overflow", None)
    return None if kernel is None else kernel(total, high, low)


class CompiledCache:
    """`fn` compiled once per key of its arguments, the least recently used dropped.

    Args:
        fn: The function to compile.
        compile: Compiles `fn` for one key: `compile(fn, key)`.
        key: The key of a call's arguments.
        release: Frees what a dropped compiled function holds.
        limit: How many compiled functions are kept.
    """

    def __init__(
        self,
        fn: Callable,
        compile: Callable[[Callable, Hashable], Callable],
        key: Callable[..., Hashable],
        release: Callable[[Callable], None] = lambda compiled: None,
        limit: int = COMPILED_LIMIT,
    ) -> None:
        self.fn, self._compile, self._key, self._release = fn, compile, key, release
        self.limit = limit
        self.compiled: collections.OrderedDict[Hashable, Callable] = collections.OrderedDict()

    def __call__(self, *args: Any) -> Any:
        key = self._key(*args)
        compiled = self.compiled.get(key)
        if compiled is None:
            compiled = self.compiled[key] = self._compile(self.fn, key)
            if len(self.compiled) > self.limit:
                self._release(self.compiled.popitem(last=False)[1])
        else:
            self.compiled.move_to_end(key)
        return compiled(*args)
