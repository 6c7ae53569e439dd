"""The Keras-free core of LossHistory, driven by hand with plain numbers.

Each test makes up every batch's own value, computes in NumPy float64 the running
values that Keras would log (weighted by batch size), feeds them to a `HistoryCore`
and checks what it recovers against the made-up values.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import math

import numpy as np
import pytest

from keras_extras_core import history as _history
from keras_extras_core.history import MEAN, ROOT_MEAN, HistoryCore


def running_means(values, sizes=None):
    """What Keras logs after each step: the size-weighted mean of the values so far."""
    values = np.asarray(values, np.float64)
    sizes = np.ones_like(values) if sizes is None else np.asarray(sizes, np.float64)
    return np.cumsum(values * sizes) / np.cumsum(sizes)


COUNT = object()


def one_epoch(
    core,
    logs_per_batch,
    epoch=0,
    epoch_logs=None,
    steps=COUNT,
    batch_end=lambda batch: batch + 1,
    kinds=None,
):
    """Drives `core` through one epoch; `logs_per_batch` maps a batch index to its logs.

    `steps` is the epoch's length as Keras knows it: by default one step per
    batch, `None` for unknown. Returns one item per call of `kinds`.
    """
    kinds = {"loss": MEAN} if kinds is None else kinds
    calls = []
    core.open_epoch()
    for batch in sorted(logs_per_batch):
        core.record_batch(batch, logs_per_batch[batch])
    if steps is COUNT:
        steps = len(logs_per_batch)
    core.close_epoch(
        epoch,
        epoch_logs if epoch_logs is not None else logs_per_batch[max(logs_per_batch)],
        steps=steps,
        batch_end=batch_end,
        kinds=lambda: calls.append(1) or kinds,
    )
    return calls


def test_mean_recovery_gives_each_batch_its_own_value():
    """Catches a recovery that returns the running mean, or drops a batch."""
    own = np.random.default_rng(0).uniform(0.1, 3.0, size=7)
    running = running_means(own)
    core = HistoryCore()
    core.begin_fit()
    one_epoch(core, {i: {"loss": float(m)} for i, m in enumerate(running)})
    np.testing.assert_allclose(core.batches["loss"], own, rtol=1e-12)
    assert core.running["loss"] == [float(m) for m in running]
    assert core.batches["step"] == list(range(1, 8))
    assert core.epochs == {"epoch": [0], "step": [7], "loss": [float(running[-1])]}


def test_root_mean_recovery_squares_first():
    """RMSE: the running value is sqrt(mean square). Catches a mean recovery of the roots."""
    mean_squares = np.random.default_rng(1).uniform(0.0, 4.0, size=6)
    running = np.sqrt(running_means(mean_squares))
    core = HistoryCore()
    kinds = {"loss": MEAN, "rmse": ROOT_MEAN}
    one_epoch(core, {i: {"rmse": float(r)} for i, r in enumerate(running)}, kinds=kinds)
    np.testing.assert_allclose(core.batches["rmse"], np.sqrt(mean_squares), rtol=1e-10)
    # A mean square that rounding takes below zero is 0, not NaN.
    assert _history.own_value(ROOT_MEAN, math.sqrt(0.5) * (1 - 1e-15), 1.0, 1, 2) == 0.0


def test_short_last_batch_is_pulled_towards_the_running_mean_as_documented():
    """LossHistory's docstring: `m_(S-1) + (v - m_(S-1)) * S * b / ((S - 1) * B + b)`."""
    own = np.array([1.0, 4.0, 2.0, 8.0, 5.0])
    sizes = np.array([64, 64, 64, 64, 28])
    running = running_means(own, sizes)
    core = HistoryCore()
    one_epoch(core, {i: {"loss": float(m)} for i, m in enumerate(running)})
    np.testing.assert_allclose(core.batches["loss"][:4], own[:4], rtol=1e-12)
    S, B, b, before = 5, 64, 28, running[3]
    expected = before + (own[4] - before) * S * b / ((S - 1) * B + b)
    np.testing.assert_allclose(core.batches["loss"][4], expected, rtol=1e-12)
    assert not np.isclose(expected, own[4])


