"""TrainingPlotter as a notebook user sees it: a real Jupyter kernel, driven by nbclient.

One notebook per backend runs what a user does in cells: a first fit, training
continued in the next cells (with and without `initial_epoch`), `TrainingPlotter()`
with no arguments in a cell run twice, and a plot that fails mid-training. The tests
read the executed notebook (each cell's outputs, and the display messages the kernel
sent for it) and the files the plotters wrote.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest

from keras_extras_core.files import atomic_write

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]

SETUP = """
import json, os, shutil
import keras, numpy as np, psutil
import keras_extras
from sklearn.datasets import load_digits

PLOTS = {plots!r}
data = load_digits()
x, y = (data.data / 16.0).astype("float32"), data.target.astype("int32")
train, validation = (x[:512], y[:512]), (x[512:640], y[512:640])


def new_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.SGD(0.5),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


class EveryDrawing(keras.callbacks.Callback):
    # Waits for the plotter after each epoch, so that every drawing is shown.
    def __init__(self, plotter):
        super().__init__()
        self.plotter = plotter

    def on_epoch_end(self, epoch, logs=None):
        self.plotter.wait()


class RemoveFolder(EveryDrawing):
    # Removes the plotter's folder after the first epoch: later drawings fail.
    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if epoch == 0:
            shutil.rmtree(self.plotter.directory)


def drawing_processes():
    return [p.pid for p in psutil.Process().children()
            if "keras_extras_core.plot_process" in p.cmdline()]


model = new_model()
histories = []
"""

# (name, code): the cells after SETUP. A name marks the cells the tests look up.
CELLS = [
    (
        "first fit",
        """
        plotter = keras_extras.TrainingPlotter(
            os.path.join(PLOTS, "continued"), filename="training.svg", snapshot="at_{epoch}.png")
        histories.append(model.fit(*train, validation_data=validation, batch_size=64, epochs=3,
                                   verbose=0, callbacks=[plotter, EveryDrawing(plotter)]).history)
        """,
    ),
    (
        "continued",
        """
        histories.append(model.fit(*train, validation_data=validation, batch_size=64, epochs=3,
                                   verbose=0, callbacks=[plotter, EveryDrawing(plotter)]).history)
        """,
    ),
    (
        "resumed",
        """
        histories.append(model.fit(*train, validation_data=validation, batch_size=64,
                                   initial_epoch=6, epochs=8, verbose=0,
                                   callbacks=[plotter, EveryDrawing(plotter)]).history)
        """,
    ),
    (
        "histories",
        """
        print(json.dumps({key: [v for h in histories for v in h[key]]
                          for key in ("loss", "val_loss")}))
        """,
    ),
    (
        "no arguments",
        """
        quick = keras_extras.TrainingPlotter()
        before = drawing_processes()
        new_model().fit(*train, batch_size=64, epochs=2, verbose=0,
                        callbacks=[quick, EveryDrawing(quick)]);
        """,
    ),
    (
        "no arguments, run again",
        """
        quick = keras_extras.TrainingPlotter()
        before = drawing_processes()
        new_model().fit(*train, batch_size=64, epochs=2, verbose=0,
                        callbacks=[quick, EveryDrawing(quick)]);
        """,
    ),
    ("processes", "print(json.dumps([before, drawing_processes()]))"),
    (
        "failing",
        """
        broken = keras_extras.TrainingPlotter(os.path.join(PLOTS, "removed"))
        history = model.fit(*train, batch_size=64, epochs=3, verbose=0,
                            callbacks=[broken, RemoveFolder(broken)])
        print("epochs trained:", len(history.history["loss"]))
        """,
    ),
]


class RecordingClient(nbclient.NotebookClient):
    """Keeps, per cell, the display messages the kernel sent: what a frontend applies."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.messages = {}

    def process_message(self, msg, cell, cell_index):
        kind = msg["msg_type"]
        if kind in ("display_data", "update_display_data"):
            display_id = msg["content"].get("transient", {}).get("display_id")
            self.messages.setdefault(cell_index, []).append((kind, display_id))
        return super().process_message(msg, cell, cell_index)


