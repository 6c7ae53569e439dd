"""TrainingPlotter in scripts: its files, its figure, its drawing process.

What a notebook user sees, in a real Jupyter kernel, is in test_notebook.py. The
figure is checked through what it writes: PNG pixels, and SVG files, whose groups
carry each line's `gid` and whose comments carry each text.
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
import pickle
import re
import subprocess
import sys
import threading
import warnings

import keras
import numpy as np
import psutil
import pytest
from PIL import Image

import keras_extras
from keras_extras_core import plot_job, plot_process
from keras_extras_core.figure import TrainingFigure
from tests.harness import (
    assert_config_roundtrip,
    assert_valid_png,
    digits,
    png_files,
    run_in_fresh_process,
)
from tests.test_callbacks import make_model

BATCH = 64
HANG = 60  # seconds: a bound for hangs only, never a measurement


@pytest.fixture(scope="module")
def trained():
    """A model to fit again and again, with data and validation data."""
    (x, y), validation = digits(256, 64)
    return make_model(0.5), x, y, validation


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
                self.versions.append(f.read())


def svg_line(svg, gid):
    """The vertices (x, y) of the line whose gid is `gid`, in SVG units (y grows down)."""
    match = re.search(rf'<g id="{re.escape(gid)}">\s*<path d="([^"]*)"', svg)
    assert match, f"no line {gid!r} in the SVG"
    return np.array(re.findall(r"-?\d+(?:\.\d+)?", match.group(1)), float).reshape(-1, 2)


def svg_texts(svg):
    """Every text of the figure, in drawing order (matplotlib writes each as a comment)."""
    return re.findall(r"<!-- (.*?) -->", svg)


def assert_affine(coordinates, values):
    """`coordinates` are `values` on a linear axis: one scale and offset fit them all."""
    values = np.asarray(values, np.float64)
    design = np.stack([values, np.ones_like(values)], axis=1)
    (scale, offset), *_ = np.linalg.lstsq(design, coordinates, rcond=None)
    np.testing.assert_allclose(coordinates, scale * values + offset, atol=0.05)
    assert abs(scale) > 1.0  # the values span the axis


# Files, written as documented.


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
            batch_size=BATCH,
            epochs=3,
            verbose=0,
            validation_data=validation,
            callbacks=[plotter, watcher],
        )
    return folder, plotter, watcher, caught


def test_plot_is_a_valid_png_of_the_expected_size_and_resolution(plotted):
    folder, _, _, caught = plotted
    # Three panels (batch loss, loss, accuracy), two per row, 5 x 3.2 in at 100 dpi.
    assert_valid_png(folder / "training.png", size=(1000, 640))
    with Image.open(folder / "training.png") as image:
        assert image.info["dpi"] == pytest.approx((100, 100), abs=0.01)
    assert not [w for w in caught if "TrainingPlotter" in str(w.message)]


def test_plot_is_rewritten_once_per_epoch(plotted):
    folder, _, watcher, _ = plotted
    # Each epoch's drawing has that epoch's data, so every version differs.
    assert len(watcher.versions) == 3
    assert len(set(watcher.versions)) == 3
    assert (folder / "training.png").read_bytes() == watcher.versions[-1]


def test_snapshot_pattern_keeps_one_file_per_epoch(plotted):
    folder, _, watcher, _ = plotted
    assert png_files(folder) == [
        "plot_at_epoch_1.png",
        "plot_at_epoch_2.png",
        "plot_at_epoch_3.png",
        "training.png",
    ]
    for epoch, data in enumerate(watcher.versions, start=1):
        assert (folder / f"plot_at_epoch_{epoch}.png").read_bytes() == data
    assert [f for f in os.listdir(folder) if f.startswith(".")] == []


def test_plotter_history_and_model(plotted):
    _, plotter, _, _ = plotted
    assert plotter.history.epochs["epoch"] == [0, 1, 2]
    assert len(plotter.history.batches["loss"]) == 12
    assert "val_loss" in plotter.history.epochs
    assert plotter.model is None and plotter.history.model is None
    clone = pickle.loads(pickle.dumps(plotter))
    assert clone.history.to_dict() == plotter.history.to_dict()
    assert copy.deepcopy(plotter).history.to_dict() == plotter.history.to_dict()


def test_every_n_epochs_figsize_and_final_drawing(trained, tmp_path):
    model, x, y, _ = trained
    plotter = keras_extras.TrainingPlotter(
        tmp_path, snapshot="e{epoch}.png", every_n_epochs=2, figsize=(8, 5)
    )
    watcher = FileWatcher(plotter)
    model.fit(x, y, batch_size=BATCH, epochs=5, verbose=0, callbacks=[plotter, watcher])
    # Written after epochs 2 and 4, and once more at the end for epoch 5.
    assert len(watcher.versions) == 4  # the file exists from epoch 2 on
    v2, v3, v4, v5 = watcher.versions
    assert v2 == v3 and v4 == v5 and v2 != v4
    final = (tmp_path / "training.png").read_bytes()
    assert final not in (v2, v4)
    assert png_files(tmp_path) == ["e2.png", "e4.png", "training.png"]
    assert_valid_png(tmp_path / "training.png", size=(800, 500))


def test_svg_and_pdf_follow_the_extension(trained, tmp_path):
    model, x, y, _ = trained
    plotter = keras_extras.TrainingPlotter(tmp_path, filename="curves.svg", snapshot="e{epoch}.pdf")
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[plotter])
    assert png_files(tmp_path) == ["curves.svg", "e1.pdf"]
    svg = (tmp_path / "curves.svg").read_text()
    assert svg.startswith("<?xml") and "<svg" in svg and "loss per batch" in svg_texts(svg)
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
    model.fit(x, y, batch_size=BATCH, epochs=2, verbose=0, callbacks=callbacks)
    assert plotter.history is history
    assert history.batches["step"] == list(range(1, 9))
    assert history.epochs["epoch"] == [0, 1]
    assert_valid_png(tmp_path / "training.png")


def test_a_relative_directory_is_where_fit_runs(trained, tmp_path, monkeypatch):
    """Catches paths resolved in the drawing process, which runs where it was started."""
    model, x, y, _ = trained
    plotter = keras_extras.TrainingPlotter("plots")
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[plotter])
        assert png_files(tmp_path / name / "plots") == ["training.png"]
    assert plotter.directory == "plots" and plotter.get_config()["directory"] == "plots"


# One curve across fits.


def test_continued_training_continues_the_curves_snapshots_and_count(trained, tmp_path):
    """Three fits, the third with `initial_epoch`, draw one curve of 7 epochs, left to right.

    The reference is Keras's own History of each fit. Catches a plotter whose epoch
    axis is Keras's `epoch` index (it restarts at 0 without `initial_epoch`: the
    curve zig-zags, and snapshot files of the first fit are overwritten), one that
    counts only the current fit, and a best-epoch label in another count.
    """
    model, x, y, validation = trained
    plotter = keras_extras.TrainingPlotter(
        tmp_path, filename="training.svg", snapshot="at_{epoch}.svg", every_n_epochs=2
    )
    histories = []
    for fit in ({"epochs": 3}, {"epochs": 2}, {"initial_epoch": 5, "epochs": 7}):
        histories.append(
            model.fit(
                x,
                y,
                batch_size=BATCH,
                verbose=0,
                validation_data=validation,
                callbacks=[plotter],
                **fit,
            ).history
        )
    # Snapshots at every second epoch of the count; the last (7) is drawn at the end.
    assert png_files(tmp_path) == ["at_2.svg", "at_4.svg", "at_6.svg", "training.svg"]
    # The history keeps Keras's epoch index, as `History` does.
    assert plotter.history.epochs["epoch"] == [0, 1, 2, 0, 1, 5, 6]
    loss = [v for h in histories for v in h["loss"]]
    val_loss = [v for h in histories for v in h["val_loss"]]
    svg = (tmp_path / "training.svg").read_text()
    for gid, values in (("loss/train", loss), ("loss/validation", val_loss)):
        points = svg_line(svg, gid)
        assert len(points) == 7
        assert (np.diff(points[:, 0]) > 0).all(), f"{gid} is not drawn left to right"
        np.testing.assert_allclose(np.diff(points[:, 0]), np.diff(points[:2, 0]).item())
        assert_affine(points[:, 1], values)
    best = int(np.argmin(val_loss)) + 1
    label = [t for t in svg_texts(svg) if t.startswith("best validation")][0]
    assert label == f"best validation: {min(val_loss):.4g} (epoch {best})"


def test_best_epoch_directions_come_from_keras(trained, tmp_path):
    """Loss marked at its minimum, accuracy at its maximum, as Keras knows them."""
    model, x, y, validation = trained
    plotter = keras_extras.TrainingPlotter(tmp_path, filename="training.svg")
    history = model.fit(
        x, y, batch_size=BATCH, epochs=4, verbose=0, validation_data=validation, callbacks=[plotter]
    ).history
    labels = [t for t in svg_texts((tmp_path / "training.svg").read_text()) if "best" in t]
    low, high = np.argmin(history["val_loss"]), np.argmax(history["val_accuracy"])
    assert labels == [
        f"best validation: {history['val_loss'][low]:.4g} (epoch {low + 1})",
        f"best validation: {history['val_accuracy'][high]:.4g} (epoch {high + 1})",
    ]


# The figure.


def draw(epochs, batches=None, **kwargs):
    figure = TrainingFigure()
    batches = batches or {"step": np.arange(1.0, 4.0), "loss": np.array([3.0, 2.0, 1.0])}
    figure.draw({"batches": batches, "epochs": epochs}, **kwargs)
    return figure


def lines(figure):
    return {line.get_gid(): line for ax in figure.figure.axes for line in ax.get_lines()}


def test_non_finite_values_are_gaps_and_best_epochs_are_marked():
    data = {
        "epoch": np.array([0.0, 1.0, 0.0, 1.0]),  # two fits: Keras's index restarts
        "step": np.arange(4.0),
        "loss": np.array([2.0, 1.0, -np.inf, 0.5]),
        "val_loss": np.array([2.5, 0.7, np.nan, 0.9]),
        "accuracy": np.array([0.5, 0.9, 0.7, 0.8]),
    }
    batches = {"step": np.arange(1.0, 7.0), "loss": np.array([2, 1, np.inf, np.nan, 3, 1.5])}
    figure = draw(
        data, batches, smoothing=0.5, yscale="log", modes={"loss": "min", "accuracy": "max"}
    )
    drawn = lines(figure)
    raw = np.asarray(drawn["loss per batch/batch"].get_ydata())
    smoothed = np.asarray(drawn["loss per batch/smoothed"].get_ydata())
    np.testing.assert_array_equal(np.isnan(raw), [False, False, True, True, False, False])
    # Debiased EMA over the finite values only, in closed form.
    w, finite = 0.5, np.array([2.0, 1.0, 3.0, 1.5])
    expected = [
        sum((1 - w) * w ** (n - 1 - i) * finite[i] for i in range(n)) / (1 - w**n)
        for n in range(1, 5)
    ]
    np.testing.assert_allclose(smoothed[[0, 1, 4, 5]], expected)
    assert np.isnan(smoothed[[2, 3]]).all()
    # The x axis counts the epochs: 1 to 4, not Keras's 0, 1, 0, 1.
    np.testing.assert_array_equal(drawn["loss/train"].get_xdata(), [1, 2, 3, 4])
    assert np.isnan(drawn["loss/train"].get_ydata()[2])
    assert np.isnan(drawn["loss/validation"].get_ydata()[2])
    # The validation curve is the one marked: its minimum 0.7 at epoch 2.
    assert drawn["loss/best"].get_xydata().tolist() == [[2.0, 0.7]]
    assert drawn["accuracy/best"].get_xydata().tolist() == [[2.0, 0.9]]
    assert drawn["loss/train"].axes.get_yscale() == "log"

    figure.draw({"batches": batches, "epochs": data}, modes={"accuracy": "min", "loss": "min"})
    drawn = lines(figure)  # rebuilt: no smoothed line now
    assert "loss per batch/smoothed" not in drawn
    assert drawn["accuracy/best"].get_xydata().tolist() == [[1.0, 0.5]]
    assert drawn["loss/train"].axes.get_yscale() == "linear"
    figure.draw({"batches": batches, "epochs": data}, modes={})
    assert not drawn["accuracy/best"].get_visible()
    assert drawn["accuracy/best"].get_label().startswith("_")


@pytest.mark.parametrize("count", [1, 2, 3, 7, 40])
def test_the_epoch_axis_has_whole_numbers_only(count):
    figure = draw({"epoch": np.arange(float(count)), "loss": np.linspace(1.0, 0.5, count)})
    epoch_axes = lines(figure)["loss/train"].axes
    low, high = epoch_axes.get_xlim()
    ticks = [t for t in epoch_axes.get_xticks() if low <= t <= high]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
    assert low < 1 and high > count
    if count == 1:
        assert ticks == [1]


def test_a_point_marked_best_shows_inside_the_star():
    """With one epoch, the validation point is the best one: it must show, in its colour.

    Catches a star drawn over the curves (the point disappears under it).
    """
    figure = draw(
        {"epoch": np.zeros(1), "loss": np.ones(1), "val_loss": np.array([0.8])},
        modes={"loss": "min"},
    )
    assert lines(figure)["loss/best"].get_xydata().tolist() == [[1.0, 0.8]]
    validation = lines(figure)["loss/validation"]
    x, y = validation.axes.transData.transform((1.0, 0.8))
    pixels = np.asarray(figure.figure.canvas.buffer_rgba())
    row, column = pixels.shape[0] - int(round(y)), int(round(x))
    centre = pixels[row - 1 : row + 1, column - 1 : column + 1, :3].reshape(-1, 3).mean(axis=0)
    orange = np.array([0xFF, 0x7F, 0x0E])  # C1, the validation colour; the star is C3, red
    assert np.abs(centre - orange).max() < 40, centre


def test_png_encoding_matches_matplotlib():
    size = (300, 200)
    figure = draw({"epoch": np.arange(1.0), "step": np.arange(1.0), "loss": np.ones(1)})
    figure.draw(
        {
            "batches": {"step": np.arange(1.0, 4.0), "loss": np.array([3.0, 2.0, 1.0])},
            "epochs": {"epoch": np.arange(1.0), "loss": np.ones(1)},
        },
        figsize=(size[0] / 100, size[1] / 100),
    )
    ours = Image.open(io.BytesIO(figure.encode("png")))
    buffer = io.BytesIO()
    figure.figure.savefig(buffer, format="png", dpi=100)
    theirs = Image.open(io.BytesIO(buffer.getvalue()))
    assert ours.info["dpi"] == theirs.info["dpi"]
    ours, theirs = (np.asarray(image.convert("RGBA")) for image in (ours, theirs))
    assert ours.shape == theirs.shape == (size[1], size[0], 4)
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("figsize", [None, (4.0, 9.0)])
def test_labels_and_titles_are_placed_clear_of_the_tick_labels(figsize):
    """The x labels and titles, placed at fixed offsets, neither overlap the tick
    labels nor leave the figure, for the default and a tall, narrow figure."""
    figure = draw(
        {
            "epoch": np.arange(5.0),
            "loss": np.linspace(2.0, 0.5, 5),
            "val_loss": np.linspace(2.2, 0.7, 5),
            "accuracy": np.linspace(0.2, 0.9, 5),
        },
        {"step": np.arange(500.0), "loss": np.linspace(3.0, 0.1, 500)},
        yscale="log",
        figsize=figsize,
    )
    renderer = figure.figure.canvas.get_renderer()
    figure_box = figure.figure.bbox
    axes = [ax for ax in figure.figure.axes if ax.get_visible()]
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


def test_nan_losses_still_get_their_plot(tmp_path):
    (x, y), _ = digits(256, 0)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(1)])
    # Diverges: the loss grows ~10^4 times a step, overflows to inf, then NaN.
    model.compile(optimizer=keras.optimizers.SGD(5.0), loss="mse")
    plotter = keras_extras.TrainingPlotter(tmp_path, yscale="log", smoothing=0.5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(
            x,
            y.astype("float32"),
            batch_size=BATCH,
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


# Arguments and faults.


def test_config_roundtrip():
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
    default = assert_config_roundtrip(keras_extras.TrainingPlotter())
    assert default.directory is None and default.display == "auto"


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
        ({"display": "yes"}, "display.*'yes'"),
        ({"display": 1}, "display.*1"),
        ({"directory": None, "snapshot": "e{epoch}.png"}, "'e{epoch}.png' needs a `directory`"),
        ({"directory": None, "display": False}, r"directory=None, display=False"),
    ],
)
def test_bad_arguments_are_named(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        keras_extras.TrainingPlotter(**{"directory": tmp_path, **kwargs})


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
    with pytest.raises(ValueError, match="draw nowhere"):
        plotter.display = False
        plotter.directory = None
    assert plotter.smoothing == 0.5 and plotter.filename == "training.png"


def test_missing_matplotlib_names_the_extra(monkeypatch, tmp_path):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"keras-extras\[plot\]"):
        keras_extras.TrainingPlotter(tmp_path)


def assert_fit_refused(model, x, y, plotter, folder):
    """`fit` raises an OSError naming `folder` (and no file in it) before any step."""
    weights = [w.copy() for w in model.get_weights()]
    iterations = int(model.optimizer.iterations.numpy())
    with pytest.raises(OSError) as raised:
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[plotter])
    message = str(raised.value)
    assert repr(str(folder)) in message and "probe" not in message, message
    assert int(model.optimizer.iterations.numpy()) == iterations
    for before, after in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)


def test_a_folder_that_cannot_be_made_fails_before_training(trained, tmp_path):
    model, x, y, _ = trained
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    folder = blocker / "plots"
    assert_fit_refused(model, x, y, keras_extras.TrainingPlotter(folder), folder)


@pytest.fixture
def read_only_folder(tmp_path):
    """An existing folder that this process cannot create files in, even as root."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    immutable = False
    if os.access(folder, os.W_OK):  # root ignores the mode; an immutable folder stops it
        immutable = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode
        immutable = immutable == 0
        if not immutable:
            pytest.skip("no way to make a folder read-only here: root, and no `chattr +i`")
    yield folder
    if immutable:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    folder.chmod(0o755)


