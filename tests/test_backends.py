"""The metrics' backend code: eager updates compiled within bounds, and torch's kernel."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops

from keras_extras import _backends, _exact_mean, metrics
from tests.harness import BACKEND


def test_compiled_cache_keeps_the_most_recently_used_and_releases_the_others():
    """Catches a cache that grows with every key (memory per batch length), or that drops
    the function in use instead of the least recently used one, or never frees one."""
    compiled, released = [], []

    def compile(fn, key):
        compiled.append(key)
        return lambda *args: (key, fn(*args))

    cache = _backends.CompiledCache(
        lambda x: x * 2, compile, key=lambda x: x % 10, release=released.append, limit=2
    )
    assert cache(3) == (3, 6) and cache(14) == (4, 28)
    assert cache(23) == (3, 46)  # key 3 again: compiled once, now the most recent
    assert cache(5) == (5, 10)  # a third key drops key 4, the least recently used
    assert compiled == [3, 4, 5]
    assert [f(1) for f in released] == [(4, 2)]
    assert list(cache.compiled) == [3, 5]
    assert cache(4) == (4, 8) and compiled == [3, 4, 5, 4]


def test_varying_batch_lengths_keep_a_bounded_number_of_compiled_updates():
    """Catches an eager update compiled per batch length and kept for good, so that a loop
    over varying lengths (bucketed sequences, a last partial batch) grows memory with
    every new length. TensorFlow traces one update for all lengths but 1 (whose axes of
    size 1 the shape rule reads); JAX compiles per length and keeps the last `limit`;
    torch compiles nothing."""

    def batch(*args):
        return metrics._rmse_sums(*args)

    eager = _backends.eager(batch, _exact_mean.compensated_add)
    if BACKEND == "torch":
        assert not hasattr(eager, "compiled")
        return
    eager.compiled.clear()
    eager.limit = 3
    rng = np.random.default_rng(0)
    zeros = ops.zeros((2,))
    try:
        for n in (4, 1, 7, 4, 9, 2, 12, 5):
            y_true, y_pred = rng.random((n, 3), "float32"), rng.random((n, 3), "float32")
            args = (zeros, zeros, *map(ops.convert_to_tensor, (y_true, y_pred)), None)
            total, count = ops.convert_to_numpy(eager(*args)[0])
            assert count == n
            assert total == pytest.approx(((y_true - y_pred) ** 2).mean(axis=1).sum(), rel=1e-5)
        assert len(eager.compiled) == (2 if BACKEND == "tensorflow" else 3)
    finally:
        eager.limit = _backends.COMPILED_LIMIT


def test_many_batch_lengths_compile_a_few_updates():
    """Catches memory that grows with every distinct batch length: 40 lengths compile
    two updates on TensorFlow (length 1, and every other one), and on JAX, which
    compiles per shape, no more than the cache's limit; torch compiles none."""
    eager = _backends.eager(metrics._rmse_sums, _exact_mean.compensated_add)
    if BACKEND == "torch":
        return
    eager.compiled.clear()
    eager.limit = 10
    zeros = ops.zeros((2,))
    rng = np.random.default_rng(2)
    try:
        for n in range(1, 41):
            y_true = ops.convert_to_tensor(rng.integers(0, 3, n).astype("int32"))
            y_pred = ops.convert_to_tensor(rng.random((n, 3), "float32"))
            eager(zeros, zeros, y_true, y_pred, None)
        assert len(eager.compiled) == (2 if BACKEND == "tensorflow" else 10)
    finally:
        eager.limit = _backends.COMPILED_LIMIT


