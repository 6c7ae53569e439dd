"""RootMeanSquaredError against an independent float64 NumPy reference."""

from __future__ import annotations

import json
import re
from pathlib import Path

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from keras import ops
from sklearn.metrics import root_mean_squared_error

import keras_extras
from tests.harness import (
    OLD_KERAS_TORCH_JIT,
    assert_config_roundtrip,
    jit,
    run_in_fresh_process,
)

RTOL = 1e-5  # float32 arithmetic against a float64 reference


def reference_rmse(y_true, y_pred, sample_weight=None):
    """RMSE in float64, written without keras: one-hot for sparse labels, then
    per-sample mean over non-batch axes, weighted mean over samples, sqrt."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    n = y_pred.shape[0]
    classes = y_pred.shape[-1] if y_pred.ndim > 1 else 1
    label_shapes = (y_pred.shape[:-1], y_pred.shape[:-1] + (1,))
    if classes > 1 and y_true.shape in label_shapes and y_true.shape != y_pred.shape:
        y_true = np.eye(classes)[y_true.reshape(y_pred.shape[:-1]).astype(int)]
    if n == 0:
        return 0.0
    y_true = y_true.reshape(y_pred.shape)
    per_sample = ((y_pred - y_true) ** 2).reshape(n, -1).mean(axis=1)
    w = (
        np.ones(n)
        if sample_weight is None
        else np.broadcast_to(np.asarray(sample_weight, np.float64).reshape(-1), (n,))
    )
    if w.sum() == 0:
        return 0.0
    return float(np.sqrt((w * per_sample).sum() / w.sum()))


def rmse_of(*batches):
    metric = keras_extras.RMSE()
    for batch in batches:
        metric.update_state(*batch)
    return float(metric.result())


def variables_of(metric):
    return [ops.convert_to_numpy(v).copy() for v in metric.variables]


# --- Data strategies -------------------------------------------------------------


@st.composite
def classification_data(draw, max_n=24):
    """Integer labels (N,) and softmax-like predictions (N, C)."""
    n = draw(st.integers(0, max_n))
    classes = draw(st.integers(2, 5))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n)
    logits = rng.normal(size=(n, classes))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return labels, probs.astype("float32")


@st.composite
def splits(draw, n):
    """Sorted cut points in [0, n], repeats allowed so empty batches occur."""
    cuts = draw(st.lists(st.integers(0, n), max_size=5))
    return [0, *sorted(cuts), n]


# --- Dense targets ---------------------------------------------------------------


def test_dense_matches_keras_builtin_and_sklearn():
    rng = np.random.default_rng(0)
    y_true = rng.normal(size=(50, 3)).astype("float32")
    y_pred = rng.normal(size=(50, 3)).astype("float32")
    ours = rmse_of((y_true, y_pred))
    builtin = keras.metrics.RootMeanSquaredError()
    builtin.update_state(y_true, y_pred)
    assert ours == pytest.approx(float(builtin.result()), rel=RTOL)
    sk = root_mean_squared_error(y_true.ravel(), y_pred.ravel())
    assert ours == pytest.approx(sk, rel=RTOL)
    assert ours == pytest.approx(reference_rmse(y_true, y_pred), rel=RTOL)


def test_dense_weighted_matches_keras_builtin():
    rng = np.random.default_rng(1)
    y_true = rng.normal(size=(40, 4)).astype("float32")
    y_pred = rng.normal(size=(40, 4)).astype("float32")
    weights = rng.uniform(0, 3, size=40).astype("float32")
    builtin = keras.metrics.RootMeanSquaredError()
    builtin.update_state(y_true, y_pred, sample_weight=weights)
    ours = rmse_of((y_true, y_pred, weights))
    assert ours == pytest.approx(float(builtin.result()), rel=RTOL)
    assert ours == pytest.approx(reference_rmse(y_true, y_pred, weights), rel=RTOL)


@pytest.mark.parametrize(
    "true_shape, pred_shape",
    [((6,), (6,)), ((6, 1), (6,)), ((6,), (6, 1)), ((6, 1), (6, 1)), ((6, 4, 3), (6, 4, 3))],
)
def test_dense_shapes(true_shape, pred_shape):
    rng = np.random.default_rng(2)
    y_true = rng.normal(size=true_shape).astype("float32")
    y_pred = rng.normal(size=pred_shape).astype("float32")
    expected = reference_rmse(y_true.reshape(pred_shape), y_pred)
    assert rmse_of((y_true, y_pred)) == pytest.approx(expected, rel=RTOL)


def test_higher_rank_is_mean_over_non_batch_axes_then_samples():
    # Samples with different numbers of elements must not be pooled elementwise.
    y_true = np.zeros((2, 2, 2), "float32")
    y_pred = np.array([[[1, 1], [1, 1]], [[0, 0], [0, 2]]], "float32")
    weights = np.array([1.0, 3.0], "float32")
    # Per-sample MSE: 1.0 and 1.0; weighted mean 1.0.
    assert rmse_of((y_true, y_pred, weights)) == pytest.approx(1.0, rel=RTOL)


# --- Sparse labels ---------------------------------------------------------------


def test_the_seed_bug_labels_of_shape_n_1():
    """Hand-written RMSEs broadcast (N, 1, C) against (N, C): about sqrt(N) too high."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 10, size=(32, 1))
    probs = rng.dirichlet(np.ones(10), size=32).astype("float32")
    one_hot = np.eye(10)[labels[:, 0]]
    expected = np.sqrt(np.mean((one_hot - probs) ** 2))
    assert rmse_of((labels, probs)) == pytest.approx(expected, rel=RTOL)
    broadcast_bug = np.sqrt(np.sum((np.eye(10)[labels] - probs) ** 2) / 32 / 10)
    assert broadcast_bug > 3 * expected  # what the test guards against