@pytest.mark.parametrize(
    "keras_version, indices, batch_end",
    [
        ("3.11 and later: the last step's index", [2, 5, 8, 9], lambda batch: batch + 1),
        ("3.10: the first step's index", [0, 3, 6, 9], lambda batch: batch + 3),
    ],
)
def test_steps_per_execution_gives_one_point_per_execution(keras_version, indices, batch_end):
    """10 steps in executions of 3, 3, 3 and 1: each point is the mean of its steps.

    Catches a point per callback call that is not its execution's mean, a step
    column that counts calls instead of steps, and a last point that overshoots
    the epoch (10 steps, not 12).
    """
    own = np.random.default_rng(2).uniform(0.5, 2.0, size=10)
    running = running_means(own)
    core = HistoryCore()
    logs = {i: {"loss": float(running[min(batch_end(i), 10) - 1])} for i in indices}
    one_epoch(core, logs, steps=10, batch_end=batch_end)
    assert core.batches["step"] == [3, 6, 9, 10], keras_version
    groups = [own[0:3].mean(), own[3:6].mean(), own[6:9].mean(), own[9]]
    np.testing.assert_allclose(core.batches["loss"], groups, rtol=1e-12)


def test_steps_per_execution_with_an_unknown_epoch_length_counts_the_last_call_in_full():
    """Without `steps`, the last execution of 3 counts 3 steps, as the docstring says."""
    own = np.random.default_rng(3).uniform(0.5, 2.0, size=10)
    running = running_means(own)
    core = HistoryCore()
    logs = {i: {"loss": float(running[min(i, 9)])} for i in (2, 5, 8, 11)}
    one_epoch(core, logs, steps=None)
    assert core.batches["step"] == [3, 6, 9, 12]
    overshoot = (12 * running[9] - 9 * running[8]) / 3
    expected = [own[0:3].mean(), own[3:6].mean(), own[6:9].mean(), overshoot]
    np.testing.assert_allclose(core.batches["loss"], expected, rtol=1e-12)


def test_batches_out_of_order_and_twice_count_once():
    """Two callbacks (a LossHistory and its TrainingPlotter) feed one core, in any order.

    Catches a core that records a batch index twice, closes an epoch twice, or
    sorts nothing.
    """
    own = np.array([1.0, 3.0, 2.0, 6.0, 4.0])
    running = running_means(own)
    logs = {i: {"loss": float(m)} for i, m in enumerate(running)}
    core = HistoryCore()
    for epoch in range(2):
        core.open_epoch()
        core.open_epoch()
        for batch in (3, 0, 4, 3, 2, 1, 0, 4, 2, 1):
            core.record_batch(batch, logs[batch])
        for _ in range(2):
            core.close_epoch(epoch, logs[4], 5, lambda batch: batch + 1, lambda: {"loss": MEAN})
    np.testing.assert_allclose(core.batches["loss"], np.tile(own, 2), rtol=1e-12)
    assert core.batches["step"] == list(range(1, 11))
    assert core.epochs["epoch"] == [0, 1] and core.epochs["step"] == [5, 10]


def test_names_that_are_not_running_means_are_nan_in_batches_and_kept_in_running():
    core = HistoryCore()
    logs = {0: {"loss": 2.0, "auc": 0.7, "vector": [1.0, 2.0]}, 1: {"loss": 1.5, "auc": 0.8}}
    calls = one_epoch(core, logs, kinds={"loss": MEAN, "auc": None})
    np.testing.assert_allclose(core.batches["loss"], [2.0, 1.0])
    assert all(math.isnan(v) for v in core.batches["auc"])
    assert core.running["auc"] == [0.7, 0.8]
    assert "vector" not in core.running and "vector" not in core.epochs
    # The kinds are asked for once per fit, and again after `begin_fit`.
    assert calls == [1]
    assert one_epoch(core, logs, epoch=1, kinds={"loss": MEAN, "auc": None}) == []
    core.begin_fit()
    assert one_epoch(core, logs, epoch=0, kinds={"loss": MEAN, "auc": None}) == [1]


