"""What `keras_extras.TrainingPlotter` draws and where: its checked options, and one job.

`PlotOptions` holds the plotter's arguments, checked once when the plotter is made.
A `Job` is one drawing: the options and a copy of the history's columns, which the
drawing process (`keras_extras_core.plot_process`) receives pickled and hands to
`run_job`, which draws the figure and writes its files.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Mapping, Sequence

import numpy as np

from keras_extras_core.figure import TrainingFigure
from keras_extras_core.files import atomic_write

DISPLAY_CHOICES = (True, False, "auto")


def matplotlib_formats() -> dict[str, str]:
    """The file formats matplotlib writes; an ImportError naming the extra if it is missing."""
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError as error:
        raise ImportError(
            "TrainingPlotter needs matplotlib, which is not installed. Install it with "
            "`pip install keras-extras[plot]`."
        ) from error
    return FigureCanvasBase.get_supported_filetypes()


def _format_of(name: str, formats: Mapping[str, str], argument: str) -> str:
    extension = os.path.splitext(name)[1].lower().lstrip(".")
    if extension not in formats:
        raise ValueError(
            f"`{argument}` {name!r} has no file extension that matplotlib writes; use one "
            f"of {sorted(formats)}."
        )
    return extension


@dataclasses.dataclass(frozen=True)
class PlotOptions:
    """What to draw and where: `TrainingPlotter`'s arguments, checked once.

    The arguments are `TrainingPlotter`'s (see its docstring); they are stored
    normalised (`directory` a `str` or `None`, `modes` a dict, `figsize` a tuple of
    floats).

    Raises:
        ImportError: if matplotlib is missing.
        ValueError: for an argument out of range, a file name of a format
            matplotlib cannot write, a `snapshot` without an `{epoch}` field or
            without a `directory`, or nowhere to draw (no `directory` and
            `display=False`).
    """

    directory: str | os.PathLike | None = None
    filename: str = "training.png"
    snapshot: str | None = None
    every_n_epochs: int = 1
    smoothing: float = 0.0
    yscale: str = "linear"
    modes: Mapping[str, str] = dataclasses.field(default_factory=dict, hash=False)
    figsize: Sequence[float] | None = None
    display: bool | str = "auto"
    # The format of `filename` and of `snapshot`, from their extensions.
    formats: dict[str, str] = dataclasses.field(init=False, repr=False, hash=False)

    def __post_init__(self) -> None:
        writable = matplotlib_formats()
        formats = {"filename": _format_of(self.filename, writable, "filename")}
        if self.snapshot is not None:
            formats["snapshot"] = _format_of(self.snapshot, writable, "snapshot")
            self._check_snapshot(self.snapshot)
            if self.directory is None:
                raise ValueError(
                    f"`snapshot` {self.snapshot!r} needs a `directory` to write its files to."
                )
        every = self.every_n_epochs
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError(f"`every_n_epochs` must be an integer >= 1, but it is {every!r}.")
        if not 0.0 <= self.smoothing < 1.0:
            raise ValueError(f"`smoothing` must be in [0, 1), but it is {self.smoothing!r}.")
        if self.yscale not in ("linear", "log"):
            raise ValueError(f"`yscale` must be 'linear' or 'log', but it is {self.yscale!r}.")
        modes = dict(self.modes or {})
        for name, mode in modes.items():
            if mode not in ("min", "max"):
                raise ValueError(
                    f"`modes` values must be 'min' or 'max', but modes[{name!r}] is {mode!r}."
                )
        figsize = self.figsize
        if figsize is not None:
            if len(figsize) != 2 or not all(float(v) > 0 for v in figsize):
                raise ValueError(f"`figsize` must be two positive numbers, but it is {figsize!r}.")
            figsize = (float(figsize[0]), float(figsize[1]))
        if not any(self.display is choice for choice in DISPLAY_CHOICES):
            raise ValueError(
                f"`display` must be True, False or 'auto', but it is {self.display!r}."
            )
        if self.directory is None and self.display is False:
            raise ValueError(
                "TrainingPlotter(directory=None, display=False) would draw nowhere: pass a "
                "`directory` for the plot files, or leave `display` on."
            )
        normalised = {
            "directory": None if self.directory is None else os.fspath(self.directory),
            "smoothing": float(self.smoothing),
            "modes": modes,
            "figsize": figsize,
            "formats": formats,
        }
        for name, value in normalised.items():
            object.__setattr__(self, name, value)

    @staticmethod
    def _check_snapshot(snapshot: str) -> None:
        try:
            first, second = snapshot.format(epoch=1), snapshot.format(epoch=2)
        except (KeyError, IndexError, ValueError) as error:
            raise ValueError(
                f"`snapshot` must be a pattern whose only field is {{epoch}}, but it is "
                f"{snapshot!r} ({error!r})."
            ) from None
        if first == second:
            raise ValueError(f"`snapshot` must contain an {{epoch}} field, but it is {snapshot!r}.")

    def plot_file(self) -> str | None:
        """The file rewritten at every drawing, or None without a `directory`."""
        return None if self.directory is None else os.path.join(self.directory, self.filename)

    def targets(self, epoch: int, snapshot: bool) -> list[tuple[str, str]]:
        """The files that a drawing after the 1-based `epoch` writes, with their formats."""
        plot_file = self.plot_file()
        if plot_file is None:
            return []
        targets = [(plot_file, self.formats["filename"])]
        if snapshot and self.snapshot:
            name = os.path.join(os.path.dirname(plot_file), self.snapshot.format(epoch=epoch))
            targets.append((name, self.formats["snapshot"]))
        return targets

    def check_folders(self) -> None:
        """Creates the output folders and checks that a file can be created in each.

        Raises:
            OSError: naming the folder that cannot be created or written to.
        """
        for folder in {os.path.dirname(path) for path, _ in self.targets(1, snapshot=True)}:
            probe = os.path.join(folder, f".keras_extras_probe_{uuid.uuid4().hex[:12]}")
            try:
                os.makedirs(folder, exist_ok=True)
                with open(probe, "xb"):
                    pass
                os.unlink(probe)
            except OSError as error:
                # The probe's name would only confuse: the folder is what to fix.
                raise OSError(
                    error.errno,
                    f"TrainingPlotter cannot write its plots to the folder {folder!r}: "
                    f"{error.strerror}",
                ) from error


@dataclasses.dataclass(frozen=True)
class Job:
    """One drawing: the options, the history's columns after `epoch`, and the best-epoch modes.

    `epoch` is the 1-based count of the epochs in `epochs`. `batches` holds the
    `step` and `loss` columns of the history's `batches` table and `epochs` all of
    its `epochs` table, as float64 copies. `modes` maps a metric to "min" or "max"
    (what Keras knows, overridden by `options.modes`). `snapshot` asks for the
    snapshot file too; `png` asks for the PNG in the reply.
    """

    options: PlotOptions
    epoch: int
    snapshot: bool
    batches: dict[str, np.ndarray]
    epochs: dict[str, np.ndarray]
    modes: dict[str, str]
    png: bool = False

    @classmethod
    def of(
        cls,
        options: PlotOptions,
        snapshot: bool,
        batches: Mapping[str, Sequence[float]],
        epochs: Mapping[str, Sequence[float]],
        directions: Mapping[str, str],
        png: bool,
    ) -> Job:
        """Copies the columns that the drawing needs, so that training may go on."""
        return cls(
            options,
            len(epochs["epoch"]),
            snapshot,
            {k: np.asarray(batches[k], np.float64) for k in ("step", "loss") if k in batches},
            {k: np.asarray(v, np.float64) for k, v in epochs.items()},
            {**directions, **options.modes},
            png,
        )

    def files(self) -> list[str]:
        """The paths this job writes."""
        return [path for path, _ in self.options.targets(self.epoch, self.snapshot)]


def run_job(figure: TrainingFigure, job: Job) -> bytes | None:
    """Draws one job and writes its files; returns PNG bytes if the job asks."""
    options = job.options
    data = {"batches": job.batches, "epochs": job.epochs}
    figure.draw(data, options.smoothing, options.yscale, job.modes, options.figsize)
    encoded: dict[str, bytes] = {}
    for path, fmt in options.targets(job.epoch, job.snapshot):
        if fmt not in encoded:
            encoded[fmt] = figure.encode(fmt)
        atomic_write(path, encoded[fmt])
    if job.png:
        return encoded.get("png") or figure.encode("png")
    return None
