"""The model, data and training run that every scale-out example shares.

Each engine's example trains this run twice, once on one device and once
distributed, and checks that the numbers agree. The pieces here are what must be
equal on both sides: the data and its order, the global batch, the initial
weights, plain SGD, and a `ScheduledDropout` at rate 0 (its random masks cannot
match across a different number of devices; its batch counter still has to).
"""

from __future__ import annotations

import json
import math
from typing import Any

import keras
import numpy as np

import keras_extras
from keras_extras._files import atomic_write

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


def make_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train and validation data, float32, in a fixed order.

    A distributed step hands each replica a contiguous slice of the global
    batch. The targets of the second half of every batch are shifted by +3, so
    each replica's part of the loss differs from the others': a result that
    dropped or double-counted one replica would be far off (see
    `replica_sensitivity`).

    Returns:
        `(x, y, x_val, y_val)`.
    """
    rng = np.random.default_rng(6)
    w = rng.normal(size=(FEATURES, 1))

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng.normal(size=(n, FEATURES))
        y = x @ w + 0.1 * rng.normal(size=(n, 1))
        y[second_halves(n)] += 3.0
        return x.astype("float32"), y.astype("float32")

    x, y = split(TRAIN_SAMPLES)
    x_val, y_val = split(VAL_SAMPLES)
    return x, y, x_val, y_val


def second_halves(n: int, batch: int = GLOBAL_BATCH) -> np.ndarray:
    """The sample positions in the second half of each global batch of `n` samples."""
    position = np.arange(n) % batch
    size = np.minimum(batch, n - (np.arange(n) // batch) * batch)
    return position >= (size + 1) // 2


def build_model(seed: int = 0) -> keras.Model:
    """A tiny regression model, compiled with SGD, MSE and `keras_extras.RMSE`.

    Call it inside the distribution scope (`strategy.scope()`, or with the
    Keras distribution set) so that its variables are created there.

    Args:
        seed: Seed of the initial weights.

    Returns:
        The compiled model.
    """
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(FEATURES,))
    hidden = keras.layers.Dense(8, activation="tanh")(inputs)
    hidden = keras_extras.ScheduledDropout(0.0, seed=seed, name="dropout")(hidden)
    outputs = keras.layers.Dense(1)(hidden)
    model = keras_extras.CustomModel(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.05),
        loss="mean_squared_error",
        metrics=[keras_extras.RMSE()],
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
        plot_folder: Where `TrainingPlotter` draws; None draws nothing.
        extra_callbacks: More callbacks for `fit`.
        data: `(x, y, x_val, y_val)`; `make_data()` when None. A process of a
            multi-process run passes its share of every global batch.
        batch_size: The batch `fit` and `evaluate` cut `data` into: the
            global batch, or a process's share of it.

    Returns:
        Plain numbers, JSON-able: `history` (epoch-level logs), `batches`
        (`LossHistory`'s per-batch losses), `evaluate`, the final `weights`
        and the dropout layer's batch counter `dropout_iterations`.
    """
    x, y, x_val, y_val = make_data() if data is None else data
    recorder = keras_extras.LossHistory()
    callbacks = [recorder, *extra_callbacks]
    if plot_folder is not None:
        callbacks.append(keras_extras.TrainingPlotter(plot_folder, history=recorder))
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
        "dropout_iterations": int(
            keras.ops.convert_to_numpy(model.get_layer("dropout").iterations.value)
        ),
    }
    # Only the loss: under tf.distribute Keras logs each step's metrics as
    # the mean of the replicas' own results, which for a root of a mean
    # (RMSE) is not the global value; the epoch-end values are exact.
    results["batches"] = {"loss": [float(v) for v in recorder.batches["loss"]]}
    return results


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