@given(classification_data())
def test_sparse_labels_equal_one_hot_dense(data):
    labels, probs = data
    classes = probs.shape[1]
    one_hot = np.eye(classes, dtype="float32")[labels]
    dense = rmse_of((one_hot, probs))
    assert rmse_of((labels, probs)) == pytest.approx(dense, rel=RTOL, abs=1e-7)
    assert rmse_of((labels[:, None], probs)) == pytest.approx(dense, rel=RTOL, abs=1e-7)
    assert rmse_of((labels.astype("float32"), probs)) == pytest.approx(dense, rel=RTOL, abs=1e-7)
    assert dense == pytest.approx(reference_rmse(labels, probs), rel=RTOL, abs=1e-7)


def test_sparse_labels_with_time_axis():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 3, size=(5, 4))
    probs = rng.dirichlet(np.ones(3), size=(5, 4)).astype("float32")
    one_hot = np.eye(3)[labels]
    expected = np.sqrt(np.mean((one_hot - probs) ** 2))
    assert rmse_of((labels, probs)) == pytest.approx(expected, rel=RTOL)


# --- Stream semantics (hypothesis) ----------------------------------------------


@given(st.data())
def test_any_split_and_order_gives_the_one_shot_result(data):
    labels, probs = data.draw(classification_data())
    n = len(labels)
    weights = np.asarray(data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), "float32")
    cuts = data.draw(splits(n))
    batches = [(labels[a:b], probs[a:b], weights[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]
    order = data.draw(st.permutations(range(len(batches))))
    expected = reference_rmse(labels, probs, weights)
    assert rmse_of(*batches) == pytest.approx(expected, rel=RTOL, abs=1e-7)
    assert rmse_of(*[batches[i] for i in order]) == pytest.approx(expected, rel=RTOL, abs=1e-7)


@given(classification_data(), st.integers(1, 3))
def test_reset_restores_the_initial_state(data, resets):
    labels, probs = data
    fresh = keras_extras.RMSE()
    initial = variables_of(fresh)
    metric = keras_extras.RMSE()
    metric.update_state(labels, probs)
    metric.update_state(np.zeros(3, int), np.full((3, probs.shape[1]), 0.5, "float32"))
    for _ in range(resets):
        metric.reset_state()
    for after, before in zip(variables_of(metric), initial):
        np.testing.assert_array_equal(after, before)
    assert float(metric.result()) == 0.0
    metric.update_state(labels, probs)
    fresh.update_state(labels, probs)
    for a, b in zip(variables_of(metric), variables_of(fresh)):
        np.testing.assert_array_equal(a, b)
    assert float(metric.result()) == float(fresh.result())


@given(classification_data(max_n=12), st.data())
def test_integer_weight_is_repetition(data, draw):
    labels, probs = data
    n = len(labels)
    weights = np.asarray(draw.draw(st.lists(st.integers(0, 4), min_size=n, max_size=n)), dtype=int)
    repeated = rmse_of((np.repeat(labels, weights), np.repeat(probs, weights, axis=0)))
    assert rmse_of((labels, probs, weights.astype("float32"))) == pytest.approx(
        repeated, rel=RTOL, abs=1e-7
    )


@given(classification_data())
def test_unit_weights_are_no_weights_and_zero_weight_drops_the_sample(data):
    labels, probs = data
    n = len(labels)
    plain = rmse_of((labels, probs))
    assert rmse_of((labels, probs, np.ones(n, "float32"))) == pytest.approx(plain, rel=1e-6)
    assert rmse_of((labels, probs, np.ones((n, 1), "float32"))) == pytest.approx(plain, rel=1e-6)
    if n:
        weights = np.ones(n, "float32")
        weights[0] = 0.0
        without_first = rmse_of((labels[1:], probs[1:]))
        assert rmse_of((labels, probs, weights)) == pytest.approx(without_first, rel=1e-6)


def test_no_samples_zero_weight_and_empty_batch():
    metric = keras_extras.RMSE()
    assert float(metric.result()) == 0.0
    metric.update_state(np.zeros((0,), int), np.zeros((0, 3), "float32"))
    assert float(metric.result()) == 0.0
    metric.update_state([0, 1], [[0.5, 0.5, 0.0], [0.0, 1.0, 0.0]], sample_weight=[0.0, 0.0])
    assert float(metric.result()) == 0.0
    assert not np.isnan(float(metric.result()))
    metric.update_state([2], [[0.0, 0.0, 0.5]])
    before = variables_of(metric)
    metric.update_state(np.zeros((0,), int), np.zeros((0, 3), "float32"))
    for a, b in zip(variables_of(metric), before):
        np.testing.assert_array_equal(a, b)
    assert float(metric.result()) == pytest.approx(np.sqrt(0.25 / 3), rel=RTOL)


# --- Stateless API ---------------------------------------------------------------


@given(st.data())
def test_stateless_api_agrees_with_stateful(data):
    labels, probs = data.draw(classification_data())
    cuts = data.draw(splits(len(labels)))
    stateful = keras_extras.RMSE()
    stateless = keras_extras.RMSE()
    state = stateless.stateless_reset_state()
    for a, b in zip(cuts[:-1], cuts[1:]):
        stateful.update_state(labels[a:b], probs[a:b])
        state = stateless.stateless_update_state(state, labels[a:b], probs[a:b])
    for a, b in zip(variables_of(stateful), state):
        np.testing.assert_array_equal(a, ops.convert_to_numpy(b))
    assert float(stateless.stateless_result(state)) == float(stateful.result())
    # The stateless calls must not have touched the metric's own variables.
    assert float(stateless.result()) == 0.0


def test_compiled_stateless_update_matches_reference():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 4, size=(16,)).astype("int32")
    probs = rng.dirichlet(np.ones(4), size=16).astype("float32")
    metric = keras_extras.RMSE()

    @jit
    def step(state, y, p):
        state = metric.stateless_update_state(state, y, p)
        return state, metric.stateless_result(state)

    state = metric.stateless_reset_state()
    state, _ = step(state, labels[:9], probs[:9])
    state, result = step(state, labels[9:], probs[9:])
    # Each half has a static shape of its own, so this also checks re-tracing.
    assert float(result) == pytest.approx(reference_rmse(labels, probs), rel=RTOL)


# --- Long streams ----------------------------------------------------------------


def seed_state(metric, total, count):
    """Puts `metric` in the state it would have after `count` samples summing to
    `total` squared error, without looping that many times."""
    if isinstance(metric, keras_extras.RootMeanSquaredError):
        pairs = {}
        for key, value in (("total", total), ("count", count)):
            high = np.float32(value)
            pairs[key] = [float(high), float(np.float32(value - np.float64(high)))]
        metric.set_state(pairs)
    else:  # keras.metrics.RootMeanSquaredError, a Mean of float32 total and count
        metric.total.assign(np.float32(total))
        metric.count.assign(np.float32(count))


def stream(metric, start_count, batch, steps):
    """`steps` updates of `batch` samples after a seeded state of `start_count`
    samples with mean squared error 0.3; returns (result, float64 reference)."""
    y_true = np.zeros((batch, 1), "float32")
    y_pred = np.full((batch, 1), np.sqrt(0.7), "float32")  # squared error 0.7 each
    sq = float(np.float32(np.sqrt(0.7))) ** 2
    seed_state(metric, 0.3 * start_count, start_count)
    for _ in range(steps):
        metric.update_state(y_true, y_pred)
    n = start_count + batch * steps
    return float(metric.result()), np.sqrt((0.3 * start_count + sq * batch * steps) / n)


@pytest.mark.parametrize(
    "start_count, batch, steps",
    [(10**8 - 7 * 1000, 7, 1000), (2**24, 1, 2000)],
    ids=["1e8-samples-in-batches-of-7", "single-samples-past-2**24"],
)
def test_exact_over_long_streams(start_count, batch, steps):
    ours, expected = stream(keras_extras.RMSE(), start_count, batch, steps)
    assert abs(ours - expected) / expected < 1e-6
    # The same check fails for Keras's float32 total/count, so it has power.
    builtin, expected = stream(keras.metrics.RootMeanSquaredError(), start_count, batch, steps)
    assert abs(builtin - expected) / expected > 5e-6


def test_exact_over_long_streams_when_compiled():
    """XLA and tf.function must not simplify the compensated sum away."""
    metric = keras_extras.RMSE()
    seed_state(metric, 0.3 * 2**24, 2**24)
    y_true = np.zeros((1, 1), "float32")
    y_pred = np.full((1, 1), np.sqrt(0.7), "float32")
    sq = float(np.float32(np.sqrt(0.7))) ** 2
    steps = 300

    step = jit(lambda state: metric.stateless_update_state(state, y_true, y_pred))
    state = [v.value for v in metric.variables]
    for _ in range(steps):
        state = step(state)
    result = float(metric.stateless_result(state))
    expected = np.sqrt((0.3 * 2**24 + sq * steps) / (2**24 + steps))
    assert abs(result - expected) / expected < 1e-6


# --- Inside fit and evaluate -----------------------------------------------------


@pytest.mark.parametrize("jit_compile", [False, pytest.param(True, marks=OLD_KERAS_TORCH_JIT)])
def test_in_fit_and_evaluate_with_sparse_labels(jit_compile):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(60, 5)).astype("float32")
    y = rng.integers(0, 3, size=(60, 1))
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(
        optimizer="sgd",
        loss="sparse_categorical_crossentropy",
        metrics=[keras_extras.RMSE()],
        jit_compile=jit_compile,
    )
    # Equal batches: each new batch shape would be another torch.compile (slow).
    model.fit(x, y, batch_size=20, epochs=1, verbose=0)
    logs = model.evaluate(x, y, batch_size=20, verbose=0, return_dict=True)
    probs = model.predict(x, verbose=0)
    assert logs["rmse"] == pytest.approx(reference_rmse(y, probs), rel=1e-5)


