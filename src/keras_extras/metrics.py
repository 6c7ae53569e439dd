"""Metrics: exact, registered and backend-neutral."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_extras import _keras_internals, _steps
from keras_extras._export import export

_Shape = tuple

# Integer labels that int32 or int64 hold exactly. Wider unsigned ones take the
# float route, so that no large label can wrap around into [0, C).
_SIGNED_OR_NARROW_INTS = ("int8", "int16", "int32", "int64", "uint8", "uint16")


def _same_shape(a: _Shape, b: _Shape) -> bool:
    """Whether two static shapes agree, an unknown (None) dim matching anything."""
    return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b))


def _align_targets(y_true: Any, y_pred: Any) -> tuple[Any, Any | None]:
    """Brings `y_true` to `y_pred`'s shape: the one shape rule of this module.

    * Same shape, or the same but for a trailing axis of size 1 on either
      side: dense targets, returned reshaped to `y_pred`'s shape.
      Two scalars are one sample.
    * `y_pred` has C > 1 entries on its last axis and `y_true` lacks that axis
      (or has size 1 there): sparse class labels. They are returned as they are,
      for the caller to validate and one-hot encode.

    Args:
        y_true: Targets or labels, a tensor.
        y_pred: Predictions, a tensor.

    Returns:
        `(dense_targets, None)` for dense targets, `(None, labels)` for sparse
        labels, where `labels` has `y_pred`'s shape without its last axis.

    Raises:
        ValueError: if the shapes fit neither case; the message names both.
    """
    t_shape, p_shape = tuple(y_true.shape), tuple(y_pred.shape)
    if _same_shape(t_shape, p_shape):
        return y_true, None
    if len(t_shape) == len(p_shape) + 1 and t_shape[-1] == 1 and _same_shape(t_shape[:-1], p_shape):
        return ops.squeeze(y_true, axis=-1), None
    if len(t_shape) == len(p_shape) - 1 and p_shape[-1] == 1 and _same_shape(t_shape, p_shape[:-1]):
        return ops.expand_dims(y_true, axis=-1), None
    # Labels need a batch axis and a class axis: 1-D predictions are samples, as in Keras.
    batch_shape = p_shape[:-1]
    if len(p_shape) >= 2 and _same_shape(t_shape, batch_shape):
        labels = y_true
    elif len(p_shape) >= 2 and t_shape[-1:] == (1,) and _same_shape(t_shape[:-1], batch_shape):
        labels = ops.squeeze(y_true, axis=-1)
    else:
        labels_hint = f", or {batch_shape} / {batch_shape + (1,)} (integer class labels)"
        raise ValueError(
            f"Incompatible shapes: y_true has shape {t_shape} and y_pred has shape "
            f"{p_shape}. Expected y_true of shape {p_shape} (dense targets)"
            f"{labels_hint if len(p_shape) >= 2 else ''}."
        )
    classes = p_shape[-1]
    if classes is None:
        raise ValueError(
            f"Sparse labels of shape {t_shape} need a known number of classes, but "
            f"y_pred has shape {p_shape}."
        )
    return None, labels


def _squeeze_or_expand(values: Any, weight: Any) -> tuple[Any, Any]:
    """Keras's `squeeze_or_expand_to_same_rank`: ranks one apart by a trailing 1 meet."""
    v_rank, w_rank = len(values.shape), len(weight.shape)
    if v_rank == w_rank + 1 and values.shape[-1] == 1:
        if w_rank == 1:
            return values, ops.expand_dims(weight, axis=-1)
        return ops.squeeze(values, axis=-1), weight
    if w_rank == v_rank + 1 and weight.shape[-1] == 1:
        if v_rank == 1:
            return ops.expand_dims(values, axis=-1), weight
        return values, ops.squeeze(weight, axis=-1)
    return values, weight


def _broadcasts(shape: _Shape, to: _Shape) -> bool:
    """Whether `shape` broadcasts to `to` (NumPy's rule, one way), unknown dims passing."""
    pairs = zip(reversed(shape), reversed(to))
    return len(shape) <= len(to) and all(s in (1, None) or t is None or s == t for s, t in pairs)


def _mean_over(x: Any, first_axis: int) -> Any:
    """The mean of `x` over its axes from `first_axis` on."""
    axes = tuple(range(first_axis, len(x.shape)))
    if not axes:
        return x
    # Not `ops.mean`: Keras's torch mean rounds float64 through float32.
    size = math.prod(ops.shape(x)[a] for a in axes)
    if isinstance(size, int):  # a known size: a constant, not a cast in the graph
        return ops.sum(x, axis=axes) / float(size)
    return ops.sum(x, axis=axes) / ops.cast(size, x.dtype)


