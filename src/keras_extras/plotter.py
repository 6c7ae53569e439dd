"""`TrainingPlotter`: the callback that draws a `LossHistory`'s curves, inline and in files."""

from __future__ import annotations

import dataclasses
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import keras

from keras_extras import _keras_internals
from keras_extras._export import export
from keras_extras.callbacks import LossHistory, _close_epoch, _log_metrics
from keras_extras_core import plot_process
from keras_extras_core.plot_job import Job, PlotOptions
from keras_extras_core.plot_process import Request


def _directions(model: Any) -> dict[str, str]:
    """Maps each log name of `model` to "min" or "max", where Keras knows which."""
    directions = {}
    for name, metric in _log_metrics(model).items():
        direction = "down" if name.endswith("loss") else _keras_internals.direction(metric)
        if direction in ("up", "down"):
            directions[name] = "max" if direction == "up" else "min"
    return directions


def _ipython_shell() -> Any:
    """The running IPython shell, or None; never imports IPython."""
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    return get_ipython() if get_ipython else None


def _shows_inline(display: bool | str) -> bool:
    """Whether a plotter with this `display` argument shows its plot here and now."""
    shell = _ipython_shell()
    if display == "auto":
        # A Jupyter kernel's shell has a kernel; a terminal IPython's has none.
        return getattr(shell, "kernel", None) is not None
    return bool(display) and shell is not None


class _InlineImage:
    """The image below the cell that runs one `fit`: shown once, then updated in place."""

    def __init__(self) -> None:
        self._handle: Any = None

    def show(self, png: bytes) -> None:
        from IPython.display import Image, display

        if self._handle is None:
            self._handle = display(Image(data=png), display_id=True)
        else:
            self._handle.update(Image(data=png))


def _option(name: str) -> property:
    """A `TrainingPlotter` argument, read from and checked by its `PlotOptions`."""

    def get(self: TrainingPlotter) -> Any:
        return getattr(self._options, name)

    def set(self: TrainingPlotter, value: Any) -> None:
        self._options = dataclasses.replace(self._options, **{name: value})

    return property(get, set, doc=f"The `{name}` argument (see the class docstring).")


