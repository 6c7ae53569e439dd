"""The metrics' eager updates on TensorFlow: `tf.function`, traced once per kind of input.

Traced for each input shape, a loop over batches of varying length (bucketed
sequences, a last partial batch) would trace a function per length, which costs
far more than the update. So an axis is traced as unknown (None) wherever the
targets and the predictions agree on it: every batch length, and every sequence
length of equal targets and predictions, shares one trace. What the shape rule
decides stays static: the ranks, the axes of size 1 and the number of classes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable
from typing import Any

import tensorflow as tf

from keras_extras._backends import CompiledCache, chain


def is_symbolic(x: Any) -> bool:
    """Whether `x` is being traced (tf.function) rather than computed eagerly."""
    return not tf.executing_eagerly()


@functools.cache
def eager(batch: Callable, accumulate: Callable) -> Callable:
    """The update `(high, low, y_true, y_pred, sample_weight)`, traced once per kind of input.

    Both stages in one trace: a call of a traced function costs more than its operations.
    """
    return CompiledCache(chain(batch, accumulate), _trace, _relaxed_signature)


def _relaxed_signature(*args: Any) -> Hashable:
    """The arguments' shapes and dtypes, an axis unknown where targets and predictions agree.

    A shape rule that holds for the unknown axis holds for every length they
    agree on, so a trace for the relaxed shapes is the trace of each. A weight
    axis is relaxed with them where it has their length; where it has another
    length than 1 the axis stays known, so that the trace refuses the weight.
    """
    shapes = [None if a is None else tuple(a.shape) for a in args]
    y_true, y_pred, weight = shapes[-3:]
    assert y_true is not None and y_pred is not None
    weight = weight or ()
    free = {
        k
        for k, (t, p) in enumerate(zip(y_true, y_pred))
        if t == p != 1 and (k >= len(weight) or weight[k] in (1, p))
    }

    def relax(shape: tuple | None) -> tuple | None:
        if shape is None:
            return None
        return tuple(None if k in free and d == y_pred[k] else d for k, d in enumerate(shape))

    relaxed = shapes[:-3] + [relax(shape) for shape in shapes[-3:]]
    return tuple(
        None if a is None else (shape, a.dtype) for a, shape in zip(args, relaxed, strict=True)
    )


def _trace(fn: Callable, signature: Hashable) -> Callable:
    """`fn` traced for `signature`'s tensors; arguments that are None stay None.

    A concrete function, which TensorFlow calls for less than a `tf.function`,
    from a `tf.function` of its own: one that had traced other shapes would hand
    out the trace of any that these are a subtype of.
    """
    given = [s is not None for s in signature]  # type: ignore[attr-defined]
    specs = [tf.TensorSpec(*s) for s in signature if s is not None]  # type: ignore[attr-defined]

    def with_nones(*tensors: Any) -> Any:
        it = iter(tensors)
        return fn(*(next(it) if present else None for present in given))

    try:
        concrete = tf.function(with_nones, autograph=False).get_concrete_function(*specs)
    except ValueError:
        # Shapes the shape rule refuses, whatever the unknown axes: run on the
        # tensors themselves, whose error names their shapes.
        return fn
    return lambda *args: concrete(*(a for a in args if a is not None))
