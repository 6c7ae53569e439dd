"""LossHistory and TrainingPlotter, on real fits of scikit-learn's digits.

Batch values are checked against each batch's own loss and metrics, computed
here in NumPy float64 from the model's weights: with a learning rate of 0 the
weights never change, so every batch's true values are known independently.
"""

from __future__ import annotations

import copy
import csv
import gc
import io
import json
import math
import os
import pickle
import re
import sys
import threading
import time
import types
import warnings
import weakref

import keras
import numpy as np
import pytest
from keras import ops
from PIL import Image
from sklearn.datasets import load_digits

import keras_extras
from keras_extras import _drawing, _plotting
from keras_extras import callbacks as callbacks_module
from tests.harness import assert_config_roundtrip, run_in_fresh_process

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


def png_files(folder):
    return sorted(f for f in os.listdir(folder) if not f.startswith("."))


def assert_valid_png(path, size=None):
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        if size is not None:
            assert image.size == size
        pixels = np.asarray(image.convert("L"), dtype=np.float64)
    # Not blank: curves, text and axes make the pixels vary and leave white.
    assert pixels.std() > 10.0
    assert 0.01 < (pixels < 200).mean() < 0.5


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
    plotter = keras_extras.TrainingPlotter(
        "plots",
        snapshot="e{epoch}.svg",
        every_n_epochs=2,
        smoothing=0.5,
        yscale="log",
        modes={"accuracy": "max"},
        figsize=(6, 4),
        display=True,
        history=keras_extras.LossHistory(metrics=["loss"]),
    )
    clone = assert_config_roundtrip(plotter)
    assert clone.history.metrics == ["loss"]


# TrainingPlotter.


class FileWatcher(keras.callbacks.Callback):
    """Listed after a plotter: after each epoch, waits for it and reads its file."""

    def __init__(self, plotter, name="training.png"):
        super().__init__()
        self.plotter, self.path = plotter, os.path.join(plotter.directory, name)
        self.versions = []

    def on_epoch_end(self, epoch, logs=None):
        self.plotter.wait()
        if os.path.exists(self.path):
            with open(self.path, "rb") as f:
                self.versions.append((os.stat(self.path).st_ino, f.read()))


@pytest.fixture(scope="module")
def trained(digits):
    """A model to fit again and again; its weights do not matter to the plotter tests."""
    x, y = digits
    model = make_model(0.5)
    return model, x[:256], y[:256], (x[256:320], y[256:320])


@pytest.fixture(scope="module")
def plotted(trained, tmp_path_factory):
    model, x, y, validation = trained
    folder = tmp_path_factory.mktemp("plots")
    plotter = keras_extras.TrainingPlotter(folder, snapshot="plot_at_epoch_{epoch}.png")
    watcher = FileWatcher(plotter)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(
            x,
            y,
            batch_size=64,
            epochs=3,
            verbose=0,
            validation_data=validation,
            callbacks=[plotter, watcher],
        )
    return folder, plotter, watcher, caught


def test_plot_is_a_valid_png_of_the_expected_size(plotted):
    folder, _, _, caught = plotted
    # Three panels (batch loss, loss, accuracy), two per row, 5 x 3.2 in at 100 dpi.
    assert_valid_png(folder / "training.png", size=(1000, 640))
    assert not [w for w in caught if "TrainingPlotter" in str(w.message)]


def test_plot_is_rewritten_once_per_epoch(plotted):
    folder, _, watcher, _ = plotted
    # Each epoch's drawing has that epoch's data, so every version differs.
    # (Inode numbers would not do: the filesystem may reuse a freed one.)
    assert len(watcher.versions) == 3
    assert len({data for _, data in watcher.versions}) == 3
    assert (folder / "training.png").read_bytes() == watcher.versions[-1][1]