def test_a_folder_that_cannot_be_written_fails_before_training(trained, read_only_folder):
    model, x, y, _ = trained
    plotter = keras_extras.TrainingPlotter(read_only_folder)
    assert_fit_refused(model, x, y, plotter, read_only_folder)


# The drawing process.


@pytest.fixture
def child(monkeypatch):
    """Replaces the shared drawing process with one that runs the given child code."""
    made = []

    def use(code):
        process = plot_process.PlotProcess(command=lambda: [sys.executable, "-c", code])
        monkeypatch.setattr(plot_process, "shared", lambda: process)
        made.append(process)
        return process

    yield use
    for process in made:
        process.close()


# A child that dies as it moves its second finished file into place: at the
# rename, however the file was opened and written.
CRASHING_CHILD = """\
import os
from keras_extras_core import plot_process
renames = []

def crash_on_second(real):
    def rename(src, dst, *args, **kwargs):
        renames.append(dst)
        if len(renames) == 2:
            os._exit(17)
        return real(src, dst, *args, **kwargs)
    return rename

os.replace, os.rename = crash_on_second(os.replace), crash_on_second(os.rename)
plot_process.main()
"""

FAILING_CHILD = """\
from keras_extras_core import figure, plot_process
def draw(self, *args, **kwargs):
    raise ValueError("boom")
figure.TrainingFigure.draw = draw
plot_process.main()
"""


