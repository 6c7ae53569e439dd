"""`keras-extras demo`: the package's components training a digits classifier.

The demo trains a small classifier on scikit-learn's digits (or on MNIST, from a
local `mnist.npz`): a `CustomModel` with a `ScheduledDropout` layer, the `RMSE` and
accuracy metrics, and EarlyStopping, ModelCheckpoint, TensorBoard and a
`TrainingPlotter`. It prints a table of train, validation and test results, then
reloads the checkpoint and checks that its predictions equal the in-memory model's.
Everything it writes goes under `--out`.

Keras reads its backend once, when it is first imported, and `import keras_extras`
imports it. So when `--backend` names another backend than the one loaded, the
command runs itself again in a fresh process with `KERAS_BACKEND` set.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import keras
import numpy as np

import keras_extras
from keras_extras._files import atomic_write

BACKENDS = ("tensorflow", "jax", "torch")
MNIST_ARRAYS = ("x_train", "y_train", "x_test", "y_test")
NUM_CLASSES = 10


class UsageError(Exception):
    """A bad argument: reported on one line, with exit code 2."""


def add_parser(subparsers: Any) -> None:
    """Adds the `demo` command to the `keras-extras` parser.

    Args:
        subparsers: What `argparse.ArgumentParser.add_subparsers` returned.
    """
    parser = subparsers.add_parser(
        "demo",
        help="train a digits classifier with keras_extras' components",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=keras.backend.backend(),
        help="Keras backend (default: the one Keras is configured with, "
        f"now {keras.backend.backend()})",
    )
    parser.add_argument(
        "--epochs",
        type=_positive_int,
        default=15,
        metavar="N",
        help="most epochs to train (default: 15)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        metavar="PATH",
        help="an mnist.npz as keras.datasets.mnist saves it (default: scikit-learn's digits)",
    )
    parser.add_argument(
        "--seed", type=_seed, default=0, metavar="N", help="random seed (default: 0)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        default=Path("keras-extras-demo"),
        help="folder for everything the demo writes (default: ./keras-extras-demo/)",
    )
    parser.set_defaults(command=main)


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def _positive_int(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seed(text: str) -> int:
    value = _integer(text)
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be in [0, 2**32), got {value}")
    return value


def main(args: argparse.Namespace, argv: list[str]) -> int:
    """Runs the demo for parsed `args`.

    Args:
        args: The parsed command line.
        argv: The command line itself, to run again under another backend.

    Returns:
        The exit code: 0 on success, 1 if the reloaded checkpoint disagrees with
        the trained model or a package is missing, 2 for a bad argument.
    """
    if args.backend != keras.backend.backend():
        return _rerun_with_backend(args.backend, argv)
    try:
        plots = hasattr(keras_extras, "TrainingPlotter")
        if plots and importlib.util.find_spec("matplotlib") is None:
            raise ImportError(
                "the training plot needs matplotlib: pip install 'keras-extras[demo]'"
            )
        data = load_data(args.data, args.seed)
        out = _writable_folder(args.out)
    except UsageError as error:
        _error(str(error))
        return 2
    except ImportError as error:
        _error(str(error))
        return 1
    return run(data, out, epochs=args.epochs, seed=args.seed)


def _error(message: str) -> None:
    print(f"keras-extras demo: error: {message}", file=sys.stderr)


def _rerun_with_backend(backend: str, argv: list[str]) -> int:
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[backend]
    if importlib.util.find_spec(module) is None:
        _error(f"backend {backend!r} is not installed: pip install 'keras-extras[{backend}]'")
        return 2
    env = dict(os.environ, KERAS_BACKEND=backend)
    return subprocess.call([sys.executable, "-m", "keras_extras", *argv], env=env)


def _writable_folder(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise UsageError(f"cannot write to --out {str(path)!r}: {error.strerror}") from None
    return path


def load_data(path: Path | None, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The train, validation and test splits, as flat float32 images and int labels.

    Without `path`, scikit-learn's digits (8x8 images): 20% of them for testing,
    then 20% of the rest for validation, stratified by class. With `path`, the
    MNIST arrays it holds: its test set for testing, and 10% of its training set
    for validation.

    Args:
        path: An `.npz` file with `x_train`, `y_train`, `x_test` and `y_test`,
            as `keras.datasets.mnist` saves them, or None for the digits.
        seed: Seeds the split.

    Returns:
        `{"train": (x, y), "validation": (x, y), "test": (x, y)}`.

    Raises:
        UsageError: if the file cannot be read or is not in that format; the
            message names the file and the problem.
        ImportError: if the digits are asked for and scikit-learn is missing.
    """
    if path is None:
        return _digits(seed)
    x_train, y_train, x_test, y_test = _read_mnist(path)
    order = np.random.default_rng(seed).permutation(len(x_train))
    n_val = max(1, len(x_train) // 10)
    val, train = order[:n_val], order[n_val:]
    return {
        "train": (x_train[train], y_train[train]),
        "validation": (x_train[val], y_train[val]),
        "test": (x_test, y_test),
    }


def _digits(seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise ImportError(
            "the digits data needs scikit-learn: pip install 'keras-extras[demo]' "
            "(or pass --data mnist.npz)"
        ) from None
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    x, x_test, y, y_test = train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=0.2, random_state=seed, stratify=y
    )
    return {
        "train": (x_train, y_train.astype("int32")),
        "validation": (x_val, y_val.astype("int32")),
        "test": (x_test, y_test.astype("int32")),
    }


def _read_mnist(path: Path) -> tuple[np.ndarray, ...]:
    where = f"--data {str(path)!r}"
    try:
        with open(path, "rb"):
            pass
        is_zip = zipfile.is_zipfile(path)
    except OSError as error:
        raise UsageError(f"{where} cannot be read: {error.strerror or error}") from None
    if not is_zip:
        raise UsageError(f"{where} is not an .npz file (a zip archive of .npy arrays)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [name for name in MNIST_ARRAYS if name not in npz.files]
            if missing:
                raise UsageError(
                    f"{where} lacks the arrays {missing}; an mnist.npz holds "
                    f"{', '.join(MNIST_ARRAYS)}"
                )
            arrays = [npz[name] for name in MNIST_ARRAYS]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise UsageError(f"{where} is damaged or not in .npz format: {error}") from None
    x_train, y_train, x_test, y_test = arrays
    for x_name, x, y_name, y in (
        ("x_train", x_train, "y_train", y_train),
        ("x_test", x_test, "y_test", y_test),
    ):
        if x.ndim != 3 or x.shape[0] == 0 or not np.issubdtype(x.dtype, np.number):
            raise UsageError(
                f"{where}: {x_name} must hold images of shape (N, height, width), "
                f"but it has shape {x.shape} and dtype {x.dtype}"
            )
        if y.shape != (x.shape[0],):
            raise UsageError(
                f"{where}: {y_name} must have shape ({x.shape[0]},), one label per "
                f"image of {x_name}, but it has shape {y.shape}"
            )
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= NUM_CLASSES:
            raise UsageError(
                f"{where}: {y_name} must hold integer labels 0 to {NUM_CLASSES - 1}, "
                f"but it holds {y.dtype} values from {y.min()} to {y.max()}"
            )
    if x_train.shape[1:] != x_test.shape[1:]:
        raise UsageError(
            f"{where}: x_train images are {x_train.shape[1:]} but x_test images are "
            f"{x_test.shape[1:]}"
        )
    if len(x_train) < 2:
        raise UsageError(f"{where}: x_train needs at least 2 images, it has {len(x_train)}")
    scale = 255.0 if x_train.max() > 1 else 1.0

    def flat(x: np.ndarray) -> np.ndarray:
        return (x.reshape(len(x), -1) / scale).astype("float32")

    return flat(x_train), y_train.astype("int32"), flat(x_test), y_test.astype("int32")


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
    notes = []
    if importlib.util.find_spec("tensorflow") and importlib.util.find_spec("tensorboard"):
        callbacks.append(keras.callbacks.TensorBoard(log_dir=out / "logs"))
    else:
        notes.append("TensorBoard logs skipped: they need the tensorflow and tensorboard packages")
    plotter = keras_extras.TrainingPlotter(out)
    callbacks.append(plotter)
    return callbacks, plotter, notes


def run(data: dict[str, tuple[np.ndarray, np.ndarray]], out: Path, epochs: int, seed: int) -> int:
    """Trains, reports, reloads and checks; see the module docstring.

    Args:
        data: The splits, as `load_data` returns them.
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


def _write_json(path: Path, content: dict) -> None:
    atomic_write(path, json.dumps(content, indent=2) + "\n")