def test_snapshot_pattern_keeps_one_file_per_epoch(plotted):
    folder, _, watcher, _ = plotted
    assert png_files(folder) == [
        "plot_at_epoch_1.png",
        "plot_at_epoch_2.png",
        "plot_at_epoch_3.png",
        "training.png",
    ]
    for epoch, (_, data) in enumerate(watcher.versions, start=1):
        assert (folder / f"plot_at_epoch_{epoch}.png").read_bytes() == data
    assert [f for f in os.listdir(folder) if f.startswith(".")] == []


def test_plotter_history_and_model(plotted):
    _, plotter, _, _ = plotted
    assert plotter.history.epochs["epoch"] == [0, 1, 2]
    assert len(plotter.history.batches["loss"]) == 12
    assert "val_loss" in plotter.history.epochs
    assert plotter.model is None and plotter.history.model is None
    clone = pickle.loads(pickle.dumps(plotter))
    assert nan_equal(clone.history.to_dict(), plotter.history.to_dict())
    assert nan_equal(copy.deepcopy(plotter).history.to_dict(), plotter.history.to_dict())


def test_every_n_epochs_figsize_and_final_drawing(trained, tmp_path):
    model, x, y, _ = trained
    plotter = keras_extras.TrainingPlotter(
        tmp_path, snapshot="e{epoch}.png", every_n_epochs=2, figsize=(8, 5)
    )
    watcher = FileWatcher(plotter)
    model.fit(x, y, batch_size=64, epochs=5, verbose=0, callbacks=[plotter, watcher])
    # Written after epochs 2 and 4, and once more at the end for epoch 5.
    assert len(watcher.versions) == 4  # the file exists from epoch 2 on
    (ino2, v2), (ino3, v3), (ino4, v4), (ino5, v5) = watcher.versions
    assert (ino2, v2) == (ino3, v3) and (ino4, v4) == (ino5, v5) and v2 != v4
    final = (tmp_path / "training.png").read_bytes()
    assert final not in (v2, v4)
    assert png_files(tmp_path) == ["e2.png", "e4.png", "training.png"]
    assert_valid_png(tmp_path / "training.png", size=(800, 500))


def test_svg_and_pdf_follow_the_extension(trained, tmp_path):
    model, x, y, _ = trained
    plotter = keras_extras.TrainingPlotter(tmp_path, filename="curves.svg", snapshot="e{epoch}.pdf")
    model.fit(x, y, batch_size=64, epochs=1, verbose=0, callbacks=[plotter])
    assert png_files(tmp_path) == ["curves.svg", "e1.pdf"]
    svg = (tmp_path / "curves.svg").read_text()
    assert svg.startswith("<?xml") and "<svg" in svg and "loss per batch" in svg
    assert (tmp_path / "e1.pdf").read_bytes().startswith(b"%PDF")


@pytest.mark.parametrize("arrangement", ["history first", "plotter first", "plotter only"])
def test_a_shared_history_records_everything_once(trained, tmp_path, arrangement):
    model, x, y, _ = trained
    history = keras_extras.LossHistory()
    plotter = keras_extras.TrainingPlotter(tmp_path, history=history)
    callbacks = {
        "history first": [history, plotter],
        "plotter first": [plotter, history],
        "plotter only": [plotter],
    }[arrangement]
    model.fit(x, y, batch_size=64, epochs=2, verbose=0, callbacks=callbacks)
    assert plotter.history is history
    assert history.batches["step"] == list(range(1, 9))
    assert history.epochs["epoch"] == [0, 1]
    assert_valid_png(tmp_path / "training.png")