def test_crash_before_the_rename_leaves_the_previous_png(trained, tmp_path, child):
    """A crash of the drawing process at its second rename leaves the first plot whole.

    Catches a plotter that writes the file in place (no rename to crash in:
    no warning, and the second plot replaces the first), and a crash reported
    more than once. What may be left is what the docstring allows: one hidden
    `.training.png.*.tmp`, here a complete PNG of the second epoch.
    """
    model, x, y, _ = trained
    child(CRASHING_CHILD)
    plotter = keras_extras.TrainingPlotter(tmp_path)
    watcher = FileWatcher(plotter)
    with pytest.warns(RuntimeWarning, match="drawing process stopped.*exit code 17") as caught:
        model.fit(x, y, batch_size=BATCH, epochs=2, verbose=0, callbacks=[plotter, watcher])
    assert len([w for w in caught if "TrainingPlotter" in str(w.message)]) == 1
    first, second = watcher.versions
    assert second == first
    assert (tmp_path / "training.png").read_bytes() == first
    assert_valid_png(tmp_path / "training.png")
    assert png_files(tmp_path) == ["training.png"]
    leftovers = [f for f in os.listdir(tmp_path) if f.startswith(".")]
    assert len(leftovers) == 1 and re.fullmatch(r"\.training\.png\..+\.tmp", leftovers[0])
    assert_valid_png(tmp_path / leftovers[0])
    assert (tmp_path / leftovers[0]).read_bytes() != first
    assert plotter.history.epochs["epoch"] == [0, 1]


