"""LossHistory, on real fits of scikit-learn's digits (TrainingPlotter: test_plotter.py).

Batch values are checked against each batch's own loss and metrics, computed
here in NumPy float64 from the model's weights: with a learning rate of 0 the
weights never change, so every batch's true values are known independently.
"""

from __future__ import annotations

import copy
import csv
import gc
import json
import math
import os
import pickle
import threading
import types
import weakref

import keras
import numpy as np
import pytest
from keras import ops
from sklearn.datasets import load_digits

import keras_extras
from tests.harness import assert_config_roundtrip, png_files

TRAIN = 1500  # 23 batches of 64 and a short last one of 28
BATCH = 64


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    return (data.data / 16.0).astype("float32"), data.target.astype("int32")


class MaxProbability(keras.metrics.Metric):
    """A running maximum: not a mean, so no batch's own value can be recovered."""

    def __init__(self, name="max_probability", **kwargs):
        super().__init__(name=name, **kwargs)
        self.value = self.add_variable(shape=(), initializer="zeros", name="value")

    def update_state(self, y_true, y_pred, sample_weight=None):
        self.value.assign(ops.maximum(self.value.value, ops.max(y_pred)))

    def result(self):
        # A new tensor: on torch the variable's own tensor would be read by
        # Keras's async callback thread after evaluate() has reset it.
        return ops.multiply(self.value, 1.0)


def make_model(learning_rate=0.0, metrics=None, steps_per_execution=1):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"] if metrics is None else metrics,
        steps_per_execution=steps_per_execution,
    )
    return model


def reference(model, x, y, batch_size):
    """Each batch's own loss, accuracy, RMSE and max probability, in float64."""
    w1, b1, w2, b2 = (np.asarray(w, np.float64) for w in model.get_weights())
    rows = []
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size].astype(np.float64), y[start : start + batch_size]
        logits = np.maximum(xb @ w1 + b1, 0.0) @ w2 + b2
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        onehot = np.eye(10)[yb]
        rows.append(
            {
                "size": len(yb),
                "loss": -np.log(p[np.arange(len(yb)), yb]).mean(),
                "accuracy": (p.argmax(axis=1) == yb).mean(),
                "rmse": np.sqrt(((p - onehot) ** 2).mean()),
                "max_probability": p.max(),
            }
        )
    return {k: np.array([r[k] for r in rows]) for k in rows[0]}


def nan_equal(a, b):
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


# LossHistory on a fit with a learning rate of 0.


@pytest.fixture(scope="module")
def frozen_fit(digits):
    x, y = digits
    model = make_model(0.0, metrics=["accuracy", keras_extras.RMSE(), MaxProbability()])
    history = keras_extras.LossHistory()
    model.fit(
        x[:TRAIN],
        y[:TRAIN],
        batch_size=BATCH,
        epochs=2,
        shuffle=False,
        verbose=0,
        validation_data=(x[TRAIN:], y[TRAIN:]),
        callbacks=[history],
    )
    return (
        history,
        reference(model, x[:TRAIN], y[:TRAIN], BATCH),
        reference(model, x[TRAIN:], y[TRAIN:], len(x)),
    )


def test_full_batches_equal_their_own_loss_and_metrics(frozen_fit):
    history, ref, _ = frozen_fit
    full = ref["size"] == BATCH
    assert full.sum() == 23
    for epoch in (0, 1):
        rows = np.array(history.batches["epoch"]) == epoch
        for name in ("loss", "rmse"):
            got = np.array(history.batches[name])[rows]
            np.testing.assert_allclose(got[full], ref[name][full], rtol=1e-4)
        # Accuracy can be 0 in a batch: an absolute tolerance.
        got = np.array(history.batches["accuracy"])[rows]
        np.testing.assert_allclose(got[full], ref["accuracy"][full], atol=1e-5)
    # The running means alone would differ: the recovery is not a no-op.
    running = np.array(history.running["loss"][:24])
    assert np.abs(running[full] - ref["loss"][full]).max() > 1e-3