# --- Bad input -------------------------------------------------------------------


@pytest.mark.parametrize(
    "true_shape, pred_shape",
    [((4, 3), (4, 4)), ((5, 3), (4, 3)), ((4, 2, 3), (4, 3)), ((4,), (5, 1))],
)
def test_incompatible_shapes_name_both(true_shape, pred_shape):
    metric = keras_extras.RMSE()
    with pytest.raises(ValueError) as info:
        metric.update_state(np.zeros(true_shape, "float32"), np.zeros(pred_shape, "float32"))
    assert str(true_shape) in str(info.value) and str(pred_shape) in str(info.value)


@pytest.mark.parametrize("label", [3, -1, 7])
def test_label_out_of_range_raises_eagerly(label):
    metric = keras_extras.RMSE()
    with pytest.raises(ValueError, match=rf"\[0, 3\).*is {label}\b"):
        metric.update_state(np.array([0, label]), np.full((2, 3), 1 / 3, "float32"))
    assert float(metric.result()) == 0.0  # nothing was counted


def test_fractional_float_label_raises_eagerly():
    metric = keras_extras.RMSE()
    with pytest.raises(ValueError, match=r"whole numbers.*is 1\.5"):
        metric.update_state(np.array([0.0, 1.5]), np.full((2, 3), 1 / 3, "float32"))