def test_drawing_errors_warn_once_and_training_goes_on(trained, tmp_path, child):
    model, x, y, _ = trained
    child(FAILING_CHILD)
    plotter = keras_extras.TrainingPlotter(tmp_path)
    with pytest.warns(RuntimeWarning, match="boom") as caught:
        model.fit(x, y, batch_size=BATCH, epochs=3, verbose=0, callbacks=[plotter])
    assert len([w for w in caught if "TrainingPlotter" in str(w.message)]) == 1
    assert plotter.history.epochs["epoch"] == [0, 1, 2]
    assert png_files(tmp_path) == []


def test_a_reused_plotter_warns_once_in_every_fit(trained, tmp_path, child):
    """The documented "one RuntimeWarning per fit", for a plotter passed to three fits.

    Catches a plotter that warns only in its first fit (the flag is not
    reset) and one that warns at every epoch end after a failed drawing (the
    watcher waits for each drawing, so the error is known at the next one).
    """
    model, x, y, _ = trained
    child(FAILING_CHILD)
    plotter = keras_extras.TrainingPlotter(tmp_path)
    callbacks = [plotter, FileWatcher(plotter)]
    for fit in range(3):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.fit(x, y, batch_size=BATCH, epochs=3, verbose=0, callbacks=callbacks)
        messages = [str(w.message) for w in caught if "TrainingPlotter" in str(w.message)]
        assert len(messages) == 1, (fit, messages)
        assert "boom" in messages[0]
    assert plotter.history.epochs["epoch"] == [0, 1, 2] * 3