def test_nan_losses_still_get_their_plot(digits, tmp_path):
    x, y = digits
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(1)])
    # Diverges: the loss grows ~10^4 times a step, overflows to inf, then NaN.
    model.compile(optimizer=keras.optimizers.SGD(5.0), loss="mse")
    plotter = keras_extras.TrainingPlotter(tmp_path, yscale="log", smoothing=0.5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(
            x[:256],
            y[:256].astype("float32"),
            batch_size=64,
            epochs=4,
            shuffle=False,
            verbose=0,
            callbacks=[plotter],
        )
    loss = plotter.history.batches["loss"]
    assert all(math.isfinite(v) for v in loss[:5])
    assert math.isnan(loss[-1]) and not math.isfinite(plotter.history.epochs["loss"][-1])
    assert_valid_png(tmp_path / "training.png", size=(1000, 320))
    assert not [w for w in caught if "TrainingPlotter" in str(w.message)]


def test_non_finite_values_are_gaps_and_best_epochs_are_marked():
    data = {
        "batches": {"step": np.arange(1.0, 7.0), "loss": np.array([2, 1, np.inf, np.nan, 3, 1.5])},
        "epochs": {
            "epoch": np.arange(4.0),
            "step": np.arange(4.0),
            "loss": np.array([2.0, 1.0, -np.inf, 0.5]),
            "val_loss": np.array([2.5, 0.7, np.nan, 0.9]),
            "accuracy": np.array([0.5, 0.9, 0.7, 0.8]),
        },
    }
    drawing = _plotting.Drawing()
    drawing.draw(data, smoothing=0.5, yscale="log", modes={"loss": "min", "accuracy": "max"})
    batch_panel, loss_panel, accuracy_panel = drawing._panels
    raw, smoothed = (np.asarray(line.get_ydata()) for line in batch_panel["lines"])
    np.testing.assert_array_equal(np.isnan(raw), [False, False, True, True, False, False])
    # Debiased EMA over the finite values only, in closed form.
    w, finite = 0.5, np.array([2.0, 1.0, 3.0, 1.5])
    expected = [
        sum((1 - w) * w ** (n - 1 - i) * finite[i] for i in range(n)) / (1 - w**n)
        for n in range(1, 5)
    ]
    np.testing.assert_allclose(smoothed[[0, 1, 4, 5]], expected)
    assert np.isnan(smoothed[[2, 3]]).all()
    train, validation = (np.asarray(line.get_ydata()) for line in loss_panel["lines"])
    assert np.isnan(train[2]) and np.isnan(validation[2])
    # The validation curve is the one marked: its minimum 0.7 at epoch 2.
    assert list(loss_panel["best"].get_data()[0]) == [2.0]
    assert list(loss_panel["best"].get_data()[1]) == [0.7]
    assert list(accuracy_panel["best"].get_data()[0]) == [2.0]
    assert loss_panel["axes"].get_yscale() == "log"

    drawing.draw(data, modes={"accuracy": "min", "loss": "min"})
    _, loss_panel, accuracy_panel = drawing._panels  # rebuilt: no smoothing line now
    assert len(drawing._panels[0]["lines"]) == 1
    assert list(accuracy_panel["best"].get_data()[0]) == [1.0]
    assert loss_panel["axes"].get_yscale() == "linear"
    drawing.draw(data, modes={})
    assert not accuracy_panel["best"].get_visible()
    assert accuracy_panel["best"].get_label().startswith("_")


def test_best_direction_comes_from_keras(trained, plotted):
    model = trained[0]  # built by the fit in `plotted`: compiled metrics exist only then
    assert callbacks_module._directions(model) == {"loss": "min", "accuracy": "max"}


def test_unwritable_folder_fails_before_training(trained, tmp_path):
    model, x, y, _ = trained
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    folder = blocker / "plots"
    weights = [w.copy() for w in model.get_weights()]
    iterations = int(model.optimizer.iterations.numpy())
    with pytest.raises(OSError, match=re.escape(str(folder))):
        model.fit(
            x,
            y,
            batch_size=64,
            epochs=1,
            verbose=0,
            callbacks=[keras_extras.TrainingPlotter(folder)],
        )
    assert int(model.optimizer.iterations.numpy()) == iterations
    for before, after in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)