@pytest.mark.parametrize("weight", [None, [1.0, 0.0]], ids=["unweighted", "zero weight"])
def test_an_invalid_label_raises_whatever_its_weight_and_a_nan_prediction_does_not(weight):
    """An eager call looks for invalid labels when the batch's total is not finite.
    Catches a label check that a zero weight hides, and one that blames valid labels
    for a NaN prediction, which gives NaN as the built-in's does instead."""
    probs = np.full((2, 3), 1 / 3, "float32")
    metric = keras_extras.RMSE()
    with pytest.raises(ValueError, match=r"y_true\[1\] is 5\.$"):
        metric.update_state(np.array([0, 5], "int32"), probs, sample_weight=weight)
    nan_probs = probs.copy()
    nan_probs[1, 2] = np.nan
    metric.update_state(np.array([0, 2], "int32"), nan_probs, sample_weight=weight)
    builtin = keras.metrics.RootMeanSquaredError()
    builtin.update_state(np.eye(3, dtype="float32")[[0, 2]], nan_probs, sample_weight=weight)
    assert np.isnan(float(builtin.result())) and np.isnan(float(metric.result()))


@pytest.mark.parametrize(
    "dtype, label, shown",
    [
        ("int32", 3, "3"),
        ("int32", -1, "-1"),
        ("uint8", 255, "255"),
        ("int64", 2**32 + 1, str(2**32 + 1)),  # 1 if narrowed to int32
        ("float32", 3.0, "3.0"),
        ("float32", 1.5, "1.5"),
        ("float32", np.nan, "nan"),
    ],
)
def test_invalid_label_in_a_second_eager_call_raises_and_counts_nothing(dtype, label, shown):
    """The bad batch comes through the update that the first call compiled for its
    signature (jax.jit, tf.function; torch's own operations), not a fresh metric's first
    call as in the other invalid-label tests. Catches a compiled update that drops,
    clips or counts a bad label."""
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], "float32")
    metric = keras_extras.RMSE()
    metric.update_state(np.array([0, 2], dtype), probs)
    first = metric.get_state()
    with pytest.raises(ValueError, match=rf"\[0, 3\).*y_true\[1\] is {re.escape(shown)}\.$"):
        metric.update_state(np.array([0, label], dtype), probs)
    assert metric.get_state() == first  # nothing of the refused batch was counted
    metric.update_state(np.array([1, 0], dtype), probs)  # compiled, and still counting
    expected = reference_rmse(np.array([0, 2, 1, 0]), np.concatenate([probs, probs]))
    assert float(metric.result()) == pytest.approx(expected, rel=RTOL)


