"""The model, data and training run that every scale-out example shares.

Each engine's example trains this run twice, once on one device and once
distributed, and checks that the numbers agree. The pieces here are what must be
equal on both sides: the data and its order, the global batch, the initial
weights, plain SGD, and a `ScheduledDropout` whose batch counter must count
global batches. Its rate is 0 under tf.distribute, where each replica draws its
own masks, and `DROPOUT_RATE` on JAX, which draws the global batch's mask
whatever the sharding. The model has two heads: a value with dense targets and
a class with sparse integer labels, each with a `keras_extras.RMSE`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import keras
import numpy as np

import keras_extras
from keras_extras_core.files import atomic_write

GLOBAL_BATCH = 16
EPOCHS = 2
# Whole global batches for training: Keras weights the replicas' gradients
# equally, so a short last batch split unevenly (3 + 2) would not give the
# one-device step on TensorFlow, and JAX cannot split it at all (see
# docs/distribution.rst). The validation data ends with a short batch of 6.
TRAIN_SAMPLES = 64
VAL_SAMPLES = 22
FEATURES = 4
RTOL = 1e-5
# The dropout rate where the engine draws the global batch's mask (JAX).
DROPOUT_RATE = 0.3
# Training runs 8 batches, then 4 more after a reload from a `.keras` file: the
# rate is still rising then, so a lost counter would change the numbers.
WARMUP_STEPS = 16
RESUMED_EPOCHS = 1
# In the second half of each global batch, the value that splits class 1 from 2.
CLASS_EDGE = 3.0
# `TrainingPlotter`'s files: one per epoch, and the one rewritten at each epoch.
PLOT_FILES = [f"epoch_{epoch}.png" for epoch in range(1, EPOCHS + 1)] + ["training.png"]


def make_data() -> tuple[np.ndarray, dict, np.ndarray, dict]:
    """Train and validation data, float32, in a fixed order.

    A distributed step hands each replica a contiguous slice of the global
    batch. The targets of the second half of every batch are shifted by +3, so
    each replica's part of the loss differs from the others': a result that
    dropped or double-counted one replica would be far off (see
    `replica_sensitivity`). The labels differ between the halves too: class 0
    in the first half, classes 1 and 2 (by the value) in the second, so a
    classifier that has learnt the classes' frequencies errs differently on
    the two halves and the sparse RMSE moves as well.

    Returns:
        `(x, y, x_val, y_val)`, each target `{"value": ..., "label": ...}`
        (float32 values of shape `(n, 1)`, int32 labels of shape `(n,)`).
    """
    rng = np.random.default_rng(6)
    w = rng.normal(size=(FEATURES, 1))

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng.normal(size=(n, FEATURES))
        y = x @ w + 0.1 * rng.normal(size=(n, 1))
        y[second_halves(n)] += 3.0
        return x.astype("float32"), y.astype("float32")

    def targets(y: np.ndarray) -> dict[str, np.ndarray]:
        label = np.where(y[:, 0] < CLASS_EDGE, 1, 2)
        label[~second_halves(len(y))] = 0
        return {"value": y, "label": label.astype("int32")}

    x, y = split(TRAIN_SAMPLES)
    x_val, y_val = split(VAL_SAMPLES)
    return x, targets(y), x_val, targets(y_val)


def second_halves(n: int, batch: int = GLOBAL_BATCH) -> np.ndarray:
    """The sample positions in the second half of each global batch of `n` samples."""
    position = np.arange(n) % batch
    size = np.minimum(batch, n - (np.arange(n) // batch) * batch)
    return position >= (size + 1) // 2


def build_model(seed: int = 0, rate: float = 0.0) -> keras.Model:
    """A two-headed `CustomModel`: a value with MSE and dense RMSE, a class with sparse RMSE.

    Call it inside the distribution scope (`strategy.scope()`, or with the
    Keras distribution set) so that its variables are created there.

    Args:
        seed: Seed of the initial weights and of the dropout masks.
        rate: `ScheduledDropout`'s final rate, reached after `WARMUP_STEPS`.

    Returns:
        The model, compiled with plain SGD.
    """
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(FEATURES,))
    hidden = keras.layers.Dense(8, activation="tanh")(inputs)
    hidden = keras_extras.ScheduledDropout(
        rate,
        schedule=keras_extras.LinearWarmupSchedule(warmup_steps=WARMUP_STEPS),
        seed=seed,
        name="dropout",
    )(hidden)
    outputs = {
        "value": keras.layers.Dense(1, name="value")(hidden),
        "label": keras.layers.Dense(3, activation="softmax", name="label")(hidden),
    }
    model = keras_extras.CustomModel(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.05),
        loss={"value": "mean_squared_error", "label": "sparse_categorical_crossentropy"},
        metrics={"value": [keras_extras.RMSE()], "label": [keras_extras.RMSE()]},
    )
    return model


def train(
    model: keras.Model,
    plot_folder: str | None = None,
    extra_callbacks: list[keras.callbacks.Callback] = (),
    data: tuple | None = None,
    batch_size: int = GLOBAL_BATCH,
) -> dict[str, Any]:
    """Fits `model` for `EPOCHS` epochs with validation data, then evaluates it.

    Args:
        model: A model from `build_model`.
        plot_folder: Where `TrainingPlotter` draws (`PLOT_FILES`); None draws
            nothing. In a multi-process run, one process draws.
        extra_callbacks: More callbacks for `fit`.
        data: `(x, y, x_val, y_val)`; `make_data()` when None. A process of a
            multi-process run passes its share of every global batch.
        batch_size: The batch `fit` and `evaluate` cut `data` into: the
            global batch, or a process's share of it.

    Returns:
        Plain numbers, JSON-able: `history` (epoch-level logs), `batches`
        (`LossHistory`'s per-batch losses), `evaluate`, the final `weights`
        and the dropout layer's batch counter `dropout_iterations`; with
        `plot_folder`, `plotted_epochs`: the epoch table of the plotter's
        history, which is what it draws.
    """
    x, y, x_val, y_val = make_data() if data is None else data
    recorder = keras_extras.LossHistory()
    callbacks = [recorder, *extra_callbacks]
    if plot_folder is not None:
        plotter = keras_extras.TrainingPlotter(
            plot_folder, snapshot="epoch_{epoch}.png", history=recorder
        )
        callbacks.append(plotter)
    history = model.fit(
        x,
        y,
        batch_size=batch_size,
        epochs=EPOCHS,
        validation_data=(x_val, y_val),
        shuffle=False,
        callbacks=callbacks,
        verbose=0,
    )
    evaluation = model.evaluate(x_val, y_val, batch_size=batch_size, verbose=0, return_dict=True)
    results = {
        "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
        "evaluate": {k: float(v) for k, v in evaluation.items()},
        "weights": [w.tolist() for w in model.get_weights()],
        "dropout_iterations": dropout_iterations(model),
    }
    if plot_folder is not None:
        results["plotted_epochs"] = {k: [float(v) for v in vs] for k, vs in recorder.epochs.items()}
    # Only the loss: under tf.distribute Keras logs each step's metrics as
    # the mean of the replicas' own results, which for a root of a mean
    # (RMSE) is not the global value; the epoch-end values are exact.
    results["batches"] = {"loss": [float(v) for v in recorder.batches["loss"]]}
    return results


def dropout_iterations(model: keras.Model) -> int:
    """The batches `ScheduledDropout` has counted, as this process reads them."""
    return int(keras.ops.convert_to_numpy(model.get_layer("dropout").iterations.value))


def resume(
    model: keras.Model,
    data: tuple | None = None,
    batch_size: int = GLOBAL_BATCH,
    scope: Callable[[], AbstractContextManager] = contextlib.nullcontext,
) -> dict:
    """Trains `RESUMED_EPOCHS` more epochs, as `train` does; returns their numbers.

    Args:
        model: A trained model, or one loaded from its `.keras` file.
        data: As for `train`.
        batch_size: As for `train`.
        scope: Makes the distribution's scope for `fit` (`strategy.scope`,
            `distribution.scope`). The numbers are read outside it: under
            `MultiWorkerMirroredStrategy`, a variable read in the scope is not
            an array.

    Returns:
        `history`, `weights` and `dropout_iterations`, as `train` returns them.
    """
    x, y, _, _ = make_data() if data is None else data
    with scope():
        history = model.fit(
            x, y, batch_size=batch_size, epochs=RESUMED_EPOCHS, shuffle=False, verbose=0
        )
    return {
        "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
        "weights": [w.tolist() for w in model.get_weights()],
        "dropout_iterations": dropout_iterations(model),
    }


def save_atomically(model: keras.Model, path: str) -> None:
    """`model.save(path)`, so that a reader never sees half a file."""
    with tempfile.TemporaryDirectory(dir=os.path.dirname(path) or None) as folder:
        tmp = os.path.join(folder, "model.keras")
        model.save(tmp)
        with open(tmp, "rb") as f:
            atomic_write(path, f.read())


def resume_from_file(
    path: str,
    scope: Callable[[], AbstractContextManager],
    data: tuple | None = None,
    batch_size: int = GLOBAL_BATCH,
) -> dict[str, Any]:
    """Loads the model saved at `path` inside the distribution's scope and trains on.

    Args:
        path: The `.keras` file.
        scope: Makes the scope where the loaded variables belong
            (`strategy.scope`, `distribution.scope`: the method, not called).
        data: As for `train`.
        batch_size: As for `train`.

    Returns:
        `loaded_iterations` (the dropout counter the file carried) and
        `resumed` (what `resume` returns).
    """
    with scope():
        model = keras.saving.load_model(path)
    loaded = dropout_iterations(model)
    return {"loaded_iterations": loaded, "resumed": resume(model, data, batch_size, scope)}


def expected_resumed_iterations() -> int:
    """What the dropout counter must read after `resume`."""
    return expected_dropout_iterations() + RESUMED_EPOCHS * math.ceil(TRAIN_SAMPLES / GLOBAL_BATCH)


def expected_dropout_iterations() -> int:
    """The training batches `train` runs: what the dropout counter must read."""
    return EPOCHS * math.ceil(TRAIN_SAMPLES / GLOBAL_BATCH)


def compare(results: dict[str, Any], reference: dict[str, Any], rtol: float = RTOL) -> list[str]:
    """The differences between a distributed run and the one-device reference.

    Args:
        results: What `train` returned for the distributed run.
        reference: What `train` returned on one device.
        rtol: The relative tolerance.

    Returns:
        One line per value that differs by more than `rtol` (relative to the
        reference) or is missing; an empty list when everything agrees.
    """
    problems = []

    def check(name: str, got: Any, want: Any) -> None:
        got, want = np.asarray(got, dtype="float64"), np.asarray(want, dtype="float64")
        if got.shape != want.shape:
            problems.append(f"{name}: shape {got.shape}, expected {want.shape}")
        elif not np.allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max()):
            problems.append(f"{name}: {got.ravel()[:6]} != {want.ravel()[:6]} (rtol {rtol})")

    for section in ("history", "evaluate", "batches"):
        for key, want in reference.get(section, {}).items():
            if key not in results.get(section, {}):
                problems.append(f"{section}[{key!r}] is missing")
            else:
                check(f"{section}[{key!r}]", results[section][key], want)
    for i, (got, want) in enumerate(zip(results["weights"], reference["weights"])):
        check(f"weights[{i}]", got, want)
    if results["dropout_iterations"] != reference["dropout_iterations"]:
        problems.append(
            f"dropout_iterations: {results['dropout_iterations']}, "
            f"expected {reference['dropout_iterations']}"
        )
    return problems


def replica_sensitivity(
    model: keras.Model, x_val: Any = None, y_val: Any = None
) -> dict[str, float]:
    """How far the validation values move if one replica's half were dropped or doubled.

    It evaluates `model` (on one device) on the validation data with the
    second half of every global batch removed, and with it counted twice.
    Both must differ from the full evaluation by far more than `RTOL`,
    otherwise `compare` could not see such a fault.

    Args:
        model: A trained model, on one device.
        x_val: Validation inputs; `make_data()`'s when None.
        y_val: Validation targets (an array, or a dict for several outputs).

    Returns:
        The relative change of each value `evaluate` reports, the smaller of
        the two faults.
    """
    if x_val is None:
        _, _, x_val, y_val = make_data()

    def evaluate(rows: np.ndarray) -> dict[str, float]:
        x, y = keras.tree.map_structure(lambda a: a[rows], (x_val, y_val))
        return model.evaluate(x, y, verbose=0, return_dict=True)

    every = np.arange(len(x_val))
    second = np.flatnonzero(second_halves(len(x_val)))
    full = evaluate(every)
    dropped = evaluate(np.setdiff1d(every, second))
    doubled = evaluate(np.concatenate([every, second]))
    return {
        key: min(abs(fault[key] - full[key]) / abs(full[key]) for fault in (dropped, doubled))
        for key in full
    }


def write_json(path: str, payload: Any) -> None:
    """Writes `payload` to `path` atomically (a temp file beside it, then a rename)."""
    atomic_write(path, json.dumps(payload))


def report_run(results: dict[str, Any], reference: dict[str, Any], label: str) -> int:
    """Reports `compare` of a run and of its epoch resumed from a `.keras` file; the exit status."""
    resumed = compare(results["resumed"], reference["resumed"])
    return report(compare(results, reference), label) | report(
        resumed, f"{label}, resumed from .keras"
    )


def report(problems: list[str], label: str) -> int:
    """Prints the outcome of `compare`; returns the exit status for `main`."""
    if problems:
        print(f"{label}: MISMATCH with the one-device run")
        for line in problems:
            print("  " + line)
        return 1
    print(
        f"{label}: every logged value, evaluate, the weights and the dropout counter "
        f"equal the one-device run to rtol {RTOL}"
    )
    return 0
