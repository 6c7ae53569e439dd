"""The demo's data and output folder, read and checked before any backend is imported.

Nothing here imports Keras: a bad `--data` or `--out` is reported in a fraction of a
second, and scikit-learn is imported only to load its digits.
"""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

import numpy as np

from keras_extras_cli import UsageError

MNIST_ARRAYS = ("x_train", "y_train", "x_test", "y_test")
NUM_CLASSES = 10


def writable_folder(path: Path) -> Path:
    """Creates `path` if needed and checks that files can be written there.

    Args:
        path: The `--out` folder.

    Returns:
        `path`.

    Raises:
        UsageError: if the folder cannot be created or written to.
    """
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
            'the digits data needs scikit-learn: pip install "keras-extras[demo]" '
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