@pytest.fixture(scope="module")
def notebook(tmp_path_factory):
    folder = tmp_path_factory.mktemp("notebook")
    plots = folder / "plots"
    sources = [SETUP.format(plots=str(plots))] + [textwrap.dedent(code) for _, code in CELLS]
    book = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    client = RecordingClient(
        book,
        timeout=600,
        kernel_name="python3",
        allow_errors=False,
        resources={"metadata": {"path": str(folder)}},
    )
    client.execute()
    cells = {name: (index, book.cells[index]) for index, (name, _) in enumerate(CELLS, start=1)}
    return cells, client.messages, plots


def cell(notebook, name):
    """(outputs, display messages) of the named cell."""
    cells, messages, _ = notebook
    index, executed = cells[name]
    return executed.outputs, messages.get(index, [])


def images(outputs):
    return [
        base64.b64decode(o["data"]["image/png"])
        for o in outputs
        if "image/png" in o.get("data", {})
    ]


def printed(outputs, stream="stdout"):
    return "".join(o["text"] for o in outputs if o.get("name") == stream)


FITS = {
    "first fit": 3,
    "continued": 3,
    "resumed": 2,
    "no arguments": 2,
    "no arguments, run again": 2,
}


def test_each_fit_cell_shows_one_image_updated_in_place(notebook):
    """A display per fit, then one update per later epoch of that fit, to the same image.

    Catches a plotter that shows a new image at every epoch (a cell fills with
    plots), one that updates the previous fit's image (the second cell shows
    nothing and the first shows the second fit), and one that shows nothing.
    """
    display_ids = []
    for name, epochs in FITS.items():
        outputs, messages = cell(notebook, name)
        assert [o["output_type"] for o in outputs] == ["display_data"], (name, outputs)
        assert len(images(outputs)) == 1, name
        kinds = [kind for kind, _ in messages]
        assert kinds == ["display_data"] + ["update_display_data"] * (epochs - 1), (name, kinds)
        ids = {display_id for _, display_id in messages}
        assert len(ids) == 1 and None not in ids, (name, messages)
        display_ids += ids
    assert len(set(display_ids)) == len(FITS), "two fits share one image"


def test_each_image_stays_with_the_fit_that_drew_it(notebook):
    """The image under each cell is the drawing after that cell's last epoch.

    A snapshot file is written from the same drawing, so the bytes are equal.
    """
    *_, plots = notebook
    for name, epoch in (("first fit", 3), ("continued", 6), ("resumed", 8)):
        (image,) = images(cell(notebook, name)[0])
        assert image == (plots / "continued" / f"at_{epoch}.png").read_bytes(), name
    first, again = (
        images(cell(notebook, n)[0])[0] for n in ("no arguments", "no arguments, run again")
    )
    assert first == again  # the same model and data, drawn by a second new plotter


def test_continued_training_is_one_curve_of_every_epoch_left_to_right(notebook):
    """Three fits of one plotter: 8 epochs drawn in order, snapshots 1 to 8, none rewritten.

    The reference is Keras's History of each fit. Catches an epoch axis that
    restarts with each `fit` (the curve runs back to epoch 1, and the snapshots of
    the first fit are overwritten).
    """
    *_, plots = notebook
    history = json.loads(printed(cell(notebook, "histories")[0]))
    names = sorted(p.name for p in (plots / "continued").iterdir())
    assert names == sorted([f"at_{epoch}.png" for epoch in range(1, 9)] + ["training.svg"])
    svg = (plots / "continued" / "training.svg").read_text()
    for gid, values in (("loss/train", history["loss"]), ("loss/validation", history["val_loss"])):
        path = re.search(rf'<g id="{gid}">\s*<path d="([^"]*)"', svg).group(1)
        points = np.array(re.findall(r"-?\d+(?:\.\d+)?", path), float).reshape(-1, 2)
        assert len(points) == 8
        steps = np.diff(points[:, 0])
        np.testing.assert_allclose(steps, steps[0])
        assert steps[0] > 0, f"{gid} is not drawn left to right"
        # On a linear axis the drawn heights are one scale and offset of the values.
        design = np.stack([values, np.ones(8)], axis=1)
        fit, *_ = np.linalg.lstsq(design, points[:, 1], rcond=None)
        np.testing.assert_allclose(design @ fit, points[:, 1], atol=0.05)
    best = int(np.argmin(history["val_loss"])) + 1
    assert f"(epoch {best}) -->" in svg