def test_a_child_that_cannot_start_is_reported_with_its_message(trained, tmp_path, child):
    model, x, y, _ = trained
    child("import sys; sys.stderr.write('no matplotlib here'); sys.exit(3)")
    plotter = keras_extras.TrainingPlotter(tmp_path)
    with pytest.warns(RuntimeWarning, match="(?s)exit code 3.*no matplotlib here"):
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[plotter])
    assert plotter.history.epochs["epoch"] == [0]


def test_one_drawing_process_serves_every_plotter_and_ends_with_python(tmp_path):
    """A plotter starts no process; the first fit that draws starts the only one.

    Catches a process per plotter (a new plotter in a re-run notebook cell would pay
    a second of CPU again), one started by the constructor, and one left running
    after Python exits.
    """
    out = run_in_fresh_process(
        f"""
        import json, os, psutil, keras, numpy as np, keras_extras

        def children():
            return [p.pid for p in psutil.Process().children()
                    if "keras_extras_core.plot_process" in p.cmdline()]

        x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
        seen = []
        for name in "abc":
            plotter = keras_extras.TrainingPlotter(os.path.join({str(tmp_path)!r}, name))
            seen.append(children())
            model.fit(x, x[:, :1], batch_size=16, epochs=2, verbose=0, callbacks=[plotter])
            seen.append(children())
        print(json.dumps(seen))
        """
    )
    seen = json.loads(out.splitlines()[-1])
    assert seen[0] == [] and len(seen[1]) == 1, seen
    assert seen[1:] == [seen[1]] * 5, seen
    assert not psutil.pid_exists(seen[1][0])
    for name in "abc":
        assert_valid_png(tmp_path / name / "training.png", size=(1000, 320))


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


