"""`keras-extras demo`: end to end in a fresh process, and its one-line errors."""

from __future__ import annotations

import csv
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_extras  # noqa: F401  (registers the classes the checkpoint holds)
import keras_extras_cli
from keras_extras_cli import main
from keras_extras_cli.data import load_data

BACKEND = keras.backend.backend()
ROOT = Path(__file__).resolve().parent.parent


def run_demo(*args: str, env_backend: str = BACKEND) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        KERAS_BACKEND=env_backend,
        # The child imports the keras_extras that this process tests.
        PYTHONPATH=os.pathsep.join(
            [str(Path(keras_extras_cli.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
        ),
    )
    # The command silences TensorFlow's logging itself, unless these are set.
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    env.pop("TF_ENABLE_ONEDNN_OPTS", None)
    return subprocess.run(
        [sys.executable, "-m", "keras_extras_cli", "demo", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _logged(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    events = EventAccumulator(str(run_dir))
    events.Reload()
    return [(e.step, float(make_ndarray(e.tensor_proto))) for e in events.Tensors(tag)]


def test_demo_end_to_end(tmp_path):
    out = tmp_path / "out"
    # Start under another installed backend, so that --backend has to take effect.
    cycle = ["jax", "torch", "tensorflow", "jax", "torch"]
    start = cycle.index(BACKEND) + 1
    other = next((b for b in cycle[start : start + 2] if importlib.util.find_spec(b)), BACKEND)
    proc = run_demo(
        "--backend", BACKEND, "--epochs", "2", "--seed", "3", "--out", str(out), env_backend=other
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Epoch 2/2" in proc.stdout  # the progress bar
    assert "its predictions equal the trained model's" in proc.stdout
    # Neither TensorFlow's start-up banner nor any other line on stderr.
    assert proc.stderr == "", proc.stderr[-3000:]

    report = json.loads((out / "results.json").read_text())
    assert report["backend"] == BACKEND
    assert report["epochs_run"] == 2
    assert report["checkpoint_predictions_match"] is True
    epochs = [row for row in _csv_rows(out / "history.csv") if row["table"] == "epochs"]
    assert len(epochs) == 2
    if BACKEND != "tensorflow" and importlib.util.find_spec("tensorboard") is None:
        # Off TensorFlow without the [demo] extra's tensorboard: no logs, and it says why.
        assert (
            "TensorBoard logs skipped: off TensorFlow they need the tensorboard package: "
            'pip install "keras-extras[demo]"\n'
        ) in proc.stdout
        assert not (out / "logs").exists()
    else:
        assert f"TensorBoard logs: tensorboard --logdir {out / 'logs'}\n" in proc.stdout
        # The TensorBoard logs (Keras's callback on TensorFlow, tensorboard's own
        # writer elsewhere) hold each epoch's loss as LossHistory recorded it.
        for run, column in (("train", "loss"), ("validation", "val_loss")):
            assert _logged(out / "logs" / run, "epoch_loss") == [
                (i, pytest.approx(float(row[column]), rel=1e-6)) for i, row in enumerate(epochs)
            ]
    from PIL import Image

    with Image.open(out / "training.png") as image:
        assert image.format == "PNG"
        assert np.asarray(image.convert("L")).std() > 0

    # The printed table is the checkpoint's performance, recomputed here with NumPy.
    header, *rows = proc.stdout.split("\nsplit")[1].strip().splitlines()[:4]
    assert header.split() == ["samples", "loss", "accuracy", "rmse"]
    data = load_data(None, seed=3)
    model = keras.models.load_model(out / "checkpoint.keras")
    for row in rows:
        split, samples, loss, accuracy, rmse = row.split()
        x, y = data[split]
        probs = model.predict(x, verbose=0).astype("float64")
        assert int(samples) == len(y)
        np.testing.assert_allclose(
            float(loss), -np.log(probs[np.arange(len(y)), y]).mean(), atol=1e-4
        )
        np.testing.assert_allclose(float(accuracy), (probs.argmax(axis=1) == y).mean(), atol=1e-4)
        np.testing.assert_allclose(
            float(rmse), np.sqrt(np.mean((probs - np.eye(10)[y]) ** 2)), atol=1e-4
        )
        np.testing.assert_allclose(report["results"][split]["accuracy"], float(accuracy), atol=1e-4)


@pytest.mark.backends("tensorflow", reason="the MNIST path is backend-neutral; one run suffices")
def test_demo_on_a_local_mnist_file(tmp_path):
    rng = np.random.default_rng(0)
    # Digits drawn as bright squares at a position per class: learnable in 2 epochs.
    labels = rng.integers(0, 10, 700)
    images = rng.integers(0, 40, (700, 28, 28)).astype("uint8")
    for i, label in enumerate(labels):
        images[i, 2 * label : 2 * label + 6, 4:24] = 255
    np.savez(
        tmp_path / "mnist.npz",
        x_train=images[:600],
        y_train=labels[:600],
        x_test=images[600:],
        y_test=labels[600:],
    )
    out = tmp_path / "out"
    proc = run_demo("--data", str(tmp_path / "mnist.npz"), "--epochs", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "results.json").read_text())
    assert report["results"]["test"]["accuracy"] > 0.9
    assert "540 training images of 784 pixels" in proc.stdout


def test_load_data_splits_digits_and_mnist(tmp_path):
    digits = load_data(None, seed=0)
    assert {split: len(y) for split, (_, y) in digits.items()} == {
        "train": 1149,
        "validation": 288,
        "test": 360,
    }
    assert digits["train"][0].shape[1] == 64 and digits["train"][0].max() == 1.0
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "m.npz",
        x_train=rng.integers(0, 256, (50, 28, 28), dtype="uint8"),
        y_train=rng.integers(0, 10, 50),
        x_test=np.zeros((7, 28, 28), "uint8"),
        y_test=np.arange(7),
    )
    mnist = load_data(tmp_path / "m.npz", seed=0)
    assert {split: x.shape for split, (x, _) in mnist.items()} == {
        "train": (45, 784),
        "validation": (5, 784),
        "test": (7, 784),
    }
    train_and_val = np.concatenate([mnist["train"][0], mnist["validation"][0]])
    assert train_and_val.max() <= 1.0 and len(np.unique(train_and_val, axis=0)) == 50


def _bad_files(folder: Path) -> dict[str, tuple[Path, str]]:
    zeros = np.zeros((4, 28, 28), "uint8")
    (folder / "text.npz").write_text("not an archive")
    np.save(folder / "single.npy", zeros)
    np.savez(folder / "wrong_keys.npz", images=zeros)
    np.savez(
        folder / "flat.npz",
        x_train=zeros.reshape(4, -1),
        y_train=np.arange(4),
        x_test=zeros,
        y_test=np.arange(4),
    )
    np.savez(
        folder / "short_labels.npz",
        x_train=zeros,
        y_train=np.arange(3),
        x_test=zeros,
        y_test=np.arange(4),
    )
    np.savez(
        folder / "label_10.npz",
        x_train=zeros,
        y_train=np.array([0, 1, 2, 10]),
        x_test=zeros,
        y_test=np.arange(4),
    )
    zipped = folder / "damaged.npz"
    np.savez(zipped, x_train=zeros, y_train=np.arange(4), x_test=zeros, y_test=np.arange(4))
    content = bytearray(zipped.read_bytes())
    content[len(content) // 3] ^= 0xFF  # inside x_train's data: a CRC mismatch
    zipped.write_bytes(bytes(content))
    return {
        "missing": (folder / "missing.npz", "cannot be read: No such file or directory"),
        "folder": (folder, "cannot be read"),
        "text": (folder / "text.npz", "is not an .npz file"),
        "single": (folder / "single.npy", "is not an .npz file"),
        "wrong_keys": (folder / "wrong_keys.npz", "lacks the arrays ['x_train', 'y_train'"),
        "flat": (folder / "flat.npz", "x_train must hold images of shape (N, height, width)"),
        "short_labels": (folder / "short_labels.npz", "y_train must have shape (4,)"),
        "label_10": (folder / "label_10.npz", "values from 0 to 10"),
        "damaged": (zipped, "is damaged or not in .npz format"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "folder",
        "text",
        "single",
        "wrong_keys",
        "flat",
        "short_labels",
        "label_10",
        "damaged",
    ],
)
def test_bad_data_file_is_one_line_and_exit_2(case, tmp_path, capsys):
    path, expected = _bad_files(tmp_path)[case]
    assert main(["demo", "--data", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("keras-extras demo: error: --data ")
    assert expected in err
    assert not (tmp_path / "out" / "results.json").exists()


def test_unwritable_out_is_one_line_and_exit_2(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    for out, reason in [(blocker, "File exists"), (blocker / "sub", "Not a directory")]:
        assert main(["demo", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err == f"keras-extras demo: error: cannot write to --out {str(out)!r}: {reason}\n"


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--backend", "theano"], "argument --backend: invalid choice: 'theano'"),
        (["--epochs", "0"], "argument --epochs: must be at least 1, got 0"),
        (["--epochs", "two"], "argument --epochs: must be an integer, got 'two'"),
        (["--seed", "-1"], "argument --seed: must be in [0, 2**32), got -1"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(args, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("keras-extras demo: error: ")
    assert expected in err


def test_missing_scikit_learn_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # makes `import sklearn` fail
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    assert main(["demo", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert 'pip install "keras-extras[demo]"' in err


def test_the_console_script_runs_the_main_tested_here():
    """pyproject.toml's `keras-extras` entry point names this `main`. Catches an entry
    point left naming a function that was renamed or moved: the command would fail
    for every user, while these tests, which call `main` directly, pass. (What the demo
    extra installs is checked by `make test-install`, which runs the demo in an
    environment that has only it.)"""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    module, _, attribute = project["scripts"]["keras-extras"].partition(":")
    assert getattr(importlib.import_module(module), attribute) is main