@export
class TrainingPlotter(keras.callbacks.Callback):
    """Draws the training curves that a `LossHistory` records: in a notebook, in files, or both.

    The figure has a panel with the loss of every batch (x axis: the global step),
    then one panel per metric with its per-epoch training and `val_` curves and the
    best epoch marked. The epoch axis counts, from 1, every epoch that the plotter's
    history has recorded: training continued in another `fit` continues the curves,
    as the step axis does.

    In a Jupyter notebook, `TrainingPlotter()` shows the plot below the cell that
    runs `fit`, updated in place after every epoch; each `fit` gets an image of its
    own. With a `directory`, the plot is also written there, atomically, as
    `filename`, and with `snapshot` as one more file per drawn epoch. The figures are
    drawn in one background process that every plotter of the Python process shares:
    training does not wait for them, and when epochs end faster than figures are
    drawn, the plot skips to the newest epoch (snapshots are never skipped). When
    `fit` returns, every file and the notebook's image show its last epoch. An error
    while drawing never stops training: it is reported as one `RuntimeWarning` per
    `fit`. The guide's "Watching training" page shows what a notebook user sees and
    how the plot is made.

    The plotter fills its `history`: a new `LossHistory` by default, or the one
    passed in, which may also be passed to `fit` (in any order) without anything
    being recorded twice.

    Args:
        directory: Folder for the plot files, created if missing. `None` writes no
            file.
        filename: Name of the file rewritten at every drawing, in `directory`. Its
            extension sets the format: png, svg, pdf or any other that matplotlib
            writes. Raster files are 100 dpi.
        snapshot: Optional pattern of one more file per drawn epoch, in `directory`,
            with an `{epoch}` field: that epoch's number on the plot's x axis.
        every_n_epochs: Draw after every n-th epoch of that count; the last epoch of
            each `fit` is drawn too.
        smoothing: Weight in [0, 1) of an exponential moving average drawn over
            the per-batch loss (debiased, as in TensorBoard); 0 draws none.
        yscale: `"linear"` or `"log"`, for every panel (a panel without a
            positive value stays linear).
        modes: Maps a metric name to `"min"` or `"max"`, the direction in which
            its best epoch is marked. Metrics not listed use the direction that
            Keras knows for them (losses: min, accuracies: max); one without a
            known direction gets no marker.
        figsize: `(width, height)` of the figure in inches. `None`: 5 x 3.2 per
            panel, two panels per row.
        display: Show the plot below the running cell: `"auto"` under a Jupyter
            kernel and nowhere else, `True` wherever IPython runs, `False` never.
        history: The `LossHistory` to fill and draw. `None` creates one,
            available as `plotter.history`.

    Raises:
        ImportError: if matplotlib is missing; install `keras-extras[plot]`.
        ValueError: for an argument out of range, a `filename` or `snapshot`
            of a format matplotlib cannot write, a `snapshot` without an
            `{epoch}` field or without a `directory`, or `directory=None` with
            `display=False`. Each message names the offending value.
        OSError: from `on_train_begin`, before any training step, if the
            output folder cannot be created or written to; the message names
            the folder.

    Example:
    >>> import os, tempfile, keras, numpy as np, keras_extras
    >>> x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    >>> y = x.sum(axis=1, keepdims=True)
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> folder = tempfile.mkdtemp()
    >>> plotter = keras_extras.TrainingPlotter(folder, snapshot="at_epoch_{epoch}.png")
    >>> _ = model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[plotter])
    >>> _ = model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[plotter])
    >>> sorted(os.listdir(folder))
    ['at_epoch_1.png', 'at_epoch_2.png', 'at_epoch_3.png', 'training.png']
    >>> plotter.history.batches["step"][-1]
    12
    """

    async_safe = True

    directory = _option("directory")
    filename = _option("filename")
    snapshot = _option("snapshot")
    every_n_epochs = _option("every_n_epochs")
    smoothing = _option("smoothing")
    yscale = _option("yscale")
    modes = _option("modes")
    figsize = _option("figsize")
    display = _option("display")

    def __init__(
        self,
        directory: str | os.PathLike | None = None,
        filename: str = "training.png",
        snapshot: str | None = None,
        every_n_epochs: int = 1,
        smoothing: float = 0.0,
        yscale: str = "linear",
        modes: dict[str, str] | None = None,
        figsize: Sequence[float] | None = None,
        display: bool | str = "auto",
        history: LossHistory | None = None,
    ) -> None:
        super().__init__()
        self._options = PlotOptions(
            directory,
            filename,
            snapshot,
            every_n_epochs,
            smoothing,
            yscale,
            modes or {},
            figsize,
            display,
        )
        if history is not None and not isinstance(history, LossHistory):
            raise ValueError(f"`history` must be a LossHistory or None, but it is {history!r}.")
        self._owns_history = history is None
        self.history = LossHistory() if history is None else history
        self._init_runtime()

    def _init_runtime(self) -> None:
        # The options of this fit: a relative `directory` is taken from where `fit` runs
        # (the drawing process, started earlier, may run elsewhere).
        self._fit_options: PlotOptions | None = None
        self._image: _InlineImage | None = None  # this fit's image in the notebook
        self._draws = False  # whether this fit draws anywhere
        self._drawn = 0  # the epoch count of the last drawing queued
        self._error: BaseException | None = None
        self._warned = False

    def _epoch_count(self) -> int:
        return len(self.history.epochs["epoch"])

    # The plotter feeds the history's core, never its Keras hooks: the core counts
    # every batch and epoch once, when Keras drives the history too, in any order.

    def on_train_begin(self, logs: dict | None = None) -> None:
        """Checks the output folders and starts the drawing process if none runs."""
        options = self._options
        if options.directory is not None:
            options = dataclasses.replace(options, directory=os.path.abspath(options.directory))
        options.check_folders()
        self._fit_options = options
        self._error, self._warned = None, False
        self.history.core.begin_fit()
        self._drawn = self._epoch_count()
        self._image = _InlineImage() if _shows_inline(self.display) else None
        self._draws = self._image is not None or self.directory is not None
        if not self._draws:
            warnings.warn(
                "TrainingPlotter has nowhere to draw: it has no `directory`, and "
                f"display={self.display!r} shows nothing outside a Jupyter kernel. Its "
                "history is still recorded; pass a `directory` to get the plot as a file.",
                RuntimeWarning,
                stacklevel=2,
            )
            return
        # Importing matplotlib in a new drawing process overlaps with the first epoch.
        try:
            plot_process.shared().start()
        except OSError as error:
            self._note_error(error)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        """Opens the epoch in the history's tables."""
        self.history.core.open_epoch()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        """Records the batch in the history's tables."""
        self.history.core.record_batch(batch, logs)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Closes the history's epoch and queues a drawing, every `every_n_epochs` epochs."""
        _close_epoch(self, self.history.core, epoch, logs)
        if self._draws and self._epoch_count() % self.every_n_epochs == 0:
            self._queue_drawing(snapshot=True)
        self._report_error()

    def on_train_end(self, logs: dict | None = None) -> None:
        """Draws the last epoch if it was not drawn, and waits for every drawing."""
        if self._draws:
            if self._drawn != self._epoch_count():
                self._queue_drawing(snapshot=False)
            plot_process.shared().wait()
        self.history.core.complete_epoch()
        _keras_internals.forget_model(self)
        self._report_error()

    def wait(self) -> None:
        """Blocks until every drawing queued so far is written and shown."""
        plot_process.shared().wait()

    def _queue_drawing(self, snapshot: bool) -> None:
        self._drawn = self._epoch_count()
        image = self._image
        try:
            job = Job.of(
                self._fit_options or self._options,
                snapshot,
                self.history.batches,
                self.history.epochs,
                _directions(_keras_internals.callback_model(self)),
                png=image is not None,
            )
        except Exception as error:  # noqa: BLE001 - plotting must never stop training
            self._note_error(error)
            return
        request = Request(job, image.show if image else None, self._note_error)
        plot_process.shared().submit(request)

    def _note_error(self, error: BaseException) -> None:
        self._error = self._error or error

    def _report_error(self) -> None:
        if self._error is not None and not self._warned:
            self._warned = True
            where = f" in {self.directory!r}" if self.directory is not None else ""
            warnings.warn(
                f"TrainingPlotter could not draw its plot{where}: {self._error}. Training "
                "goes on; this warning is not repeated in this fit.",
                RuntimeWarning,
                stacklevel=2,
            )

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments.

        Returns:
            A dict with every constructor argument. `history` is `None` when
            the plotter created its own, else the passed history's serialised
            config (from which a new, empty one is built).
        """
        return {
            "directory": self.directory,
            "filename": self.filename,
            "snapshot": self.snapshot,
            "every_n_epochs": self.every_n_epochs,
            "smoothing": self.smoothing,
            "yscale": self.yscale,
            "modes": dict(self.modes),
            "figsize": list(self.figsize) if self.figsize else None,
            "display": self.display,
            "history": None
            if self._owns_history
            else keras.saving.serialize_keras_object(self.history),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TrainingPlotter:
        """Creates a `TrainingPlotter` from `get_config()`'s output.

        Args:
            config: The dict `get_config()` returned.

        Returns:
            A new `TrainingPlotter`.
        """
        config = dict(config)
        if isinstance(config.get("history"), dict):
            config["history"] = keras.saving.deserialize_keras_object(config["history"])
        return cls(**config)

    def __getstate__(self) -> dict[str, Any]:
        self.wait()
        state = _keras_internals.picklable_state(self)
        for name in ("_image", "_error", "_fit_options"):
            del state[name]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._init_runtime()
        self.__dict__.update(state)