def _weighted_sums(values: Any, sample_weight: Any, dtype: Any) -> tuple[Any, Any]:
    """`(sum of weighted values, sum of weights)` of one batch, by Keras's `Mean` rule.

    As `keras.metrics.Mean` does: `values` are averaged down to the weight's rank,
    the weight is broadcast to them, both are averaged over every axis but the first,
    then summed. So a weight of rank 1 weights each sample, one of `values`' rank
    weights each element, and a scalar weights the whole batch's mean as one sample.
    Without a weight, each sample (or a scalar value) counts 1.
    """
    if sample_weight is None:
        count = ops.shape(values)[0] if len(values.shape) else 1
        return ops.sum(_mean_over(values, 1)), ops.convert_to_tensor(count, dtype=dtype)
    weight = ops.convert_to_tensor(sample_weight, dtype=dtype)
    given, errors = tuple(weight.shape), tuple(values.shape)
    values, weight = _squeeze_or_expand(values, weight)
    if not len(weight.shape):
        # The batch's mean as one sample of that weight. Keras's mean of an empty
        # batch is NaN; here an empty batch adds nothing, as it does unweighted.
        size = ops.cast(ops.size(values), dtype)
        return ops.divide_no_nan(ops.sum(values) * weight, size), weight * ops.minimum(size, 1)
    values = _mean_over(values, len(weight.shape))
    if not _broadcasts(tuple(weight.shape), tuple(values.shape)):
        raise ValueError(
            f"sample_weight of shape {given} does not fit the squared errors of shape "
            f"{errors}: give a scalar, one weight per sample, or weights of their "
            "rank whose axes have their sizes or 1."
        )
    weight = ops.broadcast_to(weight, ops.shape(values))
    return ops.sum(_mean_over(values * weight, 1)), ops.sum(_mean_over(weight, 1))


def _convert_targets(y_true: Any, dtype: Any) -> Any:
    """`y_true` as a tensor: integers kept as they are, anything else in `dtype`.

    Integer class labels then need no cast and no whole-number check. Where the
    backend would narrow them (int64 on JAX without 64-bit mode), they are
    converted to `dtype` instead, so that no large label wraps around into a
    valid one.
    """
    source = getattr(y_true, "dtype", None)
    source = keras.backend.standardize_dtype(np.asarray(y_true).dtype if source is None else source)
    if "int" in source:
        labels = ops.convert_to_tensor(y_true)
        if keras.backend.standardize_dtype(labels.dtype) == source:
            return labels
    # As the built-in does; without a dtype, torch would round float64 to float32.
    return ops.convert_to_tensor(y_true, dtype=dtype)


def _label_error(labels: Any, classes: int) -> ValueError:
    """The error for invalid sparse labels, naming the first one."""
    labels = ops.convert_to_numpy(labels)
    bad = ~((labels >= 0) & (labels < classes) & (labels == np.floor(labels)))
    index = tuple(int(i) for i in np.argwhere(bad)[0])
    return ValueError(
        f"Sparse labels must be whole numbers in [0, {classes}) for y_pred with "
        f"{classes} classes, but y_true{list(index)} is {labels[index].item()!r}."
    )


def _squared_errors(targets: Any, labels: Any, y_pred: Any, weight_rank: int) -> tuple[Any, Any]:
    """`(squared errors, validity of the labels)`, the labels one-hot encoded.

    For dense targets the validity is None. For sparse labels an invalid one
    (outside [0, C), fractional or NaN) turns its sample's error NaN, so a
    compiled step, which cannot raise, never drops it silently. Unless the
    weight has the errors' full rank, the errors are averaged over the class
    axis first: `_weighted_sums` would average them down to the weight's rank
    anyway, and the NaN then costs one value per label instead of per class.
    """
    if labels is None:
        return ops.square(y_pred - targets), None
    classes = int(y_pred.shape[-1])
    dtype = keras.backend.standardize_dtype(labels.dtype)
    if dtype in _SIGNED_OR_NARROW_INTS:
        # Integer labels are whole numbers already: two comparisons, no casts.
        # Narrow types are widened first, so that `classes` fits in them.
        if dtype not in ("int32", "int64"):
            labels = ops.cast(labels, "int32")
        valid = (labels >= 0) & (labels < classes)
        safe = ops.where(valid, labels, 0)
    else:
        labels = ops.cast(labels, y_pred.dtype)
        valid = (labels >= 0) & (labels < classes) & (labels == ops.floor(labels))
        safe = ops.cast(ops.where(valid, labels, 0), "int32")
    squared = ops.square(y_pred - ops.one_hot(safe, classes, dtype=y_pred.dtype))
    # A scalar NaN, not `full_like`: on torch that calls `.item()`, which fails
    # on the "meta" device where Keras first builds the compiled metrics.
    if weight_rank > len(labels.shape):
        return ops.where(ops.expand_dims(valid, axis=-1), squared, np.nan), valid
    return ops.where(valid, _mean_over(squared, len(labels.shape)), np.nan), valid