# A child that dies as it moves its second finished file into place: at the
# rename, however the file was opened and written.
CRASHING_CHILD = """\
import os
renames = []

def crash_on_second(real):
    def rename(src, dst, *args, **kwargs):
        renames.append(dst)
        if len(renames) == 2:
            os._exit(17)
        return real(src, dst, *args, **kwargs)
    return rename

os.replace, os.rename = crash_on_second(os.replace), crash_on_second(os.rename)
importlib.import_module("keras_extras._drawing").main()
"""

FAILING_CHILD = """\
plotting = importlib.import_module("keras_extras._plotting")
def draw(self, *args, **kwargs):
    raise ValueError("boom")
plotting.Drawing.draw = draw
importlib.import_module("keras_extras._drawing").main()
"""


def child_with(code):
    command = _drawing.child_command()
    return lambda: [*command[:2], _drawing.CHILD_PRELUDE + code, *command[3:]]


def test_crash_before_the_rename_leaves_the_previous_png(trained, tmp_path, monkeypatch):
    """A crash of the drawing process at its second rename leaves the first plot whole.

    Catches a plotter that writes the file in place (no rename to crash in:
    no warning, and the second plot replaces the first), and a crash reported
    more than once. What may be left is what the docstring allows: one hidden
    `.training.png.*.tmp`, here a complete PNG of the second epoch.
    """
    model, x, y, _ = trained
    monkeypatch.setattr(_drawing, "child_command", child_with(CRASHING_CHILD))
    plotter = keras_extras.TrainingPlotter(tmp_path)
    watcher = FileWatcher(plotter)
    with pytest.warns(RuntimeWarning, match="drawing process stopped.*exit code 17") as caught:
        model.fit(x, y, batch_size=64, epochs=2, verbose=0, callbacks=[plotter, watcher])
    assert len([w for w in caught if "TrainingPlotter" in str(w.message)]) == 1
    (first_inode, first), (second_inode, second) = watcher.versions
    assert (second_inode, second) == (first_inode, first)
    assert (tmp_path / "training.png").read_bytes() == first
    assert_valid_png(tmp_path / "training.png")
    assert png_files(tmp_path) == ["training.png"]
    leftovers = [f for f in os.listdir(tmp_path) if f.startswith(".")]
    assert len(leftovers) == 1 and re.fullmatch(r"\.training\.png\..+\.tmp", leftovers[0])
    assert_valid_png(tmp_path / leftovers[0])
    assert (tmp_path / leftovers[0]).read_bytes() != first
    assert plotter.history.epochs["epoch"] == [0, 1]


def test_drawing_errors_warn_once_and_training_goes_on(trained, tmp_path, monkeypatch):
    model, x, y, _ = trained
    monkeypatch.setattr(_drawing, "child_command", child_with(FAILING_CHILD))
    plotter = keras_extras.TrainingPlotter(tmp_path)
    with pytest.warns(RuntimeWarning, match="boom") as caught:
        model.fit(x, y, batch_size=64, epochs=3, verbose=0, callbacks=[plotter])
    assert len([w for w in caught if "TrainingPlotter" in str(w.message)]) == 1
    assert plotter.history.epochs["epoch"] == [0, 1, 2]
    assert png_files(tmp_path) == []


def test_a_reused_plotter_warns_once_in_every_fit(trained, tmp_path, monkeypatch):
    """The documented "one RuntimeWarning per fit", for a plotter passed to three fits.

    Catches a plotter that warns only in its first fit (the flag is not
    reset) and one that warns at every epoch end after a failed drawing (the
    watcher waits for each drawing, so the error is known at the next one).
    """
    model, x, y, _ = trained
    monkeypatch.setattr(_drawing, "child_command", child_with(FAILING_CHILD))
    plotter = keras_extras.TrainingPlotter(tmp_path)
    callbacks = [plotter, FileWatcher(plotter)]
    for fit in range(3):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.fit(x, y, batch_size=64, epochs=3, verbose=0, callbacks=callbacks)
        messages = [str(w.message) for w in caught if "TrainingPlotter" in str(w.message)]
        assert len(messages) == 1, (fit, messages)
        assert "boom" in messages[0]
    assert plotter.history.epochs["epoch"] == [0, 1, 2] * 3