def test_invalid_label_in_compiled_step_gives_nan():
    if keras.backend.backend() == "torch":
        import torch

        # Past torch's recompile limit for `update_state` (reached by the tests that
        # ran before), dynamo runs it eagerly, where an invalid label raises instead.
        torch.compiler.reset()
    metric = keras_extras.RMSE()
    probs = np.full((2, 3), 1 / 3, "float32")

    @jit
    def step(state, y):
        return metric.stateless_result(metric.stateless_update_state(state, y, probs))

    good = step(metric.stateless_reset_state(), np.array([0.0, 1.0], "float32"))
    assert float(good) == pytest.approx(reference_rmse([0, 1], probs), rel=RTOL)
    for label in (3.0, 1.5, -1.0, np.nan):
        bad = np.array([0.0, label], "float32")
        assert np.isnan(float(step(metric.stateless_reset_state(), bad))), label


@pytest.mark.parametrize("dtype", ["int32", "int64", "uint8"])
def test_invalid_integer_label_in_compiled_step_gives_nan(dtype):
    # Integer labels take a shorter route than float ones (no whole-number check).
    if keras.backend.backend() == "torch":
        import torch

        torch.compiler.reset()  # as above
    metric = keras_extras.RMSE()
    probs = np.full((2, 3), 1 / 3, "float32")

    @jit
    def step(state, y):
        return metric.stateless_result(metric.stateless_update_state(state, y, probs))

    good = step(metric.stateless_reset_state(), np.array([0, 2], dtype))
    assert float(good) == pytest.approx(reference_rmse([0, 2], probs), rel=RTOL)
    for label in (3, 255) if dtype == "uint8" else (3, -1):
        bad = np.array([0, label], dtype)
        assert np.isnan(float(step(metric.stateless_reset_state(), bad))), label


def test_a_large_integer_label_never_wraps_into_a_valid_one():
    # 2**32 + 1 is 1 in int32: JAX without 64-bit mode would narrow int64 to that.
    metric = keras_extras.RMSE()
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        metric.update_state(np.array([2**32 + 1, 1], "int64"), np.eye(2, dtype="float32"))
    assert float(metric.result()) == 0.0


def test_sample_weight_of_wrong_shape_names_it():
    metric = keras_extras.RMSE()
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(4, 3\)"):
        metric.update_state(
            np.zeros(4, int), np.zeros((4, 3), "float32"), sample_weight=np.ones((4, 5))
        )


def test_scalar_prediction_takes_only_a_scalar_target():
    with pytest.raises(ValueError, match=r"\(2,\).*\(\)"):
        keras_extras.RMSE().update_state([1.0, 2.0], 2.0)


# --- Serialisation ---------------------------------------------------------------


def test_registered_name_and_config():
    cls = keras.saving.get_registered_object("keras_extras>RootMeanSquaredError")
    assert cls is keras_extras.RootMeanSquaredError
    metric = keras_extras.RMSE(name="my_rmse", dtype="float32")
    assert metric.name == "my_rmse"
    clone = assert_config_roundtrip(metric)
    assert clone.name == "my_rmse"


