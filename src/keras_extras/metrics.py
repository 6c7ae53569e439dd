"""Metrics: exact, registered and backend-neutral."""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_extras import _backends, _keras_internals
from keras_extras._exact_mean import _ExactMean, compensated_add
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


def _label_error(labels: Any, classes: int) -> ValueError | None:
    """The error for invalid sparse labels, naming the first one; None if all are valid."""
    labels = ops.convert_to_numpy(labels)
    bad = ~((labels >= 0) & (labels < classes) & (labels == np.floor(labels)))
    if not bad.any():
        return None
    index = tuple(int(i) for i in np.argwhere(bad)[0])
    return ValueError(
        f"Sparse labels must be whole numbers in [0, {classes}) for y_pred with "
        f"{classes} classes, but y_true{list(index)} is {labels[index].item()!r}."
    )


def _squared_errors(targets: Any, labels: Any, y_pred: Any, weight_rank: int) -> Any:
    """The squared errors, the labels one-hot encoded.

    For sparse labels an invalid one (outside [0, C), fractional or NaN) turns
    its sample's error NaN, so a compiled step, which cannot raise, never drops
    it silently. Unless the weight has the errors' full rank, the errors are
    averaged over the class axis first: `_weighted_sums` would average them down
    to the weight's rank anyway, and the NaN then costs one value per label
    instead of per class.
    """
    if labels is None:
        return ops.square(y_pred - targets)
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
        return ops.where(ops.expand_dims(valid, axis=-1), squared, np.nan)
    return ops.where(valid, _mean_over(squared, len(labels.shape)), np.nan)


def _is_integer(x: Any) -> bool:
    """Whether a tensor holds integers."""
    return "int" in keras.backend.standardize_dtype(x.dtype)


def _batch_sums(y_true: Any, y_pred: Any, sample_weight: Any) -> tuple[Any, Any]:
    """RMSE's two sums of one batch: `([weighted squared errors, weight], maybe_invalid)`.

    `maybe_invalid` is None for dense targets. For class labels it says whether
    the total is NaN or infinite, which an invalid label makes it: an eager call
    then looks for one. One scalar, not a second pass over the labels.
    """
    targets, labels = _align_targets(y_true, y_pred)
    if targets is not None and _is_integer(targets):
        targets = ops.cast(targets, y_pred.dtype)
    weight_rank = -1 if sample_weight is None else len(sample_weight.shape)
    squared = _squared_errors(targets, labels, y_pred, weight_rank)
    total, count = _weighted_sums(squared, sample_weight, y_pred.dtype)
    maybe_invalid = None if labels is None else ops.logical_not(ops.isfinite(total))
    return ops.stack([total, count]), maybe_invalid


def _rmse_sums(y_true: Any, y_pred: Any, sample_weight: Any) -> tuple[Any, Any]:
    """`_batch_sums`, in the backend's own kernels where it has them (torch, common shapes)."""
    sums = _backends.batch_sums(y_true, y_pred, sample_weight)
    return _batch_sums(y_true, y_pred, sample_weight) if sums is None else sums


# One batch's update of the state pair, a pure function of tensors: `(high, low, y_true,
# y_pred, sample_weight) -> (high, low, maybe_invalid)`. Traced with the step inside `fit`;
# eager calls run the same two stages as `_backends.eager` compiles them.
_rmse_update = _backends.chain(_rmse_sums, compensated_add)


