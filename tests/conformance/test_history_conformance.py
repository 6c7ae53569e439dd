"""LossHistory's epoch table and CSV against keras.callbacks.History and CSVLogger.

One `fit` feeds all three: a two-output model (so keys carry output-name prefixes) with
several metrics, weighted ones among them, validation every second epoch (so some
epochs have no `val_*` values), and a LearningRateScheduler listed after LossHistory,
which adds `learning_rate` to the logs once LossHistory has seen them.
"""

from __future__ import annotations

import csv
import math

import keras
import numpy as np
import pytest

import keras_extras

EPOCHS = 5
VALIDATED = [1, 3]  # validation_freq=2 validates after every second epoch


def two_output_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(6,))
    h = keras.layers.Dense(8, activation="relu")(inputs)
    outputs = {
        "reg": keras.layers.Dense(1, name="reg")(h),
        "cls": keras.layers.Dense(3, activation="softmax", name="cls")(h),
    }
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss={"reg": "mse", "cls": "categorical_crossentropy"},
        metrics={
            "reg": ["mae", keras_extras.RMSE()],
            # F1Score(average=None) is a vector: one value per class.
            "cls": ["accuracy", keras.metrics.F1Score(average=None, name="f1")],
        },
        weighted_metrics={"reg": ["mae"]},
    )
    return model


class FirstAppearance(keras.callbacks.Callback):
    """The names in the logs that `fit` hands its callbacks, in the order they first
    appear there (listed last, it sees what the callbacks before it added)."""

    def __init__(self):
        super().__init__()
        self.names = []

    def _see(self, logs):
        self.names += [name for name in logs or {} if name not in self.names]

    def on_train_batch_end(self, batch, logs=None):
        self._see(logs)

    def on_epoch_end(self, epoch, logs=None):
        self._see(logs)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("history")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(80, 6)).astype("float32")
    y = {
        "reg": x[:, :1] - x[:, 1:2],
        "cls": np.eye(3, dtype="float32")[rng.integers(0, 3, size=80)],
    }
    sample_weight = rng.uniform(0.5, 1.5, size=80).astype("float32")
    validation = (x[:24], {k: v[:24] for k, v in y.items()})
    ours, order = keras_extras.LossHistory(), FirstAppearance()
    history = two_output_model().fit(
        x,
        y,
        sample_weight=sample_weight,
        batch_size=16,
        epochs=EPOCHS,
        validation_data=validation,
        validation_freq=2,
        shuffle=False,
        verbose=0,
        callbacks=[
            ours,
            keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.5),
            keras.callbacks.CSVLogger(str(folder / "keras.csv")),
            order,
        ],
    )
    ours.to_csv(folder / "ours.csv")
    return history, ours, folder, order.names


def is_vector(values):
    return any(np.ndim(v) > 0 for v in values)


def test_epoch_table_equals_keras_history(fitted):
    history, ours, *_ = fitted
    keras_keys = set(history.history)
    assert {
        "reg_loss",
        "cls_loss",
        "reg_rmse",
        "reg_weighted_mae",
        "val_cls_accuracy",
    } <= keras_keys
    assert "learning_rate" in keras_keys
    scalar = {k for k, v in history.history.items() if not is_vector(v)}
    assert set(ours.epochs) - {"epoch", "step"} == scalar
    assert ours.epochs["epoch"] == list(range(EPOCHS))
    for key in scalar:
        column = ours.epochs[key]
        assert len(column) == EPOCHS, key
        recorded = [e for e in range(EPOCHS) if not math.isnan(column[e])]
        assert recorded == (VALIDATED if key.startswith("val_") else list(range(EPOCHS))), key
        assert [column[e] for e in recorded] == history.history[key], key
    np.testing.assert_allclose(ours.epochs["learning_rate"], 1e-2 * 0.5 ** np.arange(1, 6))


def test_vector_values_are_left_out(fitted):
    # A documented difference: the tables hold one float per cell.
    history, ours, *_ = fitted
    assert np.shape(history.history["cls_f1"]) == (EPOCHS, 3)
    assert np.shape(history.history["val_cls_f1"]) == (len(VALIDATED), 3)
    assert "cls_f1" not in ours.epochs and "val_cls_f1" not in ours.epochs


def read(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def test_csv_epoch_columns_match_csv_logger(fitted):
    _, ours, folder, first_appearance = fitted
    keras_columns, keras_rows = read(folder / "keras.csv")
    our_columns, our_rows = read(folder / "ours.csv")
    epoch_rows = [row for row in our_rows if row["table"] == "epochs"]
    assert [int(row["epoch"]) for row in epoch_rows] == [int(r["epoch"]) for r in keras_rows]
    assert [int(row["step"]) for row in epoch_rows] == ours.epochs["step"]

    vectors = {name for name in keras_columns if any("[" in r[name] for r in keras_rows)}
    assert vectors == {"cls_f1", "val_cls_f1"}
    # CSVLogger adds a `val_` column for every key when the first epoch has none; one
    # that never gets a value stays "NA" throughout. LossHistory writes no such column.
    never = {name for name in keras_columns if all(r[name] == "NA" for r in keras_rows)}
    assert never == {"val_learning_rate"}
    assert set(our_columns) - {"table", "step"} == set(keras_columns) - vectors - never
    # CSVLogger sorts its columns; LossHistory keeps the order names first appear in the
    # logs: the batches' keys, then `learning_rate` (first epoch end), then `val_*`
    # (second epoch end, validation_freq=2).
    assert keras_columns == ["epoch", *sorted(keras_columns[1:])]
    in_logs = [name for name in first_appearance if name not in vectors]
    assert our_columns == ["table", "epoch", "step", *in_logs]
    assert in_logs.index("learning_rate") < in_logs.index("val_loss")
    for name in set(keras_columns) - vectors - never - {"epoch"}:
        for theirs, mine in zip(keras_rows, epoch_rows, strict=True):
            # CSVLogger writes "NA" where a value is missing, LossHistory "nan".
            if theirs[name] == "NA":
                assert mine[name] == "nan", name
            else:
                assert float(mine[name]) == float(theirs[name]), name


def test_repeated_fits_accumulate_where_history_restarts():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(32, 6)).astype("float32")
    y = {"reg": x[:, :1], "cls": np.eye(3, dtype="float32")[rng.integers(0, 3, size=32)]}
    model, ours = two_output_model(), keras_extras.LossHistory()
    fit = dict(batch_size=16, shuffle=False, verbose=0, callbacks=[ours])
    first = model.fit(x, y, epochs=2, **fit)
    second = model.fit(x, y, epochs=3, initial_epoch=2, **fit)
    # Each fit returns a History of its own epochs; LossHistory appends to its table.
    assert first.epoch == [0, 1] and second.epoch == [2]
    assert len(second.history["loss"]) == 1
    assert ours.epochs["epoch"] == [0, 1, 2]
    assert ours.epochs["step"] == [2, 4, 6]
    assert ours.epochs["loss"] == first.history["loss"] + second.history["loss"]