def test_short_last_batch_is_recorded_as_documented(frozen_fit):
    history, ref, _ = frozen_fit
    steps, b, own = 24, ref["size"][-1], ref["loss"][-1]
    assert b == TRAIN - 23 * BATCH
    for epoch in (0, 1):
        before = history.running["loss"][epoch * steps + steps - 2]
        expected = before + (own - before) * steps * b / ((steps - 1) * BATCH + b)
        recorded = history.batches["loss"][epoch * steps + steps - 1]
        np.testing.assert_allclose(recorded, expected, rtol=1e-4)


def test_running_means_are_kept_under_their_own_name(frozen_fit):
    history, ref, _ = frozen_fit
    weighted = np.cumsum(ref["loss"] * ref["size"]) / np.cumsum(ref["size"])
    np.testing.assert_allclose(history.running["loss"][:24], weighted, rtol=1e-5)
    np.testing.assert_allclose(history.running["loss"][24:], weighted, rtol=1e-5)
    np.testing.assert_allclose(
        history.running["max_probability"][:24],
        np.maximum.accumulate(ref["max_probability"]),
        rtol=1e-5,
    )


def two_output_model(**compile_kwargs):
    """Output "a", 10 classes, and output "b", a regression, frozen (learning rate 0)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((64,))
    model = keras.Model(
        inputs,
        {
            "a": keras.layers.Dense(10, activation="softmax", name="a")(inputs),
            "b": keras.layers.Dense(1, name="b")(inputs),
        },
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.0),
        loss={"a": "sparse_categorical_crossentropy", "b": "mse"},
        **compile_kwargs,
    )
    return model


def two_output_reference(model, x, target):
    """The class probabilities of "a" and the errors of "b", in float64."""
    (wa, ba), (wb, bb) = (
        [np.asarray(w, np.float64) for w in model.get_layer(n).get_weights()] for n in "ab"
    )
    logits = x.astype(np.float64) @ wa + ba
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return p, (x.astype(np.float64) @ wb + bb)[:, 0] - target


def test_every_metric_of_a_two_output_model_is_recovered(digits):
    x, y = digits
    x, y = x[:1000], y[:1000]  # 10 full batches of 100
    model = two_output_model(
        metrics={"a": ["accuracy"], "b": [keras.metrics.RootMeanSquaredError(), "mae"]},
    )
    target = (y / 9.0).astype("float32")
    history = keras_extras.LossHistory()
    model.fit(
        x,
        {"a": y, "b": target},
        batch_size=100,
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[history],
    )
    p, error = two_output_reference(model, x, target)
    per_sample = {
        "a_loss": -np.log(p[np.arange(len(y)), y]),
        "a_accuracy": (p.argmax(axis=1) == y).astype(np.float64),
        "b_loss": error**2,
        "b_mae": np.abs(error),
    }
    expected = {k: v.reshape(10, 100).mean(axis=1) for k, v in per_sample.items()}
    expected["loss"] = expected["a_loss"] + expected["b_loss"]
    expected["b_root_mean_squared_error"] = np.sqrt(expected["b_loss"])
    assert set(history.batches) - {"epoch", "step"} == set(expected)
    for name, values in expected.items():
        np.testing.assert_allclose(
            history.batches[name], values, rtol=1e-4, atol=1e-6, err_msg=name
        )


def test_weighted_metrics_columns_equal_history_and_numpy(digits):
    """Every column of a model with `weighted_metrics` is found and recovered.

    The names Keras gives weighted metrics: an output-name prefix, a
    `weighted_` prefix when the name clashes with an unweighted metric, and a
    number on repeated names. The weights repeat every batch, so each batch's
    weighted value is recovered exactly; it is checked against NumPy float64.
    Catches a name mapping that misses a name (an all-NaN column) or maps it
    to the wrong metric (other values), and epoch rows that differ from History.
    """
    x, y = digits
    x, y = x[:1000], y[:1000]  # 10 full batches of 100
    model = two_output_model(
        metrics={"a": ["accuracy", "accuracy"], "b": ["mae"]},
        weighted_metrics={"a": ["accuracy", "accuracy"], "b": ["mae", "mse"]},
    )
    target = (y / 9.0).astype("float32")
    weights = np.tile(np.linspace(0.0, 2.0, 100), 10).astype("float32")
    history = keras_extras.LossHistory()
    logs = model.fit(
        x,
        {"a": y, "b": target},
        sample_weight=weights,
        batch_size=100,
        epochs=2,
        shuffle=False,
        verbose=0,
        validation_data=(x[:200], {"a": y[:200], "b": target[:200]}, weights[:200]),
        callbacks=[history],
    ).history

    p, error = two_output_reference(model, x, target)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    w = weights.astype(np.float64).reshape(10, 100)

    def mean(values):
        return values.reshape(10, 100).mean(axis=1)

    def weighted(values):
        return (w * values.reshape(10, 100)).sum(axis=1) / w.sum(axis=1)

    expected = {
        # Keras's losses divide by the batch size, not by the weights' sum.
        "a_loss": mean(weights * -np.log(p[np.arange(len(y)), y])),
        "b_loss": mean(weights * error**2),
        "a_accuracy": mean(correct),
        "a_accuracy_1": mean(correct),
        "b_mae": mean(np.abs(error)),
        "a_weighted_accuracy": weighted(correct),
        "a_weighted_accuracy_1": weighted(correct),
        "b_weighted_mae": weighted(np.abs(error)),
        "b_mse": weighted(error**2),
    }
    expected["loss"] = expected["a_loss"] + expected["b_loss"]
    names = set(expected)
    assert set(logs) == names | {f"val_{n}" for n in names}
    assert set(history.batches) - {"epoch", "step"} == names
    for name, values in expected.items():
        column = np.array(history.batches[name][:10])
        assert not np.isnan(column).any(), name
        np.testing.assert_allclose(column, values, rtol=1e-4, atol=1e-6, err_msg=name)
    assert set(history.epochs) - {"epoch", "step"} == set(logs)
    for name, values in logs.items():
        assert history.epochs[name] == values, name


def _naming_model(outputs):
    """A model with one regression output, or outputs "a" (3 classes) and "b"."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    if outputs == "one":
        return keras.Model(inputs, keras.layers.Dense(2)(inputs)), "mse"
    a = keras.layers.Dense(3, activation="softmax", name="a")(inputs)
    b = keras.layers.Dense(1, name="b")(inputs)
    losses = ["sparse_categorical_crossentropy", "mse"]
    if outputs == "list":
        return keras.Model(inputs, [a, b]), losses
    return keras.Model(inputs, {"a": a, "b": b}), dict(zip("ab", losses, strict=True))