@export
class RootMeanSquaredError(_ExactMean):
    """Computes the root mean squared error, exact over any stream.

    Formula, over the samples `i` seen since the last reset, with weights `w_i`
    (1 without a `sample_weight`) and `j` running over the non-batch axes:

    ```python
    rmse = sqrt(sum_i(w_i * mean_j((y_pred[i, j] - y_true[i, j]) ** 2)) / sum_i(w_i))
    ```

    It computes what `keras.metrics.RootMeanSquaredError` computes, and takes the
    same `sample_weight` shapes. `y_true` may also hold integer class labels, of
    shape `(N,)` or `(N, 1)` for `(N, C)` predictions: they are one-hot encoded
    first, so the metric works beside `sparse_categorical_crossentropy`. The total
    and the count are kept as compensated pairs, exact past 2**24 samples on every
    backend. How it reads shapes and weights is in the guide's :ref:`rmse-rules`;
    the differences from the built-in, and why, are in :doc:`differences`.

    Args:
        name: Name of the metric instance, the key in `fit`'s logs.
        dtype: Dtype of the metric's computations and result.

    Returns:
        From `result()`, a scalar tensor: the root mean squared error of every
        batch since the last reset, 0.0 when nothing was counted.

    Raises:
        ValueError: from `update_state`, if `y_true` fits `y_pred` neither as
            targets nor as class labels, or `sample_weight` does not fit the
            squared errors (the message names the shapes); in an eager call, if
            a class label is outside [0, C) or not a whole number. Inside a
            compiled step an invalid label makes the result NaN instead.

    Example:
    >>> import keras_extras
    >>> m = keras_extras.RMSE()
    >>> m.update_state([[0, 1], [0, 0]], [[1, 1], [0, 0]])
    >>> round(float(m.result()), 4)
    0.5
    >>> m.reset_state()
    >>> m.update_state([[0, 1], [0, 0]], [[1, 1], [0, 0]], sample_weight=[1, 0])
    >>> round(float(m.result()), 4)
    0.7071
    >>> m.reset_state()
    >>> m.update_state([1, 0], [[0.1, 0.9], [0.8, 0.2]])  # class labels
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
        _keras_internals.set_direction(self, "down")

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        """Accumulates the squared errors of one batch.

        Args:
            y_true: Targets of `y_pred`'s shape (a trailing axis of size 1 aside),
                or integer class labels of its shape without the class axis.
            y_pred: Predictions: a batch of them, or one scalar.
            sample_weight: Optional weights, of any shape that
                `keras.metrics.Mean` takes: a scalar for the batch, one per
                sample, or the rank of the squared errors (of the labels, for
                class labels) with axes of their sizes or 1.

        Raises:
            ValueError: on shapes that do not fit, or on invalid labels in an
                eager call.
        """
        y_pred = ops.convert_to_tensor(y_pred, dtype=self.dtype)
        given = y_true
        y_true = _convert_targets(y_true, self.dtype)
        if sample_weight is not None:
            sample_weight = ops.convert_to_tensor(sample_weight, dtype=self.dtype)
        state = (self.sums.value, self.sums_low.value)
        if _backends.is_symbolic(y_pred):
            # Inside a compiled step: its compiler sees these operations with the rest.
            high, low, _ = _rmse_update(*state, y_true, y_pred, sample_weight)
        else:
            # Compiled calls instead of some twenty dispatched operations.
            update = _backends.eager(_rmse_sums, compensated_add)
            high, low, maybe_invalid = update(*state, y_true, y_pred, sample_weight)
            # One scalar read back, not the labels; they are copied only to name a bad one.
            if maybe_invalid is not None and bool(ops.convert_to_numpy(maybe_invalid)):
                # Named as given (converted, a large int64 label may have been rounded), in
                # the labels' shape: the predictions' without the class axis.
                given = np.reshape(ops.convert_to_numpy(given), tuple(y_pred.shape[:-1]))
                error = _label_error(given, int(y_pred.shape[-1]))
                if error is not None:  # else the predictions or weights were not finite
                    raise error
        self._assign_pair(high, low)

    def result(self) -> Any:
        """The root mean squared error so far; 0.0 when nothing was counted.

        Returns:
            A scalar tensor.
        """
        return ops.sqrt(super().result())

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments, for `from_config`.

        Returns:
            A dict with `name` and `dtype`.
        """
        return {"name": self.name, "dtype": self.dtype}


RMSE = RootMeanSquaredError