# A batch of 5 in every form the eager update is compiled for: `(y_true, y_pred,
# sample_weight)` shapes.
B = 5
EAGER_CASES = {
    "dense": ((B, 3), (B, 3), None),
    "dense, (N,) weights": ((B, 3), (B, 3), (B,)),
    "dense, (N,1) weights": ((B, 3), (B, 3), (B, 1)),
    "dense, per-element weights": ((B, 3), (B, 3), (B, 3)),
    "dense, (1,3) weights": ((B, 3), (B, 3), (1, 3)),
    "dense, scalar weight": ((B, 3), (B, 3), ()),
    "dense 1-D": ((B,), (B,), None),
    "dense (N,T,C), (N,T) weights": ((B, 4, 3), (B, 4, 3), (B, 4)),
    "labels": ((B,), (B, 3), None),
    "labels (N,1), weights": ((B, 1), (B, 3), (B,)),
    "labels (N,T)": ((B, 4), (B, 4, 3), None),
    "empty batch": ((0,), (0, 3), None),
}


@pytest.mark.parametrize("case", EAGER_CASES, ids=list(EAGER_CASES))
def test_eager_update_gives_the_sums_of_the_update_run_as_it_is(case):
    """The eager update is compiled (on TensorFlow for shapes with unknown axes).
    Catches a trace of the shape rule for the wrong shapes, such as a weight axis
    relaxed that must broadcast: its sums must be those of `metrics._rmse_update`
    run operation by operation."""
    true_shape, pred_shape, weight_shape = EAGER_CASES[case]
    rng = np.random.default_rng(3)
    y_pred = rng.random(pred_shape).astype("float32")
    if true_shape == pred_shape:
        y_true = rng.random(true_shape).astype("float32")
    else:
        y_true = rng.integers(0, pred_shape[-1], true_shape).astype("int32")
    weight = (
        None if weight_shape is None else np.asarray(rng.uniform(0.5, 2, weight_shape), "float32")
    )
    args = (ops.zeros((2,)), ops.zeros((2,)), *_tensors(y_true, y_pred, weight))
    eager = _backends.eager(metrics._rmse_sums, _exact_mean.compensated_add)(*args)
    direct = metrics._rmse_update(*args)
    np.testing.assert_allclose(
        ops.convert_to_numpy(eager[0]), ops.convert_to_numpy(direct[0]), rtol=1e-6
    )
    assert (eager[2] is None) == (direct[2] is None)


# --- torch's kernel for the batch sums ------------------------------------------------

N, T, C = 6, 4, 3


def _case(true_shape, dtype, weight_shape, pred_shape=(N, C)):
    rng = np.random.default_rng(1)
    y_pred = rng.random(pred_shape).astype("float32")
    if dtype == "float32-targets":
        y_true = rng.random(true_shape).astype("float32")
    else:
        y_true = rng.integers(0, pred_shape[-1], true_shape).astype(dtype)
    weight = None if weight_shape is None else rng.uniform(0, 2, weight_shape).astype("float32")
    return y_true, y_pred, weight


COVERED = {
    "dense": ((N, C), "float32-targets", None),
    "dense, per-sample weights": ((N, C), "float32-targets", (N,)),
    "dense 1-D": ((N,), "float32-targets", (N,), (N,)),
    "dense (N,T,C)": ((N, T, C), "float32-targets", (N,), (N, T, C)),
    "int32 labels": ((N,), "int32", None),
    "int32 labels, per-sample weights": ((N,), "int32", (N,)),
    "int64 labels": ((N,), "int64", (N,)),
    "uint8 labels": ((N,), "uint8", None),
    "float labels": ((N,), "float32", (N,)),
    "labels (N,T) of (N,T,C)": ((N, T), "int32", (N,), (N, T, C)),
    "empty batch": ((0,), "int32", None, (0, C)),
}
NOT_COVERED = {
    "labels (N,1)": ((N, 1), "int32", None),
    "per-sample weights (N,1)": ((N, C), "float32-targets", (N, 1)),
    "per-element weights": ((N, C), "float32-targets", (N, C)),
    "scalar weight": ((N, C), "float32-targets", ()),
    "scalars": ((), "float32-targets", None, ()),
}