NAMING_CASES = {
    "one output: repeated, custom-named and weighted metrics": (
        "one",
        {
            "metrics": [
                "mae",
                "mae",
                keras.metrics.MeanSquaredError(name="spread"),
                "root_mean_squared_error",
            ],
            "weighted_metrics": ["mae", "mae", "mse", keras_extras.RMSE(name="mae")],
        },
    ),
    "one output: weighted metrics only": ("one", {"weighted_metrics": ["mae", "mse"]}),
    "two outputs in a dict: dicts of metrics": (
        "dict",
        {
            "metrics": {"a": ["accuracy", "accuracy"], "b": ["mae"]},
            "weighted_metrics": {"a": ["accuracy"], "b": ["mae", "mse", "mae"]},
        },
    ),
    "two outputs in a list: lists of metrics": (
        "list",
        {
            "metrics": [["accuracy"], ["mae", keras_extras.RMSE(name="b_error")]],
            "weighted_metrics": [["accuracy"], ["mae"]],
        },
    ),
}


@pytest.mark.parametrize("case", list(NAMING_CASES))
def test_log_names_are_the_names_keras_logs(case):
    """Each compiled metric is found under the name Keras logs it with.

    LossHistory and TrainingPlotter map each log name to its metric object by
    copying how Keras's `CompileMetrics` names its results. Here the copy meets
    Keras's own logs: the names are exactly the keys of `fit`'s History (besides
    `val_*`) and of `evaluate`'s logs, and each name's metric reports the value
    Keras logs under it. Catches a Keras release that names metrics otherwise
    (a column would be mislabelled, or lost, without an error) and a copy that
    gets a clash rule wrong (the `weighted_` prefix, the numeric suffix, their
    order) or maps a name to another metric (weights far from uniform make each
    weighted value differ from the unweighted one).
    """
    outputs, metrics = NAMING_CASES[case]
    model, loss = _naming_model(outputs)
    model.compile(optimizer="sgd", loss=loss, **copy.deepcopy(metrics))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    weights = rng.uniform(0.0, 3.0, size=64).astype("float32")
    if outputs == "one":
        y = rng.normal(size=(64, 2)).astype("float32")
    else:
        y = [rng.integers(0, 3, size=64), rng.normal(size=(64, 1)).astype("float32")]
        y = dict(zip("ab", y, strict=True)) if outputs == "dict" else y
    history = model.fit(
        x, y, sample_weight=weights, batch_size=16, validation_data=(x, y, weights), verbose=0
    )
    names = keras_extras.callbacks._log_metrics(model)
    assert set(history.history) == set(names) | {f"val_{name}" for name in names}
    logs = model.evaluate(x, y, sample_weight=weights, verbose=0, return_dict=True)
    assert set(logs) == set(names)
    for name, metric in names.items():
        np.testing.assert_allclose(float(metric.result()), logs[name], rtol=1e-6, err_msg=name)
    # The weights make a weighted value differ from its unweighted twin's.
    for name in logs:
        twin = name.replace("weighted_", "")
        if twin != name and twin in logs:
            assert logs[twin] != logs[name], name