def test_steps_and_columns_continue_across_fits():
    """A name first seen later is NaN in earlier rows; `step` keeps counting."""
    core = HistoryCore()
    core.begin_fit()
    one_epoch(core, {0: {"loss": 1.0}, 1: {"loss": 2.0}})
    core.begin_fit()
    one_epoch(core, {0: {"loss": 3.0, "mae": 1.0}}, kinds={"loss": MEAN, "mae": MEAN})
    assert core.batches["step"] == [1, 2, 3]
    assert core.batches["epoch"] == [0, 0, 0]
    assert core.epochs["step"] == [2, 3]
    np.testing.assert_allclose(core.batches["loss"], [1.0, 3.0, 3.0])
    assert math.isnan(core.batches["mae"][0]) and core.batches["mae"][2] == 1.0


def test_logs_added_after_the_epoch_closed_reach_its_row():
    """`LearningRateScheduler`, listed later, adds `learning_rate` to the same logs dict."""
    core = HistoryCore()
    epoch_logs = {"loss": 1.0, "val_loss": 2.0}
    one_epoch(core, {0: {"loss": 1.0}}, epoch_logs=epoch_logs)
    epoch_logs["learning_rate"] = 0.1
    assert "learning_rate" not in core.epochs
    one_epoch(core, {0: {"loss": 0.5}}, epoch=1, epoch_logs={"loss": 0.5, "val_loss": 1.0})
    core.complete_epoch()
    assert core.epochs["learning_rate"][0] == 0.1 and math.isnan(core.epochs["learning_rate"][1])
    assert core.epochs["val_loss"] == [2.0, 1.0]


def test_metrics_filter_the_names_and_are_checked_against_the_logs():
    core = HistoryCore(metrics=["loss"])
    logs = {0: {"loss": 1.0, "accuracy": 0.5}}
    one_epoch(core, logs, epoch_logs={"loss": 1.0, "accuracy": 0.5, "val_loss": 2.0})
    assert set(core.batches) == set(core.running) == {"epoch", "step", "loss"}
    assert set(core.epochs) == {"epoch", "step", "loss", "val_loss"}

    unknown = HistoryCore(metrics=["loss", "acc"])
    with pytest.raises(ValueError, match=r"\['acc'\] are not in the training logs.*accuracy"):
        one_epoch(unknown, logs, epoch_logs={"loss": 1.0, "accuracy": 0.5})


def test_exports_read_back_the_tables():
    core = HistoryCore()
    running = running_means([1.0, math.inf])
    one_epoch(core, {0: {"loss": float(running[0])}, 1: {"loss": float(running[1])}})
    rows = list(csv.DictReader(io.StringIO(core.csv_text())))
    assert [r["table"] for r in rows] == ["batches"] * 2 + ["running"] * 2 + ["epochs"]
    assert [float(r["loss"]) for r in rows[:2]] == core.batches["loss"]
    tables = json.loads(core.json_text())
    assert tables["batches"]["loss"] == [1.0, None]
    assert core.to_dict() == {
        "batches": core.batches,
        "running": core.running,
        "epochs": core.epochs,
    }
    assert core.to_dict()["batches"]["loss"] is not core.batches["loss"]


def test_the_core_imports_no_keras():
    """The core is plain Python: it must not import Keras (or anything of keras_extras)."""
    tree = ast.parse(open(_history.__file__).read())
    imported = [
        alias.name for n in ast.walk(tree) if isinstance(n, ast.Import) for alias in n.names
    ]
    imported += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [name for name in imported if name.split(".")[0] in ("keras", "keras_extras")]