def test_the_drawing_code_imports_neither_keras_nor_pyplot(tmp_path):
    """The drawing process starts without Keras or a backend, and never uses pyplot."""
    out = run_in_fresh_process(
        f"""
        import sys
        import numpy as np
        from keras_extras_core import figure, plot_job, plot_process  # all of the package
        options = plot_job.PlotOptions({str(tmp_path)!r}, filename="child.png")
        job = plot_job.Job(
            options, epoch=2, snapshot=False, modes={{}},
            batches={{"step": np.arange(3.0), "loss": np.ones(3)}},
            epochs={{"epoch": np.arange(2.0), "step": np.arange(2.0), "loss": np.ones(2)}})
        plot_job.run_job(figure.TrainingFigure(), job)
        print(sorted(m for m in ("keras", "tensorflow", "jax", "torch", "matplotlib.pyplot")
                     if m in sys.modules))
        """,
        env={"DISPLAY": None, "MPLBACKEND": None},
    )
    assert out.split()[-1] == "[]"
    assert_valid_png(tmp_path / "child.png", size=(1000, 320))


def test_display_auto_is_off_in_scripts_and_terminal_ipython(tmp_path):
    """`TrainingPlotter()` outside a Jupyter kernel draws nowhere, and says so once per fit.

    Catches "auto" showing images where IPython runs without a kernel (a terminal
    prints `<IPython.core.display.Image object>` at every epoch) and a plotter that
    silently draws nothing.
    """
    out = run_in_fresh_process(
        """
        import sys, warnings, keras, numpy as np, keras_extras
        from IPython.terminal.interactiveshell import TerminalInteractiveShell
        x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
        for where in ("script", "terminal IPython"):
            if where == "terminal IPython":
                TerminalInteractiveShell.instance()
            plotter = keras_extras.TrainingPlotter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                model.fit(x, x[:, :1], batch_size=16, epochs=3, verbose=0,
                          callbacks=[plotter])
            print(where, "|", len(plotter.history.epochs["epoch"]), "|",
                  [str(w.message).split(":")[0] for w in caught
                   if issubclass(w.category, RuntimeWarning)])
        """
    )
    lines = [line for line in out.splitlines() if "|" in line]
    nowhere = "['TrainingPlotter has nowhere to draw']"
    assert lines == [f"script | 3 | {nowhere}", f"terminal IPython | 3 | {nowhere}"]
    assert "IPython.core.display.Image" not in out
    assert png_files(tmp_path) == []


