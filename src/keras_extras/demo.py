"""The training side of `keras-extras demo`: the package's components on a digits classifier.

`run` trains a small classifier (a `CustomModel` with a `ScheduledDropout` layer, the
`RMSE` and accuracy metrics) with EarlyStopping, ModelCheckpoint, TensorBoard logs
and a `TrainingPlotter`. It prints a table of train, validation and test results,
then reloads the checkpoint and checks that its predictions equal the in-memory
model's. The command line, the data and the choice of backend are in
`keras_extras_cli`, which imports this module only once the backend is set.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np

import keras_extras
from keras_extras_core.files import atomic_write

NUM_CLASSES = 10


def build_model(num_features: int, seed: int) -> keras.Model:
    """The demo's classifier: one hidden layer with dropout, and a softmax.

    Args:
        num_features: Pixels per image.
        seed: Seeds the dropout masks.

    Returns:
        The model, compiled with the RMSE and accuracy metrics.
    """
    inputs = keras.Input(shape=(num_features,), name="pixels")
    hidden = keras.layers.Dense(64, activation="relu", name="hidden")(inputs)
    dropout = keras_extras.ScheduledDropout(0.3, seed=seed, name="dropout")
    outputs = keras.layers.Dense(NUM_CLASSES, activation="softmax", name="digit")(dropout(hidden))
    model = keras_extras.CustomModel(inputs, outputs, name="digits_classifier")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=1e-2),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy", keras_extras.RMSE()],
    )
    return model


def _callbacks(out: Path) -> tuple[list[keras.callbacks.Callback], Any, list[str]]:
    callbacks: list[keras.callbacks.Callback] = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True),
        # Same monitor as EarlyStopping: the file holds the weights it restores.
        keras.callbacks.ModelCheckpoint(
            out / "checkpoint.keras", monitor="val_loss", save_best_only=True
        ),
    ]
    plotter = keras_extras.TrainingPlotter(out)
    callbacks.append(plotter)
    logs = out / "logs"
    if keras.backend.backend() == "tensorflow":
        callbacks.append(keras.callbacks.TensorBoard(log_dir=logs))
    elif importlib.util.find_spec("tensorboard") is not None:
        callbacks.append(_EpochSummaries(logs))
    else:
        return (
            callbacks,
            plotter,
            [
                "TensorBoard logs skipped: off TensorFlow they need the tensorboard package: "
                'pip install "keras-extras[demo]"'
            ],
        )
    return callbacks, plotter, [f"TensorBoard logs: tensorboard --logdir {shlex.quote(str(logs))}"]


class _EpochSummaries(keras.callbacks.Callback):
    """Epoch-level TensorBoard scalars, written without TensorFlow.

    Keras's `TensorBoard` callback writes through `tf.summary`, so it needs
    TensorFlow. On the other backends this writes the same scalars, under the same
    tags (`epoch_loss`, `epoch_accuracy`, ...) and runs (`train`, `validation`),
    with the `tensorboard` package's own numpy-only `tensorboard.summary.Writer`.

    Args:
        log_dir: The folder that `tensorboard --logdir` is given.
    """

    def __init__(self, log_dir: str | os.PathLike[str]) -> None:
        super().__init__()
        self.log_dir = log_dir
        self._writers: dict[str, Any] = {}

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        from tensorboard.summary import Writer

        self._writers = {
            run: Writer(os.path.join(self.log_dir, run)) for run in ("train", "validation")
        }

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        for name, value in (logs or {}).items():
            run, tag = ("validation", name[4:]) if name.startswith("val_") else ("train", name)
            self._writers[run].add_scalar(f"epoch_{tag}", float(value), step=epoch)
        for writer in self._writers.values():
            writer.flush()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers = {}


def run(data: dict[str, tuple[np.ndarray, np.ndarray]], out: Path, epochs: int, seed: int) -> int:
    """Trains, reports, reloads and checks; see the module docstring.

    Args:
        data: The splits, as `keras_extras_cli.data.load_data` returns them.
        out: An existing, writable folder.
        epochs: The most epochs to train.
        seed: Seeds the weights, the shuffling and the dropout.

    Returns:
        0, or 1 if the reloaded checkpoint's predictions differ.
    """
    start = time.perf_counter()
    keras.utils.set_random_seed(seed)
    (x_train, y_train), validation = data["train"], data["validation"]
    print(
        f"keras_extras {keras_extras.__version__} demo on the {keras.backend.backend()} "
        f"backend: {len(x_train)} training images of {x_train.shape[1]} pixels"
    )
    model = build_model(x_train.shape[1], seed)
    callbacks, plotter, notes = _callbacks(out)
    history = model.fit(
        x_train,
        y_train,
        batch_size=128,
        epochs=epochs,
        validation_data=validation,
        callbacks=callbacks,
        verbose=1,
    )
    plotter.history.to_csv(out / "history.csv")

    results = {
        split: model.evaluate(x, y, batch_size=256, verbose=0, return_dict=True)
        for split, (x, y) in data.items()
    }
    table = format_table(results, {split: len(y) for split, (_, y) in data.items()})
    print()
    print(table)

    x_test = data["test"][0]
    restored = keras.models.load_model(out / "checkpoint.keras")
    expected = model.predict(x_test, batch_size=256, verbose=0)
    reloaded = restored.predict(x_test, batch_size=256, verbose=0)
    difference = float(np.max(np.abs(expected - reloaded)))
    match = difference <= 1e-6
    print(
        f"\nreloaded {out / 'checkpoint.keras'}: its predictions "
        f"{'equal' if match else 'DIFFER FROM'} the trained model's "
        f"(largest difference {difference:.1e})"
    )
    _write_json(
        out / "results.json",
        {
            "backend": keras.backend.backend(),
            "epochs_run": len(history.history["loss"]),
            "seed": seed,
            "results": results,
            "checkpoint_predictions_match": match,
            "largest_difference": difference,
        },
    )
    for note in notes:
        print(note)
    written = sorted(p.relative_to(out).as_posix() for p in out.iterdir())
    print(f"wrote under {out}/: {', '.join(written)}")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0 if match else 1


def format_table(results: dict[str, dict[str, float]], sizes: dict[str, int]) -> str:
    """The results as a text table, one row per split.

    Args:
        results: Maps a split to `evaluate`'s dict.
        sizes: Maps a split to its number of samples.

    Returns:
        The table, without a trailing newline.
    """
    columns = ["loss", "accuracy", "rmse"]
    lines = [f"{'split':<12}{'samples':>8}" + "".join(f"{c:>10}" for c in columns)]
    for split, logs in results.items():
        lines.append(
            f"{split:<12}{sizes[split]:>8}" + "".join(f"{logs[c]:>10.4f}" for c in columns)
        )
    return "\n".join(lines)


def _write_json(path: Path, content: dict[str, Any]) -> None:
    atomic_write(path, json.dumps(content, indent=2) + "\n")
