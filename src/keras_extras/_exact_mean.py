"""`_ExactMean`, Keras's `Mean` compensated: the exact pair of sums that RMSE builds on.

The state is the weighted total and the total weight, each a float pair (high part,
low part) whose exact sum is the value. `compensated_add` is the one rule that
changes it, for a batch and for a merged metric alike, so merging shards gives the
one-shot state; with float32 parts, about 48 bits stay exact, past 2**24 samples on
every backend and without JAX's 64-bit mode.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_extras import _backends


def _two_sum(a: Any, b: Any) -> tuple[Any, Any]:
    """`a + b` as the float sum and its exact rounding error (Knuth's TwoSum)."""
    s = a + b
    b_virtual = s - a
    return s, (a - (s - b_virtual)) + (b - b_virtual)


def _fast_two_sum(a: Any, b: Any) -> tuple[Any, Any]:
    """TwoSum for `|a| >= |b|` (Dekker), three operations instead of six."""
    s = a + b
    return s, b - (s - a)


def compensated_add(high: Any, low: Any, add_high: Any, add_low: Any = None) -> tuple[Any, Any]:
    """The pair `(high, low)` plus the pair `(add_high, add_low)`, as a new exact pair.

    The one update rule of the state, for a batch and for a merged metric alike.
    """
    total, error = _two_sum(high, add_high)
    low = low + (error if add_low is None else add_low + error)
    # Both sums only grow, so the new high part dominates the low one.
    high, low = _fast_two_sum(total, low)
    guarded = _backends.guard_overflow(total, high, low)
    return _guard_overflow(total, high, low) if guarded is None else guarded


def _guard_overflow(total: Any, high: Any, low: Any) -> tuple[Any, Any]:
    """`(high, low)` where `total` is finite; `(total, 0)` where it overflowed (or is NaN).

    An overflowing sum makes its error inf - inf = NaN, and with it the high part:
    the sum itself, with no low part, is the honest answer.
    """
    finite = ops.isfinite(total)
    return ops.where(finite, high, total), ops.where(finite, low, 0)


class _ExactMean(keras.metrics.Metric):
    """Keras's `Mean` whose total and count stay exact: each a compensated pair.

    `total` is the weighted sum of the values and `count` the sum of the weights.
    Each is held as a high part (`sums`) and what that float could not hold (its
    low part, `sums_low`), about 48 bits in float32.
    """

    def __init__(self, name: str, dtype: Any) -> None:
        super().__init__(name=name, dtype=dtype)
        # [total, count] and their low parts. Batches and merged metrics alike are
        # added by `compensated_add`, so merging shards gives the one-shot state.
        pair = {"shape": (2,), "initializer": "zeros", "dtype": self.dtype}
        self.sums = self.add_variable(name="sums", **pair)
        self.sums_low = self.add_variable(name="sums_low", **pair)

    def _assign_pair(self, high: Any, low: Any) -> None:
        self.sums.assign(high)
        self.sums_low.assign(low)

    def result(self) -> Any:
        """`total / count`, 0.0 when nothing was counted."""
        total, count = ops.unstack(self.sums.value + self.sums_low.value)
        return ops.divide_no_nan(total, count)

    def merge_state(self, metrics: Iterable[_ExactMean]) -> None:
        """Adds the states of other instances to this one, as if it had seen their data.

        Metrics updated on disjoint shards (in other processes, rebuilt with
        `set_state`) merge into the value one metric gives on all the data, in
        any order and whatever the shard sizes.

        Args:
            metrics: Instances of this class.

        Raises:
            TypeError: if an element is not an instance of this class.
        """
        for other in metrics:
            if not isinstance(other, type(self)):
                raise TypeError(
                    f"merge_state takes {type(self).__name__} instances, got {other!r}."
                )
            state = (self.sums.value, self.sums_low.value, other.sums.value, other.sums_low.value)
            self._assign_pair(*compensated_add(*state))

    def get_state(self) -> dict[str, list[float]]:
        """The state as plain numbers, for sending to another process.

        Returns:
            `{"total": [high, low], "count": [high, low]}`: the weighted total
            and the total weight, each as the pair of floats whose exact sum is
            the value.
        """
        high, low = (ops.convert_to_numpy(v.value) for v in (self.sums, self.sums_low))
        return {
            "total": [float(high[0]), float(low[0])],
            "count": [float(high[1]), float(low[1])],
        }

    def set_state(self, state: dict[str, list[float]]) -> None:
        """Restores a state that `get_state` returned.

        Args:
            state: `{"total": [high, low], "count": [high, low]}`. The form that
                keras_extras 0.1.0.dev0 returned, `{"hi": [total, count], "lo":
                [total, count]}`, is read too.

        Raises:
            ValueError: if `state` has other keys or a list has the wrong length.
        """
        if set(state) == {"hi", "lo"} and all(len(v) == 2 for v in state.values()):
            (total, count), (total_low, count_low) = state["hi"], state["lo"]  # 0.1.0.dev0
            state = {"total": [total, total_low], "count": [count, count_low]}
        if set(state) != {"total", "count"} or any(len(v) != 2 for v in state.values()):
            raise ValueError(
                'state must be {"total": [high, low], "count": [high, low]}, as get_state '
                f"returns it, got {state!r}."
            )
        pairs = np.asarray([state["total"], state["count"]], dtype=self.dtype)
        self._assign_pair(pairs[:, 0], pairs[:, 1])
