"""Where `keras_extras.TrainingPlotter`'s curves go: one drawing process and its typed jobs.

Drawing a figure with matplotlib takes 0.1 to 0.5 s of Python and C++ that hold the
GIL. In a thread of the training process, every training step would wait for the GIL
while a figure is drawn; a child process keeps the two apart.

Both ends of the protocol live here. The parent (`DrawingProcess`) starts `main` in a
child with `child_command()`, and a worker thread sends it one pickled `Job` per
drawing on stdin and reads one pickled reply (`{"error": ..., "png": ...}`) per job on
stdout. A job carries the `PlotOptions`, validated once when the plotter was made,
and a copy of the history's columns.

This module imports neither keras nor keras_extras's `__init__`, so the child starts
in the time matplotlib takes to import; the figure itself is drawn by
`keras_extras._plotting`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
import warnings
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from keras_extras import _plotting
from keras_extras._files import atomic_write

# The child gives way to training for the CPU it shares with it.
CHILD_NICENESS = 10

# Run with `python -c`: a bare `keras_extras` package (its `__init__` imports Keras)
# from which only this module, `_plotting` and `_files` are imported, without the
# current folder that `-c` puts first on sys.path. Tests put their own lines before
# the last one.
CHILD_PRELUDE = """\
import importlib, sys, types
del sys.path[0]
package = types.ModuleType("keras_extras")
package.__path__ = [sys.argv[1]]
sys.modules["keras_extras"] = package
"""
_BOOTSTRAP = CHILD_PRELUDE + 'importlib.import_module("keras_extras._drawing").main()\n'


def child_command() -> list[str]:
    """The command that starts a drawing child process."""
    return [sys.executable, "-c", _BOOTSTRAP, os.path.dirname(os.path.abspath(__file__))]


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
    normalised (`directory` a `str`, `modes` a dict, `figsize` a tuple of floats).

    Raises:
        ImportError: if matplotlib is missing.
        ValueError: for an argument out of range, a file name of a format
            matplotlib cannot write, or a `snapshot` without an `{epoch}` field.
    """

    directory: str | os.PathLike
    filename: str = "training.png"
    snapshot: str | None = None
    every_n_epochs: int = 1
    smoothing: float = 0.0
    yscale: str = "linear"
    modes: Mapping[str, str] = dataclasses.field(default_factory=dict, hash=False)
    figsize: Sequence[float] | None = None
    display: bool = False
    # The format of `filename` and of `snapshot`, from their extensions.
    formats: dict[str, str] = dataclasses.field(init=False, repr=False, hash=False)

    def __post_init__(self) -> None:
        writable = matplotlib_formats()
        formats = {"filename": _format_of(self.filename, writable, "filename")}
        if self.snapshot is not None:
            formats["snapshot"] = _format_of(self.snapshot, writable, "snapshot")
            self._check_snapshot(self.snapshot)
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
        normalised = {
            "directory": os.fspath(self.directory),
            "smoothing": float(self.smoothing),
            "modes": modes,
            "figsize": figsize,
            "display": bool(self.display),
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

    def targets(self, epoch: int, snapshot: bool) -> list[tuple[str, str]]:
        """The files that a drawing of 0-based `epoch` writes, with their formats."""
        targets = [(os.path.join(self.directory, self.filename), self.formats["filename"])]
        if snapshot and self.snapshot:
            name = self.snapshot.format(epoch=epoch + 1)
            targets.append((os.path.join(self.directory, name), self.formats["snapshot"]))
        return targets

    def check_folders(self) -> None:
        """Creates the output folders and checks that a file can be created in each.

        Raises:
            OSError: naming the folder that cannot be created or written to.
        """
        for folder in {os.path.dirname(path) for path, _ in self.targets(0, snapshot=True)}:
            probe = os.path.join(folder, f".keras_extras_probe_{uuid.uuid4().hex[:12]}")
            try:
                os.makedirs(folder, exist_ok=True)
                with open(probe, "xb"):
                    pass
                os.unlink(probe)
            except OSError as error:
                raise OSError(
                    f"TrainingPlotter cannot write its plots to the folder {folder!r}: {error}"
                ) from error


@dataclasses.dataclass(frozen=True)
class Job:
    """One drawing: the options, the history's columns after `epoch`, and the best-epoch modes.

    `batches` holds the `step` and `loss` columns of the history's `batches` table
    and `epochs` all of its `epochs` table, as float64 copies. `modes` maps a
    metric to "min" or "max" (what Keras knows, overridden by `options.modes`).
    `snapshot` asks for the snapshot file too; `png` asks for the PNG in the reply.
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
        epoch: int,
        snapshot: bool,
        batches: Mapping[str, Sequence[float]],
        epochs: Mapping[str, Sequence[float]],
        directions: Mapping[str, str],
        png: bool,
    ) -> Job:
        """Copies the columns that the drawing needs, so that training may go on."""
        return cls(
            options,
            epoch,
            snapshot,
            {k: np.asarray(batches[k], np.float64) for k in ("step", "loss") if k in batches},
            {k: np.asarray(v, np.float64) for k, v in epochs.items()},
            {**directions, **options.modes},
            png,
        )


def run_job(drawing: _plotting.Drawing, job: Job) -> bytes | None:
    """Draws one job and writes its files; returns PNG bytes if the job asks."""
    options = job.options
    data = {"batches": job.batches, "epochs": job.epochs}
    drawing.draw(data, options.smoothing, options.yscale, job.modes, options.figsize)
    encoded: dict[str, bytes] = {}
    for path, fmt in options.targets(job.epoch, job.snapshot):
        if fmt not in encoded:
            encoded[fmt] = drawing.encode(fmt)
        atomic_write(path, encoded[fmt])
    if job.png:
        return encoded.get("png") or drawing.encode("png")
    return None


def main() -> None:
    """The child: serves drawing jobs from stdin until it closes; one reply per job."""
    if hasattr(os, "nice"):
        with contextlib.suppress(OSError):
            os.nice(CHILD_NICENESS)
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    # Whatever else prints must not corrupt the replies.
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    jobs = sys.stdin.buffer
    drawing = None
    while True:
        try:
            job = pickle.load(jobs)
        except EOFError:
            return
        reply: dict[str, Any] = {"error": None, "png": None}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                drawing = drawing or _plotting.Drawing()
                reply["png"] = run_job(drawing, job)
        except Exception:  # noqa: BLE001 - the parent reports it
            reply["error"] = traceback.format_exc(limit=4)
        pickle.dump(reply, replies, protocol=pickle.HIGHEST_PROTOCOL)
        replies.flush()


def _end_child(process: subprocess.Popen, stderr: Any) -> None:
    """Ends a child that is idle or finishing its job, and releases its pipes."""
    if process.stdin is not None:
        # Closing its stdin ends the child once its current job is written.
        with contextlib.suppress(OSError):
            process.stdin.close()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stdout is not None:
        with contextlib.suppress(OSError):
            process.stdout.close()
    stderr.close()


def only_rewrites_plot_file(job: Job) -> bool:
    """Whether `job`'s only output is the plot file: no snapshot file, no PNG for a notebook.

    Such a job may wait, or be dropped when a later job rewrites that file.
    """
    return len(job.options.targets(job.epoch, job.snapshot)) == 1 and not job.png


# After each drawing, a job that only rewrites the plot file waits this many times
# as long as that drawing took, unless `wait` is called: when epochs end faster than
# figures are drawn, the child draws a quarter of the time at most, on cores that
# training uses, and the plot file is still redrawn several times a second.
REST_PER_DRAWING = 3.0


class DrawingProcess:
    """The parent side: a child process fed, one job at a time, by a worker thread.

    Jobs are queued and run in order. One that `only_rewrites_plot_file` is
    dropped when a later job is queued behind it, and otherwise waits until the
    child has rested `REST_PER_DRAWING` times as long as its last drawing took.
    `wait` ends the rest and returns once every job queued so far is written or
    dropped. Errors never propagate: each is passed to `on_error`, and each PNG a
    job asked for to `on_png`, both called in the worker thread. The child lives
    from `start` until `close`, or until this object is garbage-collected or
    Python exits, whichever comes first.

    Args:
        on_png: Called with the PNG bytes of each job with `png=True`.
        on_error: Called with each exception.
    """

    def __init__(
        self, on_png: Callable[[bytes], None], on_error: Callable[[BaseException], None]
    ) -> None:
        self._on_png, self._on_error = on_png, on_error
        self._job_lock = threading.Lock()
        # Notified when a job is queued or a `wait` begins; both end a rest.
        self._job_added = threading.Condition(self._job_lock)
        self._jobs: deque[Job] = deque()
        self._worker: threading.Thread | None = None
        self._waiting = 0  # threads in `wait`: no rest while there are any
        self._rest_until = 0.0  # time.monotonic() before which plot-file jobs wait
        self._process: subprocess.Popen | None = None
        self._stderr: Any = None
        self._finalizer: weakref.finalize | None = None

    def start(self) -> subprocess.Popen:
        """Starts the child, unless it runs; an OSError if it cannot be started."""
        if self._process is not None and self._process.poll() is None:
            return self._process
        self._discard()
        # A file, not a pipe: nobody has to drain it, and a crash's message can
        # be read back.
        self._stderr = tempfile.TemporaryFile()
        # The child never selects a backend: a notebook's MPLBACKEND, which
        # matplotlib validates on import, is of no use to it.
        env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
        self._process = subprocess.Popen(
            child_command(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
        )
        # Ends the child with this object, or at exit; never refers to `self`.
        self._finalizer = weakref.finalize(self, _end_child, self._process, self._stderr)
        return self._process

    def submit(self, job: Job) -> None:
        """Queues `job` and returns at once."""
        with self._job_lock:
            self._jobs.append(job)
            self._job_added.notify_all()
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._work, name="keras_extras.TrainingPlotter", daemon=True
                )
                self._worker.start()

    def wait(self) -> None:
        """Blocks until every job queued so far is written, without rests."""
        with self._job_lock:
            self._waiting += 1
            self._job_added.notify_all()
        try:
            while True:
                with self._job_lock:
                    worker = self._worker
                if worker is None:
                    return
                worker.join()
        finally:
            with self._job_lock:
                self._waiting -= 1

    def close(self) -> None:
        """Waits for the queued jobs, then ends the child."""
        self.wait()
        finalizer, self._finalizer = self._finalizer, None
        self._process = self._stderr = None
        if finalizer is not None:
            finalizer()

    def _work(self) -> None:
        # This thread mostly waits on the child's pipe, without the GIL.
        while True:
            with self._job_lock:
                job = self._next_job()
                if job is None:
                    self._worker = None
                    return
            started = time.monotonic()
            try:
                png = self._run(job)
                if png is not None:
                    self._on_png(png)
            except Exception as error:  # noqa: BLE001 - reported on the training thread
                self._on_error(error)
            ended = time.monotonic()
            self._rest_until = ended + REST_PER_DRAWING * (ended - started)

    def _next_job(self) -> Job | None:
        """The job to run next, or None when none is left; called holding the lock."""
        while self._jobs:
            job = self._jobs[0]
            if only_rewrites_plot_file(job):
                if len(self._jobs) > 1:
                    # A later job rewrites the same file with more data.
                    self._jobs.popleft()
                    continue
                rest = self._rest_until - time.monotonic()
                if rest > 0 and not self._waiting:
                    # Until the rest is over, a job is queued or a `wait` begins.
                    self._job_added.wait(rest)
                    continue
            return self._jobs.popleft()
        return None

    def _run(self, job: Job) -> bytes | None:
        process = self.start()
        # Both are pipes: never None.
        assert process.stdin is not None and process.stdout is not None
        try:
            pickle.dump(job, process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            process.stdin.flush()
            reply = pickle.load(process.stdout)
        except (OSError, EOFError, pickle.UnpicklingError) as error:
            process.kill()
            code = process.wait()
            self._stderr.seek(0)
            said = self._stderr.read().decode("utf-8", "replace").strip()[-2000:]
            self._discard()
            paths = [path for path, _ in job.options.targets(job.epoch, job.snapshot)]
            raise RuntimeError(
                f"the drawing process stopped (exit code {code}) while writing {paths}"
                + (f":\n{said}" if said else "")
            ) from error
        if reply["error"]:
            raise RuntimeError(f"drawing failed in the drawing process:\n{reply['error']}")
        return reply["png"]

    def _discard(self) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.kill()
            process.wait()
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
