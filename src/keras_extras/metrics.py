"""Metrics: exact, registered and backend-neutral."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_extras import _steps
from keras_extras._export import export

_Shape = tuple


def _same_shape(a: _Shape, b: _Shape) -> bool:
    """Whether two static shapes agree, an unknown (None) dim matching anything."""
    return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b))


def align_targets(y_true: Any, y_pred: Any) -> tuple[Any, Any | None]:
    """Brings `y_true` to `y_pred`'s shape: the one shape rule of this module.

    * Same shape, or the same but for a trailing axis of size 1 on either
      side: dense targets, returned reshaped to `y_pred`'s shape.
    * `y_pred` has C > 1 entries on its last axis and `y_true` lacks that axis
      (or has size 1 there): sparse class labels. They are returned as they are,
      for the caller to validate and one-hot encode.

    Args:
        y_true: Targets or labels, a tensor.
        y_pred: Predictions, a tensor with a batch axis.

    Returns:
        `(dense_targets, None)` for dense targets, `(None, labels)` for sparse
        labels, where `labels` has `y_pred`'s shape without its last axis.

    Raises:
        ValueError: if the shapes fit neither case; the message names both.
    """
    t_shape, p_shape = tuple(y_true.shape), tuple(y_pred.shape)
    if len(p_shape) == 0:
        raise ValueError(f"`y_pred` needs a batch axis, but it is a scalar (shape {p_shape}).")
    if _same_shape(t_shape, p_shape):
        return y_true, None
    if len(t_shape) == len(p_shape) + 1 and t_shape[-1] == 1 and _same_shape(t_shape[:-1], p_shape):
        return ops.squeeze(y_true, axis=-1), None
    classes = p_shape[-1]
    if len(t_shape) == len(p_shape) - 1 and _same_shape(t_shape, p_shape[:-1]):
        if classes == 1:
            return ops.expand_dims(y_true, axis=-1), None
        labels = y_true
    elif t_shape[-1:] == (1,) and _same_shape(t_shape[:-1], p_shape[:-1]):
        labels = ops.squeeze(y_true, axis=-1)
    else:
        raise ValueError(
            f"Incompatible shapes: y_true has shape {t_shape} and y_pred has shape "
            f"{p_shape}. Expected y_true of shape {p_shape} (dense targets), or "
            f"{p_shape[:-1]} / {p_shape[:-1] + (1,)} (integer class labels)."
        )
    if classes is None:
        raise ValueError(
            f"Sparse labels of shape {t_shape} need a known number of classes, but "
            f"y_pred has shape {p_shape}."
        )
    return None, labels


def _concrete(x: Any) -> np.ndarray | None:
    """The value of `x` in an eager call; None while a graph is being traced."""
    return None if _steps.is_symbolic(x) else ops.convert_to_numpy(x)


def _check_labels(labels: np.ndarray, classes: int) -> None:
    bad = ~((labels >= 0) & (labels < classes) & (labels == np.floor(labels)))
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"Sparse labels must be whole numbers in [0, {classes}) for y_pred with "
            f"{classes} classes, but y_true{list(index)} is {labels[index].item()!r}."
        )


def _two_sum(a: Any, b: Any) -> tuple[Any, Any]:
    """`a + b` as the float sum and its exact rounding error (Knuth's TwoSum)."""
    s = a + b
    b_virtual = s - a
    return s, _finite_error(s, (a - (s - b_virtual)) + (b - b_virtual))


def _fast_two_sum(a: Any, b: Any) -> tuple[Any, Any]:
    """TwoSum for `|a| >= |b|` (Dekker), three operations instead of six."""
    s = a + b
    return s, _finite_error(s, b - (s - a))


def _finite_error(s: Any, error: Any) -> Any:
    # inf - inf would turn an overflowing sum into NaN; inf is the honest answer.
    return ops.where(ops.isfinite(s), error, ops.zeros_like(error))


@export
class RootMeanSquaredError(keras.metrics.Metric):
    """Root mean squared error, exact over any stream and for sparse labels.

    Formula, over the samples `i` seen since the last reset, with weights `w_i`
    (1 when no `sample_weight` is given):

    ```
    rmse = sqrt(sum_i w_i * mean_j (y_pred[i, j] - y_true[i, j]) ** 2 / sum_i w_i)
    ```

    where `j` runs over the non-batch axes.

    * **Dense targets.** When `y_true` has `y_pred`'s shape, or differs only by
      a trailing axis of size 1, this is the formula above. It equals
      `keras.metrics.RootMeanSquaredError` and scikit-learn's
      `root_mean_squared_error` on the flattened arrays. (scikit-learn's
      default for several target columns averages each column's RMSE, which
      is a different quantity.)
    * **Sparse labels.** When `y_pred`'s last axis has C > 1 entries and
      `y_true` holds integer class labels without that axis, of shape (N,) or
      (N, 1) for (N, C) predictions, the labels are one-hot encoded to C
      classes first. The result equals the dense result on those one-hot
      targets, so `metrics=[RMSE()]` works for a softmax classifier trained
      with `sparse_categorical_crossentropy`.
    * **Weights.** `sample_weight` of shape (N,), (N, 1) or a scalar weights
      each sample's mean squared error. With no samples, or a total weight of
      0, the result is 0.0, never NaN. An empty batch leaves the state as it
      was.
    * **Exact over long streams.** The running sums are kept as float32
      high/low pairs with compensated (TwoSum) addition, about 48 bits of
      precision, so neither the count nor the total stops growing past 2**24
      samples, on every backend and without JAX's 64-bit mode.

    Args:
        name: Name of the metric instance, the key in `fit`'s logs.
        dtype: Dtype of the metric's computations and result.

    Raises:
        ValueError: from `update_state`, if the shapes are incompatible (the
            message names both), if `sample_weight`'s shape fits neither (N,)
            nor (N, 1), or, in an eager call, if a sparse label is outside
            [0, C) or not a whole number. Inside a compiled step (`fit`,
            `tf.function`, `jax.jit`), where no error can be raised, an invalid
            label makes the result NaN instead of being dropped silently.

    Example:
    >>> import keras_extras
    >>> m = keras_extras.RMSE()
    >>> m.update_state([[0.0, 1.0], [0.0, 0.0]], [[1.0, 1.0], [0.0, 0.0]])
    >>> round(float(m.result()), 4)
    0.5
    >>> m.reset_state()
    >>> m.update_state([1, 0], [[0.1, 0.9], [0.8, 0.2]])  # class labels
    >>> round(float(m.result()), 4)
    0.1581
    >>> m.update_state([1], [[1.0, 0.0]], sample_weight=[0.0])  # weight 0
    >>> round(float(m.result()), 4)
    0.1581

    Usage with `compile()`:

    ```python
    model.compile(
        optimizer="adam",
        loss="sparse_categorical_crossentropy",
        metrics=[keras_extras.RMSE(), "accuracy"],
    )
    ```
    """

    def __init__(self, name: str = "rmse", dtype: Any = None) -> None:
        super().__init__(name=name, dtype=dtype)
        # Entry 0 is the weighted sum of squared errors, entry 1 the sum of
        # weights; `lo` holds what float32 `hi` could not.
        self.hi = self.add_variable(shape=(2,), initializer="zeros", dtype=self.dtype, name="hi")
        self.lo = self.add_variable(shape=(2,), initializer="zeros", dtype=self.dtype, name="lo")
        self._direction = "down"

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        """Accumulates the squared errors of one batch.

        Args:
            y_true: Dense targets, or integer class labels (see the class
                docstring for the shape rule).
            y_pred: Predictions, with a batch axis.
            sample_weight: Optional per-sample weights, shape (N,), (N, 1) or
                a scalar.

        Raises:
            ValueError: on incompatible shapes, or on invalid labels in an
                eager call.
        """
        y_pred = ops.convert_to_tensor(y_pred, dtype=self.dtype)
        y_true = ops.convert_to_tensor(y_true)
        targets, labels = align_targets(y_true, y_pred)
        if labels is None:
            squared = ops.square(y_pred - ops.cast(targets, self.dtype))
            valid = None
        else:
            classes = int(y_pred.shape[-1])
            eager_labels = _concrete(labels)
            if eager_labels is not None:
                _check_labels(eager_labels, classes)
            labels = ops.cast(labels, self.dtype)
            valid = (labels >= 0) & (labels < classes) & (labels == ops.floor(labels))
            safe = ops.cast(ops.where(valid, labels, ops.zeros_like(labels)), "int32")
            squared = ops.square(y_pred - ops.one_hot(safe, classes, dtype=self.dtype))

        per_sample = squared
        if len(per_sample.shape) > 1:
            per_sample = ops.mean(per_sample, axis=tuple(range(1, len(per_sample.shape))))
        if valid is not None:
            if len(valid.shape) > 1:
                valid = ops.all(valid, axis=tuple(range(1, len(valid.shape))))
            # Not `full_like`: on torch it calls `.item()`, which fails on the "meta"
            # device where Keras first builds the compiled metrics.
            per_sample = ops.where(valid, per_sample, ops.zeros_like(per_sample) + np.nan)

        if sample_weight is None:
            count = ops.convert_to_tensor(ops.shape(per_sample)[0], dtype=self.dtype)
            batch = ops.stack([ops.sum(per_sample), count])
        else:
            weight = self._per_sample_weight(sample_weight, per_sample)
            batch = ops.stack([ops.sum(per_sample * weight), ops.sum(weight)])

        self._add(batch)

    def _add(self, hi: Any, lo: Any = None) -> None:
        """Adds the pair `hi + lo` to the state, keeping its rounding error in `lo`."""
        hi, error = _two_sum(self.hi.value, hi)
        low = self.lo.value + error if lo is None else self.lo.value + (lo + error)
        # Both sums only grow, so the new high part dominates the low one.
        hi, lo = _fast_two_sum(hi, low)
        self.hi.assign(hi)
        self.lo.assign(lo)

    def merge_state(self, metrics: Iterable[RootMeanSquaredError]) -> None:
        """Adds the states of other instances to this one, as if it had seen their data.

        Metrics updated on disjoint shards (in other processes, rebuilt with
        `set_state`) merge into the value one metric gives on all the data, in
        any order and whatever the shard sizes.

        Args:
            metrics: Instances of this class.

        Raises:
            TypeError: if an element is not a `RootMeanSquaredError`.
        """
        for other in metrics:
            if not isinstance(other, RootMeanSquaredError):
                raise TypeError(f"merge_state takes RootMeanSquaredError instances, got {other!r}.")
            self._add(other.hi.value, other.lo.value)

    def get_state(self) -> dict[str, list[float]]:
        """The state as plain numbers, for sending to another process.

        Returns:
            `{"hi": [sum_sq, sum_w], "lo": [sum_sq, sum_w]}`: the weighted sum of
            squared errors and the sum of weights, each as the float32 pair
            whose exact sum is the value.
        """
        return {
            "hi": [float(v) for v in ops.convert_to_numpy(self.hi.value)],
            "lo": [float(v) for v in ops.convert_to_numpy(self.lo.value)],
        }

    def set_state(self, state: dict[str, list[float]]) -> None:
        """Restores a state that `get_state` returned.

        Args:
            state: A dict with `"hi"` and `"lo"`, two numbers each.

        Raises:
            ValueError: if `state` lacks a key or a list has the wrong length.
        """
        if set(state) != {"hi", "lo"} or any(len(state[k]) != 2 for k in ("hi", "lo")):
            raise ValueError(
                f'state must be {{"hi": [sum_sq, sum_w], "lo": [sum_sq, sum_w]}}, got {state!r}.'
            )
        self.hi.assign(np.asarray(state["hi"], dtype=self.dtype))
        self.lo.assign(np.asarray(state["lo"], dtype=self.dtype))

    def _per_sample_weight(self, sample_weight: Any, per_sample: Any) -> Any:
        weight = ops.convert_to_tensor(sample_weight, dtype=self.dtype)
        shape = tuple(per_sample.shape)
        if len(weight.shape) == 0:
            return ops.broadcast_to(weight, ops.shape(per_sample))
        if _same_shape(tuple(weight.shape), shape):
            return weight
        if _same_shape(tuple(weight.shape), shape + (1,)):
            return ops.squeeze(weight, axis=-1)
        raise ValueError(
            f"sample_weight must have shape {shape} or {shape + (1,)} (one weight per "
            f"sample), but it has shape {tuple(weight.shape)}."
        )

    def result(self) -> Any:
        """The root mean squared error so far; 0.0 when nothing was counted.

        Returns:
            A scalar tensor.
        """
        total, count = ops.unstack(self.hi.value + self.lo.value)
        return ops.sqrt(ops.divide_no_nan(total, count))

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments, for `from_config`.

        Returns:
            A dict with `name` and `dtype`.
        """
        return {"name": self.name, "dtype": self.dtype}


RMSE = RootMeanSquaredError