def drawing_children():
    """Process ids of this process's live drawing children, read from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                # The fields after the parenthesised name: state, then the parent's id.
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                command = cmdline.read()
        except (OSError, IndexError, ValueError):
            continue
        if parent == os.getpid() and b"keras_extras._drawing" in command:
            found.append(int(entry))
    return sorted(found)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads the process table in /proc")
def test_the_drawing_process_serves_every_fit_and_ends_with_the_plotter(trained, tmp_path):
    """One child for all fits of a plotter, ended by `close()` or garbage collection.

    Catches a plotter that starts a child per fit (the documented fixed cost
    paid again: the second fit would show another process id) and one that
    leaves its child running after `close()` or after the plotter is gone.
    """
    model, x, y, _ = trained
    before = drawing_children()
    plotter = keras_extras.TrainingPlotter(tmp_path / "a")
    model.fit(x, y, batch_size=256, epochs=1, verbose=0, callbacks=[plotter])
    first = [pid for pid in drawing_children() if pid not in before]
    assert len(first) == 1
    model.fit(x, y, batch_size=256, epochs=1, verbose=0, callbacks=[plotter])
    assert [pid for pid in drawing_children() if pid not in before] == first
    plotter.close()
    assert [pid for pid in drawing_children() if pid not in before] == []
    model.fit(x, y, batch_size=256, epochs=1, verbose=0, callbacks=[plotter])
    assert_valid_png(tmp_path / "a" / "training.png")
    assert len([pid for pid in drawing_children() if pid not in before]) == 1
    del plotter
    gc.collect()
    assert [pid for pid in drawing_children() if pid not in before] == []


def held_child(started, go, log, seconds=0.0):
    """A drawing child that holds each job until `go` exists, then logs its epoch and
    takes `seconds` longer than the real drawing."""
    return f"""\
import os, time
drawing = importlib.import_module("keras_extras._drawing")
real_run_job = drawing.run_job
def run_job(d, job):
    open({str(started)!r}, "a").close()
    while not os.path.exists({str(go)!r}):
        time.sleep(0.01)
    with open({str(log)!r}, "a") as f:
        f.write(f"{{job.epoch}} {{time.monotonic()}}\\n")
    time.sleep({seconds!r})
    return real_run_job(d, job)