def test_keras_file_loads_in_a_fresh_process(tmp_path):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(20, 4)).astype("float32")
    y = rng.integers(0, 3, size=(20,))
    np.savez(tmp_path / "data.npz", x=x, y=y)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(
        optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=[keras_extras.RMSE()]
    )
    model.fit(x, y, epochs=1, verbose=0)
    expected = model.evaluate(x, y, verbose=0, return_dict=True)["rmse"]
    model.save(tmp_path / "model.keras")
    out = run_in_fresh_process(
        f"""
        import numpy as np, keras, keras_extras
        model = keras.saving.load_model({str(tmp_path / "model.keras")!r}, safe_mode=True)
        data = np.load({str(tmp_path / "data.npz")!r})
        logs = model.evaluate(data["x"], data["y"], verbose=0, return_dict=True)
        metric = [m for m in model.metrics[1].metrics if m.name == "rmse"][0]
        assert type(metric) is keras_extras.RootMeanSquaredError, type(metric)
        print(logs["rmse"])
        """
    )
    assert float(out.strip().splitlines()[-1]) == pytest.approx(expected, rel=1e-6)


# --- Mergeable state ---------------------------------------------------------------


@given(st.data())
def test_merged_shards_equal_the_one_shot_result(data):
    labels, probs = data.draw(classification_data(max_n=30))
    cuts = data.draw(splits(len(labels)))
    shards = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        metric = keras_extras.RMSE()
        metric.update_state(labels[a:b], probs[a:b])
        # Through plain numbers, as between processes.
        rebuilt = keras_extras.RMSE()
        rebuilt.set_state(json.loads(json.dumps(metric.get_state())))
        shards.append(rebuilt)
    order = data.draw(st.permutations(range(len(shards))))
    merged = keras_extras.RMSE()
    merged.merge_state([shards[i] for i in order])
    expected = reference_rmse(labels, probs)
    assert float(merged.result()) == pytest.approx(expected, rel=RTOL, abs=1e-7)


def test_merge_keeps_long_stream_exactness():
    shards = [keras_extras.RMSE() for _ in range(3)]
    for shard in shards:
        seed_state(shard, 0.3 * 2**24, 2**24)
        shard.update_state(np.zeros((1, 1), "float32"), np.ones((1, 1), "float32"))
    merged = keras_extras.RMSE()
    merged.merge_state(shards)
    n = 3 * (2**24 + 1)
    expected = np.sqrt(3 * (0.3 * 2**24 + 1.0) / n)
    assert abs(float(merged.result()) - expected) / expected < 1e-6


def test_states_from_separate_processes_merge(tmp_path):
    rng = np.random.default_rng(8)
    labels = rng.integers(0, 4, size=50)
    probs = rng.dirichlet(np.ones(4), size=50).astype("float32")
    np.savez(tmp_path / "data.npz", labels=labels, probs=probs)
    out = run_in_fresh_process(
        f"""
        import json, numpy as np, keras_extras
        data = np.load({str(tmp_path / "data.npz")!r})
        states = []
        for a, b in [(0, 7), (7, 7), (7, 50)]:
            m = keras_extras.RMSE()
            m.update_state(data["labels"][a:b], data["probs"][a:b])
            states.append(m.get_state())
        print(json.dumps(states))
        """
    )
    shards = []
    for state in json.loads(out.strip().splitlines()[-1]):
        shard = keras_extras.RMSE()
        shard.set_state(state)
        shards.append(shard)
    merged = keras_extras.RMSE()
    merged.merge_state(reversed(shards))
    assert float(merged.result()) == pytest.approx(reference_rmse(labels, probs), rel=RTOL)


def test_merge_and_set_state_reject_bad_input():
    with pytest.raises(TypeError, match="MeanSquaredError"):
        keras_extras.RMSE().merge_state([keras.metrics.MeanSquaredError()])
    # The message shows the state it was given: a key of its own, since the expected
    # form's own words ("high") would match a key such as "hi".
    with pytest.raises(ValueError, match=r"got \{'sum_of_squares': \[1\.0, 2\.0\]\}"):
        keras_extras.RMSE().set_state({"sum_of_squares": [1.0, 2.0]})


def test_overflow_gives_inf_like_the_builtin():
    y_pred = np.array([[3e38], [3e38]], "float32")
    y_true = np.zeros((2, 1), "float32")
    builtin = keras.metrics.RootMeanSquaredError()
    builtin.update_state(y_true, y_pred)
    assert np.isinf(float(builtin.result()))
    assert np.isinf(rmse_of((y_true, y_pred)))


# --- The low parts of the state (issue 12, point 4) ---------------------------------