# The drawing queue, on a clock that moves only when the test moves it.


class FakeClock(plot_process.Clock):
    """Time that moves only in `advance`; counts the rests the worker begins on it."""

    def __init__(self):
        self.time = 0.0
        self.rests = 0  # rests begun
        self._resting = False
        self._seen = threading.Condition()  # notified when a rest begins
        self._condition = None  # the process's, which `advance` notifies

    def now(self):
        return self.time

    def wait(self, condition, seconds):
        self._condition = condition
        with self._seen:
            self.rests += 1
            self._resting = True
            self._seen.notify_all()
        if not condition.wait(HANG):  # until a request is queued, `wait` begins or `advance`
            self.time += seconds  # nothing ended the rest: it ran out, as real time would
        with self._seen:
            self._resting = False

    def rest_after(self, rests):
        """Waits until the worker rests, in a rest begun after the first `rests`."""
        with self._seen:
            rested = self._seen.wait_for(lambda: self.rests > rests and self._resting, HANG)
        assert rested, "the worker never rested"

    def advance(self, seconds):
        with self._condition:
            self.time += seconds
            self._condition.notify_all()


class Receiver:
    """Where one fit's PNGs go. Each drawing's width in inches is its epoch (see `request`),
    so the PNG tells which drawing it is. `seconds` is how long each one takes."""

    def __init__(self, clock=None, seconds=0.0, hold=None):
        self.epochs, self.errors = [], []
        self.clock, self.seconds, self.hold = clock, seconds, hold
        self.holding = threading.Event()

    def show(self, png):
        if self.hold is not None and not self.holding.is_set():
            self.holding.set()
            assert self.hold.wait(HANG)
        self.epochs.append(Image.open(io.BytesIO(png)).size[0] // 100)
        if self.clock is not None:
            self.clock.time += self.seconds


def request(folder, epoch, receiver, snapshot=False, pattern="at_{epoch}.png"):
    options = plot_job.PlotOptions(folder, snapshot=pattern, figsize=(epoch, 1.5))
    epochs = {"epoch": np.arange(float(epoch)), "loss": 1.0 / np.arange(1.0, epoch + 1)}
    job = plot_job.Job.of(options, snapshot, {}, epochs, {}, png=True)
    return plot_process.Request(job, receiver.show, receiver.errors.append)


def test_a_drawing_that_a_queued_one_redraws_is_dropped(tmp_path):
    """When drawing falls behind the epochs, only the newest drawing of a plot is drawn.

    Epoch 1's drawing is held while 2 to 7 are queued. Dropped: 2 (3 redraws its
    file and its image), 5 and 6 (6 is marked for a snapshot, but its options have
    no pattern). Kept: the snapshot (3), the drawing for another fit's image (4) and
    the newest (7). Catches a plotter that draws every epoch however far behind it is
    (a fit of many short epochs then waits for all of them at its end), one that
    drops a snapshot, and one that drops a drawing of another plot.
    """
    hold = threading.Event()
    this_fit, other_fit = Receiver(hold=hold), Receiver()
    process = plot_process.PlotProcess(clock=FakeClock())
    try:
        process.submit(request(tmp_path, 1, this_fit))
        assert this_fit.holding.wait(HANG), "the first drawing never ended"
        process.submit(request(tmp_path, 2, this_fit))
        process.submit(request(tmp_path, 3, this_fit, snapshot=True))
        process.submit(request(tmp_path, 4, other_fit))
        process.submit(request(tmp_path, 5, this_fit))
        process.submit(request(tmp_path, 6, this_fit, snapshot=True, pattern=None))
        process.submit(request(tmp_path, 7, this_fit))
        hold.set()
        process.wait()
    finally:
        process.close()
    assert (this_fit.epochs, other_fit.epochs) == ([1, 3, 7], [4])
    assert this_fit.errors == other_fit.errors == []
    assert png_files(tmp_path) == ["at_3.png", "training.png"]
    assert Image.open(tmp_path / "training.png").size[0] == 700


def test_the_child_rests_between_skippable_drawings_unless_waited_for(tmp_path):
    """After a drawing, one that may be skipped waits `REST_PER_DRAWING` times as long as
    that drawing took; a snapshot does not wait, and `wait` ends the rest at once.

    Every drawing takes 1 s of the fake clock. Catches a child that draws each
    epoch's plot as soon as it can (on cores that training uses, that is training
    time lost whenever epochs are shorter than a drawing), a rest of another length,
    a snapshot made to wait out the rest, and a `wait` that sits out the rest.
    """
    clock = FakeClock()
    receiver = Receiver(clock, seconds=1.0)
    rest = 3.0  # three times the drawing's 1 s, as the guide says
    process = plot_process.PlotProcess(clock=clock)
    try:
        process.submit(request(tmp_path, 1, receiver))
        process.wait()
        assert receiver.epochs == [1] and clock.time == 1.0
        process.submit(request(tmp_path, 2, receiver))
        process.submit(request(tmp_path, 3, receiver))
        clock.rest_after(0)
        assert receiver.epochs == [1]
        # A snapshot queued during the rest is drawn at once, and replaces 3.
        rests = clock.rests
        process.submit(request(tmp_path, 4, receiver, snapshot=True))
        process.submit(request(tmp_path, 5, receiver))
        clock.rest_after(rests)
        assert receiver.epochs == [1, 4]
        rests = clock.rests
        clock.advance(rest - 0.5)
        clock.rest_after(rests)
        assert receiver.epochs == [1, 4]
        clock.advance(0.5)
        process.wait()  # nothing to rest before: it only waits for 5
        assert receiver.epochs == [1, 4, 5]
        rests = clock.rests
        process.submit(request(tmp_path, 6, receiver))
        clock.rest_after(rests)
        before = clock.time
        process.wait()
        assert receiver.epochs == [1, 4, 5, 6] and clock.time == before + 1.0
    finally:
        process.close()
    assert receiver.errors == []
    assert png_files(tmp_path) == ["at_4.png", "training.png"]