drawing.run_job = run_job
drawing.main()
"""


def test_a_drawing_whose_file_a_queued_one_rewrites_is_dropped(tmp_path, monkeypatch):
    """When drawing falls behind the epochs, only the newest plot file is drawn.

    The child holds epoch 0 while epochs 1 to 6 are queued. Dropped: the
    drawings whose only output is the plot file and that have a newer drawing
    behind them (1, 4, 5; 5 is marked for a snapshot, but its options have no
    pattern). Kept: the snapshot (2), the PNG a notebook is shown (3) and the
    newest (6). Catches a plotter that draws every epoch however far behind it
    is (a fit of many short epochs then waits for all of them at its end) and
    one that drops a snapshot or a notebook update.
    """
    started, go, log = tmp_path / "started", tmp_path / "go", tmp_path / "drawn.txt"
    monkeypatch.setattr(_drawing, "child_command", child_with(held_child(started, go, log)))
    shown, errors = [], []
    process = _drawing.DrawingProcess(on_png=shown.append, on_error=errors.append)
    plain = _drawing.PlotOptions(tmp_path / "out")
    with_snapshots = _drawing.PlotOptions(tmp_path / "out", snapshot="at_{epoch}.png")
    with_snapshots.check_folders()
    batches = {"step": [], "loss": []}

    def submit(epoch, options=plain, snapshot=False, png=False):
        seen = range(epoch + 1)
        epochs = {"epoch": list(seen), "loss": [1.0 / (e + 1) for e in seen]}
        process.submit(_drawing.Job.of(options, epoch, snapshot, batches, epochs, {}, png))

    submit(0)
    for _ in range(3000):
        if started.exists():
            break
        threading.Event().wait(0.01)
    assert started.exists(), "the drawing child never started its first job"
    submit(1)
    submit(2, with_snapshots, snapshot=True)
    submit(3, png=True)
    submit(4)
    submit(5, snapshot=True)
    submit(6)
    go.touch()
    process.wait()
    process.close()
    assert errors == []
    assert [line.split()[0] for line in log.read_text().splitlines()] == ["0", "2", "3", "6"]
    assert sorted(os.listdir(tmp_path / "out")) == ["at_3.png", "training.png"]
    assert len(shown) == 1 and shown[0][:8] == b"\x89PNG\r\n\x1a\n"
    assert_valid_png(tmp_path / "out" / "training.png")


def test_the_child_rests_between_drawings_of_the_plot_file_unless_waited_for(tmp_path, monkeypatch):
    """After a drawing, a plot-file drawing waits `REST_PER_DRAWING` times as long as that
    drawing took; `wait` ends the rest at once.

    Each drawing here takes over 1 s, so a rest lasts over 3 s. Catches a child that
    draws each epoch's plot as soon as it can (epochs 1 to 3 drawn one after another:
    on cores that training uses, that is training time lost whenever epochs are
    shorter than a drawing), one that makes a snapshot wait out the rest too, and a
    `wait` that sits out the rest (seconds added to every fit at `on_train_end`).
    """
    assert _drawing.REST_PER_DRAWING == 3.0
    started, go, log = tmp_path / "started", tmp_path / "go", tmp_path / "drawn.txt"
    go.touch()
    monkeypatch.setattr(
        _drawing, "child_command", child_with(held_child(started, go, log, seconds=1.0))
    )
    errors = []
    process = _drawing.DrawingProcess(on_png=None, on_error=errors.append)
    options = _drawing.PlotOptions(tmp_path / "out")
    with_snapshots = _drawing.PlotOptions(tmp_path / "out", snapshot="at_{epoch}.png")
    options.check_folders()

    def submit(epoch, options=options):
        seen = range(epoch + 1)
        epochs = {"epoch": list(seen), "loss": [1.0 / (e + 1) for e in seen]}
        process.submit(_drawing.Job.of(options, epoch, True, {}, epochs, {}, False))

    def drawn():
        lines = log.read_text().splitlines() if log.exists() else []
        return {int(epoch): float(at) for epoch, at in (line.split() for line in lines)}

    def wait_for(epoch):
        for _ in range(3000):
            if epoch in drawn():
                return
            threading.Event().wait(0.01)
        raise AssertionError(f"epoch {epoch} was never drawn: {drawn()}")

    submit(0)
    wait_for(0)
    for epoch in (1, 2, 3):
        submit(epoch)
        threading.Event().wait(0.1)
    wait_for(3)
    assert list(drawn()) == [0, 3]
    # Epoch 0's drawing took over 1 s, then the child rested over 3 s.
    assert drawn()[3] - drawn()[0] >= 4.0
    # Queued while epoch 3 is drawn, a snapshot starts when that drawing ends (after
    # about 1 s), not after the rest (over 4 s).
    submit(4, with_snapshots)
    wait_for(4)
    assert drawn()[4] - drawn()[3] < 2.5
    submit(5)
    before = time.monotonic()
    process.wait()
    # The drawing itself, not the rest of over 3 s after epoch 4's.
    assert time.monotonic() - before < 2.9
    process.close()
    assert list(drawn()) == [0, 3, 4, 5] and errors == []
    assert sorted(os.listdir(tmp_path / "out")) == ["at_5.png", "training.png"]
    assert_valid_png(tmp_path / "out" / "training.png")


def test_a_child_that_cannot_start_is_reported_with_its_message(trained, tmp_path, monkeypatch):
    model, x, y, _ = trained
    broken = "import sys; sys.stderr.write('no matplotlib here'); sys.exit(3)"
    monkeypatch.setattr(_drawing, "child_command", lambda: [sys.executable, "-c", broken])
    plotter = keras_extras.TrainingPlotter(tmp_path)
    with pytest.warns(RuntimeWarning, match="(?s)exit code 3.*no matplotlib here"):
        model.fit(x, y, batch_size=64, epochs=1, verbose=0, callbacks=[plotter])
    assert plotter.history.epochs["epoch"] == [0]


def test_inline_display_updates_in_place(trained, tmp_path, monkeypatch):
    model, x, y, _ = trained
    shown = []

    class Handle:
        def update(self, image):
            shown.append(("update", image.data))

    def display(image, display_id=False):
        assert display_id is True
        shown.append(("display", image.data))
        return Handle()

    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: object()
    ipython.display = types.ModuleType("IPython.display")
    ipython.display.display = display
    ipython.display.Image = lambda data: types.SimpleNamespace(data=data)
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "IPython.display", ipython.display)
    plotter = keras_extras.TrainingPlotter(tmp_path, display=True)
    model.fit(x, y, batch_size=64, epochs=3, verbose=0, callbacks=[plotter])
    assert [kind for kind, _ in shown] == ["display", "update", "update"]
    assert shown[-1][1] == (tmp_path / "training.png").read_bytes()
    assert len({data for _, data in shown}) == 3


def test_missing_matplotlib_names_the_extra(monkeypatch, tmp_path):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"keras-extras\[plot\]"):
        keras_extras.TrainingPlotter(tmp_path)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"every_n_epochs": 0}, "every_n_epochs.*0"),
        ({"smoothing": 1.0}, "smoothing.*1.0"),
        ({"yscale": "sqrt"}, "yscale.*'sqrt'"),
        ({"modes": {"loss": "up"}}, r"modes\['loss'\] is 'up'"),
        ({"filename": "plot.xyz"}, "'plot.xyz'"),
        ({"snapshot": "plot.png"}, "{epoch}.*'plot.png'"),
        ({"snapshot": "{step}.png"}, "'{step}.png'"),
        ({"figsize": (0, 3)}, r"figsize.*\(0, 3\)"),
        ({"history": "h"}, "history.*'h'"),
    ],
)
def test_bad_arguments_are_named(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        keras_extras.TrainingPlotter(tmp_path, **kwargs)


def test_headless_from_a_thread_without_touching_matplotlib_state(tmp_path):
    out = run_in_fresh_process(
        f"""
        import threading, keras, numpy as np, keras_extras, matplotlib
        backend = dict.__getitem__(matplotlib.rcParams, "backend")
        x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
        plotter = keras_extras.TrainingPlotter({str(tmp_path)!r})
        thread = threading.Thread(target=lambda: model.fit(
            x, x[:, :1], batch_size=16, epochs=2, verbose=0, callbacks=[plotter]))
        thread.start()
        thread.join()
        import matplotlib.pyplot as plt
        print(dict.__getitem__(matplotlib.rcParams, "backend") == backend, plt.get_fignums())
        """,
        env={"DISPLAY": None, "MPLBACKEND": None, "WAYLAND_DISPLAY": None},
    )
    assert out.split()[-2:] == ["True", "[]"]
    assert_valid_png(tmp_path / "training.png", size=(1000, 320))
    # The drawing child itself never imports pyplot.
    script = f"""
        import pickle, sys
        sys.argv[1:] = [{os.path.dirname(_drawing.__file__)!r}]
        sys.path.insert(0, "")
        exec({_drawing.CHILD_PRELUDE!r})
        drawing = importlib.import_module("keras_extras._drawing")
        plotting = importlib.import_module("keras_extras._plotting")
        import numpy as np
        options = drawing.PlotOptions({str(tmp_path)!r}, filename="child.png")
        job = drawing.Job(
            options, epoch=0, snapshot=False, modes={{}},
            batches={{"step": np.arange(3.0), "loss": np.ones(3)}},
            epochs={{"epoch": np.arange(2.0), "step": np.arange(2.0), "loss": np.ones(2)}})
        drawing.run_job(plotting.Drawing(), job)
        print("matplotlib.pyplot" in sys.modules, "keras" in sys.modules)
        """
    out = run_in_fresh_process(script, env={"DISPLAY": None, "MPLBACKEND": None})
    assert out.split() == ["False", "False"]
    assert_valid_png(tmp_path / "child.png", size=(1000, 320))


def test_png_encoding_matches_matplotlib():
    size = (300, 200)
    drawing = _plotting.Drawing()
    data = {
        "batches": {"step": np.arange(1.0, 4.0), "loss": np.array([3.0, 2.0, 1.0])},
        "epochs": {"epoch": np.arange(1.0), "step": np.arange(1.0), "loss": np.ones(1)},
    }
    drawing.draw(data, figsize=(size[0] / 100, size[1] / 100))
    ours = np.asarray(Image.open(io.BytesIO(drawing.encode("png"))).convert("RGBA"))
    buffer = io.BytesIO()
    drawing.figure.savefig(buffer, format="png", dpi=100)
    theirs = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGBA"))
    assert ours.shape == theirs.shape == (size[1], size[0], 4)
    np.testing.assert_array_equal(ours, theirs)


def test_arguments_set_later_are_checked_like_constructor_arguments(tmp_path):
    """The plotter's attributes are its checked options: a bad value set later is refused.

    Catches attributes that drift from what the drawing uses, or skip the checks.
    """
    plotter = keras_extras.TrainingPlotter(tmp_path, figsize=[4, 3])
    assert plotter.figsize == (4.0, 3.0) and plotter.directory == str(tmp_path)
    plotter.smoothing = 0.5
    assert plotter.get_config()["smoothing"] == 0.5
    with pytest.raises(ValueError, match="smoothing.*1.5"):
        plotter.smoothing = 1.5
    with pytest.raises(ValueError, match="'plot.xyz'"):
        plotter.filename = "plot.xyz"
    assert plotter.smoothing == 0.5 and plotter.filename == "training.png"


@pytest.mark.parametrize("figsize", [None, (4.0, 9.0)])
def test_labels_and_titles_are_placed_clear_of_the_tick_labels(figsize):
    """The x labels and titles, placed at fixed offsets, neither overlap the tick
    labels nor leave the figure, for the default and a tall, narrow figure."""
    drawing = _plotting.Drawing()
    data = {
        "batches": {"step": np.arange(500.0), "loss": np.linspace(3.0, 0.1, 500)},
        "epochs": {
            "epoch": np.arange(5.0),
            "loss": np.linspace(2.0, 0.5, 5),
            "val_loss": np.linspace(2.2, 0.7, 5),
            "accuracy": np.linspace(0.2, 0.9, 5),
        },
    }
    drawing.draw(data, yscale="log", figsize=figsize)
    renderer = drawing.figure.canvas.get_renderer()
    figure_box = drawing.figure.bbox
    axes = [ax for ax in drawing.figure.axes if ax.get_visible()]
    assert len(axes) == 3
    for ax in axes:
        ticks = [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text()]
        assert ticks
        label = ax.xaxis.label.get_window_extent(renderer)
        title = ax.title.get_window_extent(renderer)
        frame = ax.get_window_extent(renderer)
        assert label.y1 <= min(t.y0 for t in ticks) - 2, (ax.get_title(), label, ticks)
        assert label.y0 >= figure_box.y0
        assert frame.y1 < title.y0 <= frame.y1 + 10 and title.y1 <= figure_box.y1