def dyadic_stream(seed, batches=40, n=256):
    """Batches whose float32 batch sums are exact in any summation order.

    Squared errors are 0, 1 or 4 and weights are multiples of 2**-12 up to 2, so each
    batch sum fits float32's 24 bits; the running totals soon do not, so the state's
    low parts are non-zero (for the seeds the tests use; they assert it). Returns the
    batches and the exact float64 totals (sum of weighted squared errors, sum of weights).
    """
    rng = np.random.default_rng(seed)
    out, total, weight_sum = [], 0.0, 0.0
    for _ in range(batches):
        y_true = rng.integers(0, 3, size=(n, 1)).astype("float32")
        w = (rng.integers(1, 2**13, size=n) / 2**12).astype("float32")
        out.append((y_true, np.zeros((n, 1), "float32"), w))
        total += float(np.sum(w.astype(np.float64) * y_true[:, 0].astype(np.float64) ** 2))
        weight_sum += float(np.sum(w, dtype=np.float64))
    return out, np.array([total, weight_sum])


def state_sums(metric):
    """The exact values the state holds: hi + lo of each entry, in float64."""
    state = metric.get_state()
    return np.array([sum(state["total"]), sum(state["count"])], np.float64)


def low_parts(metric):
    return [metric.get_state()[key][1] for key in ("total", "count")]


def test_get_state_holds_the_exact_sums_in_its_low_parts():
    """Catches a state, or a `get_state`, that loses the low parts: the float32 high
    parts alone are off by far more than the 1e-15 allowed here."""
    batches, exact = dyadic_stream(3)
    metric = rmse_of_metric(batches)
    assert all(low_parts(metric)), metric.get_state()  # the test has power
    np.testing.assert_allclose(state_sums(metric), exact, rtol=1e-15)
    hi_only = np.array([metric.get_state()[key][0] for key in ("total", "count")], np.float64)
    assert np.all(np.abs(hi_only - exact) / exact > 1e-12)


def test_merge_state_adds_the_other_metrics_low_parts():
    """Catches a merge that drops the other metric's `lo`, or this one's."""
    batches, exact = dyadic_stream(9, batches=60)
    shards = [rmse_of_metric(batches[a : a + 20]) for a in (0, 20, 40)]
    for shard in shards:
        assert all(low_parts(shard)), shard.get_state()
    merged = shards[0]
    merged.merge_state(shards[1:])
    np.testing.assert_allclose(state_sums(merged), exact, rtol=1e-15)


def test_set_state_restores_both_parts_exactly():
    """Catches a `set_state` that drops or rounds `lo`: the state comes back bit for bit
    through JSON, and the restored metric continues exactly as the original."""
    batches, exact = dyadic_stream(10, batches=60)
    original = rmse_of_metric(batches[:40])
    state = json.loads(json.dumps(original.get_state()))
    restored = keras_extras.RMSE()
    restored.set_state(state)
    assert restored.get_state() == original.get_state()
    for batch in batches[40:]:
        restored.update_state(*batch)
    np.testing.assert_allclose(state_sums(restored), exact, rtol=1e-15)


def rmse_of_metric(batches):
    metric = keras_extras.RMSE()
    for batch in batches:
        metric.update_state(*batch)
    return metric


# --- Scalar weights and other dtypes, by value (issue 12, point 8) ------------------


def test_scalar_sample_weight_weights_the_batch_mean():
    """A scalar weight counts the batch's mean squared error as one sample of that
    weight, as Keras's `Mean` does. Catches broadcasting it to every sample (which
    would weight the 5-sample batch 5/3 times more)."""
    rng = np.random.default_rng(11)
    a = (rng.normal(size=(3, 2)), rng.normal(size=(3, 2)))
    b = (rng.normal(size=(5, 2)), 3 * rng.normal(size=(5, 2)))
    mse_a, mse_b = (np.mean((t - p) ** 2) for t, p in (a, b))
    expected = np.sqrt((2.0 * mse_a + 0.5 * mse_b) / 2.5)
    got = rmse_of((*a, 2.0), (*b, np.float32(0.5)))
    assert got == pytest.approx(expected, rel=RTOL)
    per_sample = np.sqrt((2.0 * 3 * mse_a + 0.5 * 5 * mse_b) / (2.0 * 3 + 0.5 * 5))
    assert abs(expected - per_sample) / expected > 1e-2  # the wrong reading differs


PRECISION = {"float16": 2e-3, "bfloat16": 2e-2, "float32": RTOL, "float64": 1e-13}