def test_a_new_plotter_starts_no_process(notebook):
    """`TrainingPlotter()` in a re-run cell reuses the kernel's one drawing process."""
    before, after = json.loads(printed(cell(notebook, "processes")[0]))
    assert len(before) == 1 and after == before


def test_a_failing_plot_warns_once_and_training_goes_on(notebook):
    outputs, messages = cell(notebook, "failing")
    warnings = [
        line for line in printed(outputs, "stderr").splitlines() if "TrainingPlotter" in line
    ]
    assert len(warnings) == 1 and "could not draw its plot" in warnings[0], warnings
    assert "removed" in warnings[0] and "No such file or directory" in warnings[0]
    assert printed(outputs) == "epochs trained: 3\n"
    # The first epoch's image stays; the drawings that failed update nothing.
    assert len(images(outputs)) == 1 and [kind for kind, _ in messages] == ["display_data"]


# The guide's notebook, as written on its page.

GUIDE = ROOT / "docs" / "guide" / "watching_training.rst"
PICTURES = [ROOT / "docs" / "_static" / f"watching-training-{i}.png" for i in (1, 2)]


def guide_cells():
    from tests.test_docs import rst_blocks

    return [block.code for block in rst_blocks(GUIDE) if "kernel" in block.marks]


def source_digest(cells):
    return hashlib.sha256("\n".join(cells).encode()).hexdigest()


def test_the_guide_notebook_shows_one_image_below_each_fit(tmp_path):
    """The page's notebook cells, run in a kernel: the setup shows nothing, each fit one image.

    With KERAS_EXTRAS_DOCS_PICTURES=1 (`make docs-pictures`), the images become the
    page's pictures, tagged with the digest of the code that drew them.
    """
    cells = guide_cells()
    assert len(cells) == 3
    book = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    client = RecordingClient(
        book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    setup, *fits = book.cells
    assert setup.outputs == []
    shown = []
    for executed in fits:
        assert [o["output_type"] for o in executed.outputs] == ["display_data"], executed.outputs
        shown += images(executed.outputs)
    assert len(shown) == 2 and shown[0] != shown[1]
    if os.environ.get("KERAS_EXTRAS_DOCS_PICTURES") == "1":
        from PIL import Image, PngImagePlugin

        tags = PngImagePlugin.PngInfo()
        tags.add_text("Source-SHA256", source_digest(cells))
        for png, path in zip(shown, PICTURES, strict=True):
            tagged = io.BytesIO()
            with Image.open(io.BytesIO(png)) as image:
                image.save(tagged, format="png", pnginfo=tags, dpi=image.info["dpi"])
            atomic_write(path, tagged.getvalue())


def test_the_guide_pictures_were_drawn_by_its_code():
    """The pictures on the page come from the code on the page, as it is now.

    Fails when the page's notebook code changes and `make docs-pictures` is not run.
    """
    from PIL import Image

    for path in PICTURES:
        with Image.open(path) as image:
            assert image.info.get("Source-SHA256") == source_digest(guide_cells()), (
                f"{path.name} was drawn by other code: run `make docs-pictures`"
            )
            assert image.size == (1000, 640)