def test_points_per_epoch_and_global_steps(frozen_fit):
    history, _, _ = frozen_fit
    for table in (history.batches, history.running):
        assert table["epoch"] == [0] * 24 + [1] * 24
        assert table["step"] == list(range(1, 49))
        assert {len(column) for column in table.values()} == {48}
    assert history.epochs["epoch"] == [0, 1]
    assert history.epochs["step"] == [24, 48]


def test_epoch_values_include_validation(frozen_fit):
    history, ref, val = frozen_fit
    assert set(history.epochs) == {
        "epoch",
        "step",
        "loss",
        "accuracy",
        "rmse",
        "max_probability",
        "val_loss",
        "val_accuracy",
        "val_rmse",
        "val_max_probability",
    }
    weighted = (ref["loss"] * ref["size"]).sum() / ref["size"].sum()
    np.testing.assert_allclose(history.epochs["loss"], [weighted] * 2, rtol=1e-5)
    np.testing.assert_allclose(history.epochs["val_loss"], [val["loss"][0]] * 2, rtol=1e-5)
    np.testing.assert_allclose(history.epochs["val_accuracy"], [val["accuracy"][0]] * 2, atol=1e-6)
    assert not any(name.startswith("val_") for name in history.batches)


def test_metric_that_is_not_a_mean_has_no_batch_value(frozen_fit):
    history, _, _ = frozen_fit
    assert all(math.isnan(v) for v in history.batches["max_probability"])
    assert all(math.isfinite(v) for v in history.running["max_probability"])


def test_no_model_reference_after_training(digits):
    x, y = digits
    model = make_model(0.1)
    history = keras_extras.LossHistory()
    model.fit(x[:256], y[:256], batch_size=64, epochs=1, verbose=0, callbacks=[history])
    assert history.model is None
    assert not any(value is model for value in vars(history).values())
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None
    assert len(history.batches["loss"]) == 4


def test_pickle_and_deepcopy_keep_the_data(frozen_fit):
    history, _, _ = frozen_fit
    for clone in (pickle.loads(pickle.dumps(history)), copy.deepcopy(history)):
        assert nan_equal(clone.to_dict(), history.to_dict())
        assert clone.model is None
        assert clone.get_config() == history.get_config()


# LossHistory across fits, without validation, with steps_per_execution.


def test_repeated_fits_continue_the_steps_without_validation(digits):
    x, y = digits
    x, y = x[:1000], y[:1000]  # 10 full batches of 100
    model = make_model(0.0)
    ref = reference(model, x, y, 100)
    history = keras_extras.LossHistory()
    model.fit(x, y, batch_size=100, epochs=2, shuffle=False, verbose=0, callbacks=[history])
    model.fit(
        x,
        y,
        batch_size=100,
        epochs=4,
        initial_epoch=2,
        shuffle=False,
        verbose=0,
        callbacks=[history],
    )
    model.fit(x, y, batch_size=100, epochs=1, shuffle=False, verbose=0, callbacks=[history])
    assert history.batches["epoch"] == sum(([e] * 10 for e in (0, 1, 2, 3, 0)), [])
    assert history.batches["step"] == list(range(1, 51))
    assert history.epochs["epoch"] == [0, 1, 2, 3, 0]
    assert history.epochs["step"] == [10, 20, 30, 40, 50]
    assert set(history.epochs) == {"epoch", "step", "loss", "accuracy"}
    np.testing.assert_allclose(history.batches["loss"], np.tile(ref["loss"], 5), rtol=1e-4)