def _is_integer(x: Any) -> bool:
    """Whether a tensor holds integers."""
    return "int" in keras.backend.standardize_dtype(x.dtype)


def _two_sum(a: Any, b: Any) -> tuple[Any, Any]:
    """`a + b` as the float sum and its exact rounding error (Knuth's TwoSum)."""
    s = a + b
    b_virtual = s - a
    return s, (a - (s - b_virtual)) + (b - b_virtual)


def _fast_two_sum(a: Any, b: Any) -> tuple[Any, Any]:
    """TwoSum for `|a| >= |b|` (Dekker), three operations instead of six."""
    s = a + b
    return s, b - (s - a)


def _compensated_add(high: Any, low: Any, add_high: Any, add_low: Any = None) -> tuple[Any, Any]:
    """The pair `(high, low)` plus the pair `(add_high, add_low)`, as a new exact pair."""
    total, error = _two_sum(high, add_high)
    low = low + (error if add_low is None else add_low + error)
    # Both sums only grow, so the new high part dominates the low one.
    high, low = _fast_two_sum(total, low)
    # An overflowing (or NaN) sum would make its error inf - inf = NaN, and with it
    # the high part: the sum itself, with no low part, is the honest answer.
    finite = ops.isfinite(total)
    return ops.where(finite, high, total), ops.where(finite, low, 0)


class _ExactMean(keras.metrics.Metric):
    """A weighted mean whose two sums stay exact: Keras's `Mean`, compensated.

    `total` is the weighted sum of the values and `count` the sum of the weights.
    Each is held as a high part (`sums`) and what that float could not hold (its
    low part, `sums_low`): compensated (TwoSum) addition keeps the pair's sum
    exact to about 48 bits in float32. Adding a pair is the one update rule, for
    a batch and for another metric's state alike, so merging shards gives the
    one-shot state.
    """

    def __init__(self, name: str, dtype: Any) -> None:
        super().__init__(name=name, dtype=dtype)
        # [total, count], high parts and low parts.
        pair = {"shape": (2,), "initializer": "zeros", "dtype": self.dtype}
        self.sums = self.add_variable(name="sums", **pair)
        self.sums_low = self.add_variable(name="sums_low", **pair)

    def _add_pair(self, high: Any, low: Any = None) -> None:
        self._assign_pair(*_compensated_add(self.sums.value, self.sums_low.value, high, low))

    def _assign_pair(self, high: Any, low: Any) -> None:
        self.sums.assign(high)
        self.sums_low.assign(low)

    def _mean(self) -> Any:
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
            self._add_pair(other.sums.value, other.sums_low.value)

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
        self.sums.assign(pairs[:, 0])
        self.sums_low.assign(pairs[:, 1])


def _rmse_update(
    high: Any, low: Any, y_true: Any, y_pred: Any, sample_weight: Any
) -> tuple[Any, Any, Any]:
    """One batch's update of the state pair, a pure function of tensors.

    Returns:
        `(high, low, any_invalid)`: the new pair, and for sparse labels whether
        a label was invalid (None for dense targets).
    """
    targets, labels = _align_targets(y_true, y_pred)
    if targets is not None and _is_integer(targets):
        targets = ops.cast(targets, y_pred.dtype)
    weight_rank = -1 if sample_weight is None else len(sample_weight.shape)
    squared, valid = _squared_errors(targets, labels, y_pred, weight_rank)
    total, count = _weighted_sums(squared, sample_weight, y_pred.dtype)
    high, low = _compensated_add(high, low, ops.stack([total, count]))
    return high, low, None if valid is None else ops.any(ops.logical_not(valid))