@pytest.mark.parametrize(
    "dtype, compute_dtype",
    [
        ("float64", "float64"),
        ("float16", "float16"),
        ("bfloat16", "bfloat16"),
        (keras.DTypePolicy("mixed_float16"), "float16"),
    ],
    ids=["float64", "float16", "bfloat16", "mixed_float16"],
)
def test_dtype_is_the_dtype_of_the_computation(dtype, compute_dtype):
    """`dtype` sets the state's dtype and precision; the result has the built-in's dtype.
    Catches a computation that casts to float32 anywhere (float64 sums would then be off
    by about 1e-8, far above 1e-13) or ignores the argument (the dtype checks). JAX
    without x64 stores float64 as float32, and torch returns a float32 result, as for
    the built-in."""
    rng = np.random.default_rng(12)
    y_true, y_pred = rng.normal(size=(40, 3)), rng.normal(size=(40, 3))
    weight = rng.uniform(0, 2, size=40)
    metric = keras_extras.RMSE(dtype=dtype)
    builtin = keras.metrics.RootMeanSquaredError(dtype=dtype)
    for m in (metric, builtin):
        m.update_state(y_true[:25], y_pred[:25], sample_weight=weight[:25])
        m.update_state(y_true[25:], y_pred[25:], sample_weight=weight[25:])
    assert all(keras.backend.standardize_dtype(v.dtype) == compute_dtype for v in metric.variables)
    stored = keras.backend.standardize_dtype(ops.convert_to_numpy(metric.variables[0]).dtype)
    per_sample = ((y_true - y_pred) ** 2).mean(axis=1)
    exact = np.array([np.sum(weight * per_sample), np.sum(weight)])
    np.testing.assert_allclose(state_sums(metric), exact, rtol=PRECISION[stored])
    result = metric.result()
    result_dtype = keras.backend.standardize_dtype(result.dtype)
    assert result_dtype == keras.backend.standardize_dtype(builtin.result().dtype)
    expected = reference_rmse(y_true, y_pred, weight)
    assert float(result) == pytest.approx(expected, rel=PRECISION[result_dtype])


# --- Files and states written by keras_extras 0.1.0.dev0 (tests/data/) --------------

DATA = Path(__file__).parent / "data"
RECORD = json.loads((DATA / "rmse_0.1.0.dev0_state.json").read_text())


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:3] if part.isdigit())


# Keras reads files written by its own or an older version only (a newer Dense config has
# keys, such as `quantization_config`, that an older Dense rejects).
_WRITTEN_BY = "3.15.1"


@pytest.mark.skipif(
    _version(keras.__version__) < _version(_WRITTEN_BY),
    reason=f"the fixture was written by Keras {_WRITTEN_BY}, newer than this Keras",
)
def test_keras_file_of_0_1_0_dev0_loads_and_evaluates_the_same():
    """A model compiled with RMSE, saved by 0.1.0.dev0 (tests/data/make_rmse_0.1.0.dev0.py).
    A `.keras` file holds the metric's config, not its state, so a new state layout
    must still deserialise that config and compute the same value."""
    data = np.load(DATA / "rmse_0.1.0.dev0_data.npz")
    model = keras.saving.load_model(DATA / "rmse_0.1.0.dev0_model.keras", safe_mode=True)
    logs = model.evaluate(data["x"], data["y"], verbose=0, return_dict=True)
    assert logs["rmse_v0"] == pytest.approx(RECORD["evaluate"]["rmse_v0"], rel=1e-5)
    probs = model.predict(data["x"], verbose=0)
    assert logs["rmse_v0"] == pytest.approx(reference_rmse(data["y"], probs), rel=1e-5)


def test_get_state_of_0_1_0_dev0_loads_exactly():
    """`{"hi": [total, count], "lo": [total, count]}` from 0.1.0.dev0, with non-zero
    low parts: set_state reads it into the same exact sums and result."""
    metric = keras_extras.RMSE()
    metric.set_state(RECORD["get_state"])
    total, count = 0.3 * 2**24 + 0.75, 2**24 + 3
    np.testing.assert_allclose(state_sums(metric), [total, count], rtol=1e-14)
    # The float32 result of the exact sums: within two float32 roundings of the float64
    # value. (RECORD["result"], JAX's, is one float32 step below torch's, which is
    # the nearer one.)
    assert float(metric.result()) == pytest.approx(np.sqrt(total / count), rel=2**-22)
    assert float(metric.result()) == pytest.approx(RECORD["result"], rel=2**-22)
    (high, count_high), (low, count_low) = RECORD["get_state"].values()
    assert metric.get_state() == {"total": [high, low], "count": [count_high, count_low]}


@pytest.mark.parametrize(
    "state",
    [{"hi": [1.0], "lo": [2.0]}, {"total": [1.0, 0.0]}, {"total": [1.0], "count": [1.0, 0.0]}],
)
def test_malformed_state_is_refused_with_the_expected_form(state):
    with pytest.raises(ValueError, match=r'state must be \{"total": \[high, low\]'):
        keras_extras.RMSE().set_state(state)