@pytest.mark.backends(
    "tensorflow", "jax", reason="Keras's torch trainer rejects steps_per_execution > 1"
)
def test_steps_per_execution_gives_one_point_per_execution(digits):
    x, y = digits
    x, y = x[:1000], y[:1000]  # 10 batches of 100: executions of 3, 3, 3 and 1
    model = make_model(0.0, steps_per_execution=3)
    ref = reference(model, x, y, 100)
    history = keras_extras.LossHistory()
    model.fit(x, y, batch_size=100, epochs=2, shuffle=False, verbose=0, callbacks=[history])
    assert history.batches["step"] == [3, 6, 9, 10, 13, 16, 19, 20]
    assert history.batches["epoch"] == [0] * 4 + [1] * 4
    groups = [
        ref["loss"][0:3].mean(),
        ref["loss"][3:6].mean(),
        ref["loss"][6:9].mean(),
        ref["loss"][9],
    ]
    np.testing.assert_allclose(history.batches["loss"], groups * 2, rtol=1e-4)


@pytest.mark.backends(
    "tensorflow", "jax", reason="Keras's torch trainer rejects steps_per_execution > 1"
)
def test_steps_per_execution_when_keras_does_not_know_the_epoch_length(digits):
    """`steps_per_execution=3` on a generator, as the docstring describes it.

    Keras does not know the epoch's length, so its last call overshoots: the
    last point is counted as 3 steps, exact when the last execution ran all 3
    (9 batches) and, when it ran 1 (10 batches), the value the running means
    give for 3 steps. Catches points at the wrong steps, a full execution not
    equal to its batches' mean, and epoch rows that differ from History.
    """
    x, y = digits
    x, y = x[:1000], y[:1000]
    model = make_model(0.0, steps_per_execution=3)
    ref = reference(model, x, y, 100)["loss"]

    def batches(n):
        for i in range(n):
            yield x[100 * i : 100 * (i + 1)], y[100 * i : 100 * (i + 1)]

    history = keras_extras.LossHistory()
    fit = dict(epochs=1, shuffle=False, verbose=0, callbacks=[history])
    logs = [model.fit(batches(n), **fit).history["loss"][0] for n in (9, 10)]
    assert history.params["steps"] is None
    assert history.batches["step"] == [3, 6, 9, 12, 15, 18, 21]
    assert history.epochs["step"] == [9, 21]
    groups = [ref[0:3].mean(), ref[3:6].mean(), ref[6:9].mean()]
    running = np.cumsum(ref) / np.arange(1, 11)
    overshoot = (12 * running[9] - 9 * running[8]) / 3
    np.testing.assert_allclose(history.batches["loss"], groups * 2 + [overshoot], rtol=1e-4)
    np.testing.assert_allclose(logs, [ref[:9].mean(), ref.mean()], rtol=1e-5)
    assert history.epochs["loss"] == logs


def test_metrics_argument_restricts_the_names(digits):
    x, y = digits
    model = make_model(0.1)
    history = keras_extras.LossHistory(metrics=["loss"])
    model.fit(
        x[:256],
        y[:256],
        batch_size=64,
        epochs=1,
        verbose=0,
        validation_data=(x[256:320], y[256:320]),
        callbacks=[history],
    )
    assert set(history.batches) == set(history.running) == {"epoch", "step", "loss"}
    assert set(history.epochs) == {"epoch", "step", "loss", "val_loss"}

    with pytest.raises(ValueError, match=r"\['acc'\] are not in the training logs.*accuracy"):
        model.fit(
            x[:256],
            y[:256],
            batch_size=64,
            epochs=1,
            verbose=0,
            callbacks=[keras_extras.LossHistory(metrics=["loss", "acc"])],
        )
    with pytest.raises(ValueError, match="'loss'"):
        keras_extras.LossHistory(metrics="loss")


class ExplodingModel:
    """Any use of it fails: proves that a hook does not touch the model."""

    def __getattr__(self, name):
        raise AssertionError(f"the model's {name!r} was used")