@export
class RootMeanSquaredError(_ExactMean):
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
      is a different quantity.) Other shapes are refused rather than
      broadcast against each other, as the built-in would.
    * **Sparse labels.** When `y_pred`'s last axis has C > 1 entries and
      `y_true` holds integer class labels without that axis, of shape (N,) or
      (N, 1) for (N, C) predictions, the labels are one-hot encoded to C
      classes first. The result equals the dense result on those one-hot
      targets, so `metrics=[RMSE()]` works for a softmax classifier trained
      with `sparse_categorical_crossentropy`.
    * **Weights.** `sample_weight` takes every shape that
      `keras.metrics.RootMeanSquaredError` takes, with the same meaning (that of
      `keras.metrics.Mean`): the squared errors are averaged down to the
      weight's rank, weighted, and each sample's share and weight are averaged
      over its remaining axes. So (N,) and (N, 1) weight each sample; (N, T)
      weights each time step of (N, T) or (N, T, C) targets; a weight of the
      errors' rank weights each element, any size-1 axis broadcasting; in
      sparse-label mode, weights of the labels' shape weight each label. A
      scalar weights the batch's mean as one sample, as in Keras. With no
      samples, or a total weight of 0, the result is 0.0, never NaN. An empty
      batch leaves the state as it was.
    * **Scalars and 1-D inputs** are treated as Keras treats them: two
      scalars are one sample, and (N,) targets and predictions are N samples.
    * **Exact over long streams.** The running total and count are kept as
      float32 high/low pairs with compensated (TwoSum) addition, about 48 bits
      of precision, so neither stops growing past 2**24 samples, on every
      backend and without JAX's 64-bit mode. `get_state` returns the pairs.

    Args:
        name: Name of the metric instance, the key in `fit`'s logs.
        dtype: Dtype of the metric's computations and result.

    Raises:
        ValueError: from `update_state`, if the shapes are incompatible (the
            message names both), if `sample_weight` does not broadcast to the
            squared errors (the message names both shapes), or, in an eager
            call, if a sparse label is outside [0, C) or not a whole number.
            Inside a compiled step (`fit`, `tf.function`, `jax.jit`), where no
            error can be raised, an invalid label makes the result NaN instead
            of being dropped silently.

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
    >>> m.reset_state()
    >>> m.update_state(  # per-element weights
    ...     [[0.0, 1.0], [2.0, 0.0]], [[1.0, 1.0], [0.0, 0.0]],
    ...     sample_weight=[[1.0, 0.0], [0.5, 1.0]])
    >>> round(float(m.result()), 4)
    1.0954

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
        _keras_internals.set_direction(self, "down")
        # Input signatures seen in eager calls: the second call compiles its update.
        self._signatures: set[tuple] = set()

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        """Accumulates the squared errors of one batch.

        Args:
            y_true: Dense targets, or integer class labels (see the class
                docstring for the shape rule).
            y_pred: Predictions: a batch of them, or one scalar.
            sample_weight: Optional weights: a scalar (the batch's weight), one
                per sample, shape (N,) or (N, 1), or a tensor of the rank of
                `y_true` (of the labels, for sparse labels) whose axes have
                its sizes or 1, such as (N, T) per-timestep weights.

        Raises:
            ValueError: on incompatible shapes, or on invalid labels in an
                eager call.
        """
        y_pred = ops.convert_to_tensor(y_pred, dtype=self.dtype)
        given = y_true
        y_true = _convert_targets(y_true, self.dtype)
        if sample_weight is not None:
            sample_weight = ops.convert_to_tensor(sample_weight, dtype=self.dtype)
        state = (self.sums.value, self.sums_low.value)
        if _steps.is_symbolic(y_pred):
            # Inside a compiled step: its compiler sees these operations with the rest.
            high, low, _ = _rmse_update(*state, y_true, y_pred, sample_weight)
            self._assign_pair(high, low)
            return
        # Eagerly, one compiled call per input signature instead of some twenty
        # dispatched operations; a signature seen once (a last partial batch, a
        # one-off shape) runs operation by operation rather than paying a compilation.
        signature = tuple(
            (tuple(t.shape), str(t.dtype)) for t in (y_true, y_pred, sample_weight) if t is not None
        )
        if signature in self._signatures:
            high, low, any_invalid = _steps.eager_rmse_update(_rmse_update)(
                *state, y_true, y_pred, sample_weight
            )
        else:
            self._signatures.add(signature)
            high, low, any_invalid = _rmse_update(*state, y_true, y_pred, sample_weight)
        # One scalar read back, not the labels; they are copied only to name a bad one.
        if any_invalid is not None and bool(ops.convert_to_numpy(any_invalid)):
            # Named as given (converted, a large int64 label may have been rounded), in
            # the labels' shape: the predictions' without the class axis.
            given = np.reshape(ops.convert_to_numpy(given), tuple(y_pred.shape[:-1]))
            raise _label_error(given, int(y_pred.shape[-1]))
        self._assign_pair(high, low)

    def reset_state(self) -> None:
        """Zeroes the state; the metric then computes bit for bit as a new one."""
        super().reset_state()
        # Compiled and operation-by-operation updates may round differently.
        self._signatures.clear()

    def result(self) -> Any:
        """The root mean squared error so far; 0.0 when nothing was counted.

        Returns:
            A scalar tensor.
        """
        return ops.sqrt(self._mean())

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments, for `from_config`.

        Returns:
            A dict with `name` and `dtype`.
        """
        return {"name": self.name, "dtype": self.dtype}


RMSE = RootMeanSquaredError