def _tensors(y_true, y_pred, weight):
    return (
        metrics._convert_targets(y_true, "float32"),
        ops.convert_to_tensor(y_pred),
        None if weight is None else ops.convert_to_tensor(weight),
    )


@pytest.mark.backends("torch", reason="torch's kernel exists there only")
@pytest.mark.parametrize("case", COVERED, ids=list(COVERED))
def test_torch_kernel_equals_the_general_arithmetic_bit_for_bit(case):
    """`_backends/torch.py` computes the batch sums of the common shapes in torch's own
    operations, for speed. Catches it drifting from `metrics._batch_sums`, the arithmetic
    every other backend and mode uses: another mean, weighting, count or label rule."""
    args = _tensors(*_case(*COVERED[case]))
    kernel = _backends.batch_sums(*args)
    assert kernel is not None, "the kernel no longer covers this case"
    general = metrics._batch_sums(*args)
    np.testing.assert_array_equal(ops.convert_to_numpy(kernel[0]), ops.convert_to_numpy(general[0]))
    assert (kernel[1] is None) == (general[1] is None)
    if general[1] is not None:
        assert bool(kernel[1]) == bool(general[1])


@pytest.mark.backends("torch", reason="torch's kernel exists there only")
@pytest.mark.parametrize("label", [3, -1, 1.5, np.nan])
def test_torch_kernel_marks_invalid_labels_as_the_general_arithmetic(label):
    y_true = np.array([0, label, 2], "float32")
    args = _tensors(y_true, np.full((3, 3), 1 / 3, "float32"), None)
    (sums, invalid), (general, general_invalid) = (
        _backends.batch_sums(*args),
        metrics._batch_sums(*args),
    )
    assert bool(invalid) and bool(general_invalid)
    np.testing.assert_array_equal(ops.convert_to_numpy(sums), ops.convert_to_numpy(general))
    assert np.isnan(ops.convert_to_numpy(sums)[0])


@pytest.mark.backends("torch", reason="torch's kernel exists there only")
@pytest.mark.parametrize("case", NOT_COVERED, ids=list(NOT_COVERED))
def test_torch_kernel_leaves_other_shapes_to_the_general_arithmetic(case):
    assert _backends.batch_sums(*_tensors(*_case(*NOT_COVERED[case]))) is None


@pytest.mark.backends("torch", reason="torch's kernel exists there only")
@pytest.mark.parametrize("finite", [False, True], ids=["overflowed", "all finite"])
def test_torch_overflow_guard_equals_the_general_one_bit_for_bit(finite):
    """Catches torch's guard in `compensated_add` drifting from `_exact_mean._guard_overflow`:
    keeping the NaN high part of an overflowed sum, or its low part; or, where it reads
    an all-finite sum on the CPU and skips its kernels, returning anything else."""
    if finite:
        total, high, low = [1.5, 3e38], [1.0, 3e38], [0.5, -1e31]
    else:
        total, high, low = [1.5, np.inf, -np.inf, np.nan], [1.0] + [np.nan] * 3, [0.5, np.nan, 2, 3]
    total, high, low = (ops.convert_to_tensor(np.array(x, "float32")) for x in (total, high, low))
    kernel = _backends.guard_overflow(total, high, low)
    general = _exact_mean._guard_overflow(total, high, low)
    assert kernel is not None
    for k, g in zip(kernel, general, strict=True):
        np.testing.assert_array_equal(ops.convert_to_numpy(k), ops.convert_to_numpy(g))
    expected_low = [0.5, -1e31] if finite else [0.5, 0, 0, 0]
    np.testing.assert_array_equal(ops.convert_to_numpy(kernel[1]), np.float32(expected_low))


def test_other_backends_have_no_kernel():
    args = _tensors(*_case(*COVERED["dense"]))
    assert (_backends.batch_sums(*args) is None) == (keras.backend.backend() != "torch")
    pair = ops.zeros((2,))
    assert (_backends.guard_overflow(pair, pair, pair) is None) == (BACKEND != "torch")