def manual_history(order):
    """Drives a LossHistory by hand through one epoch of 5 batches."""
    history = keras_extras.LossHistory()
    model = types.SimpleNamespace(metrics=[keras.metrics.Mean(name="loss")])
    history.set_params({"steps": 5, "epochs": 1, "verbose": 0})
    history.set_model(model)
    history.on_train_begin()
    history.on_epoch_begin(0)
    running = np.cumsum([1.0, 3.0, 2.0, 6.0, 4.0]) / np.arange(1, 6)
    history.set_model(ExplodingModel())
    for batch in order:
        history.on_train_batch_end(batch, {"loss": float(running[batch])})
    history.set_model(model)
    history.on_epoch_end(0, {"loss": float(running[-1])})
    return history


def test_batches_arriving_out_of_order_give_the_same_values():
    in_order = manual_history([0, 1, 2, 3, 4])
    shuffled = manual_history([3, 0, 4, 2, 1])
    np.testing.assert_allclose(in_order.batches["loss"], [1.0, 3.0, 2.0, 6.0, 4.0])
    assert nan_equal(shuffled.to_dict(), in_order.to_dict())


class ThreadRecorder(keras_extras.LossHistory):
    """A LossHistory that notes the threads its batch hook runs in."""

    def __init__(self):
        super().__init__()
        self.threads = set()

    def on_train_batch_end(self, batch, logs=None):
        self.threads.add(threading.current_thread())
        super().on_train_batch_end(batch, logs)


class PlotterThreadRecorder(keras_extras.TrainingPlotter):
    """A TrainingPlotter that notes the threads its batch hook runs in."""

    def __init__(self, directory):
        super().__init__(directory)
        self.threads = set()

    def on_train_batch_end(self, batch, logs=None):
        self.threads.add(threading.current_thread())
        super().on_train_batch_end(batch, logs)


@pytest.mark.backends("jax", "torch", reason="Keras dispatches callbacks asynchronously only there")
def test_batch_hooks_run_off_the_training_thread(digits, tmp_path):
    """The documented `async_safe`: Keras calls the batch hooks from its callback threads.

    Catches a LossHistory or TrainingPlotter that loses `async_safe` (or
    gains a hook that is not), which makes Keras call every batch hook on the
    training thread and wait for it.
    """
    x, y = digits
    model = make_model(0.1)
    recorder = ThreadRecorder()
    plotter = PlotterThreadRecorder(tmp_path)
    for callbacks, seen, history in (
        ([recorder], recorder, recorder),
        ([plotter], plotter, plotter.history),
    ):
        model.fit(x[:512], y[:512], batch_size=64, epochs=1, verbose=0, callbacks=callbacks)
        assert len(history.batches["loss"]) == 8
        assert seen.threads and threading.current_thread() not in seen.threads


def test_exports_are_complete_and_atomic(frozen_fit, tmp_path, monkeypatch):
    history, _, _ = frozen_fit
    tables = history.to_dict()
    assert set(tables) == {"batches", "running", "epochs"}
    assert nan_equal(tables["batches"], history.batches)

    history.to_csv(tmp_path / "history.csv")
    with open(tmp_path / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 48 + 48 + 2
    for name, table in tables.items():
        table_rows = [r for r in rows if r["table"] == name]
        for column, values in table.items():
            read = [float(r[column]) for r in table_rows]
            np.testing.assert_array_equal(read, np.array(values, dtype=np.float64))

    history.to_json(tmp_path / "history.json")
    loaded = json.loads((tmp_path / "history.json").read_text())
    assert loaded["batches"]["max_probability"] == [None] * 48
    assert loaded["running"]["loss"] == history.running["loss"]
    assert loaded["epochs"] == history.epochs

    before = (tmp_path / "history.json").read_bytes()

    def failing_rename(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_rename)
    monkeypatch.setattr(os, "rename", failing_rename)
    with pytest.raises(OSError, match="disk full"):
        history.to_json(tmp_path / "history.json")
    assert (tmp_path / "history.json").read_bytes() == before
    assert png_files(tmp_path) == ["history.csv", "history.json"]
    assert [f for f in os.listdir(tmp_path) if f.startswith(".")] == []


def test_config_roundtrip():
    assert_config_roundtrip(keras_extras.LossHistory(metrics=["loss", "accuracy"]))
