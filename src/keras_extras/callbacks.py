"""Callbacks: a per-batch `LossHistory`, and a `TrainingPlotter` that draws it."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import numbers
import os
import pickle
import subprocess
import sys
import tempfile
import threading
import uuid
import warnings
from collections import deque
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from keras_extras import _keras_internals, _plotting
from keras_extras._export import export
from keras_extras._files import atomic_write
from keras_extras.metrics import RootMeanSquaredError

# How a batch's own value is recovered from two consecutive running values.
_MEAN = "mean"
_ROOT_MEAN = "root_mean"
_ROOT_MEANS = (keras.metrics.RootMeanSquaredError, RootMeanSquaredError)

_INDEX_COLUMNS = ("epoch", "step")


def _log_names(model: Any) -> dict[str, Any]:
    """Maps each key of `model`'s training logs to the metric object behind it."""
    found: dict[str, Any] = {}
    for metric in getattr(model, "metrics", None) or []:
        if hasattr(metric, "_flat_metrics"):
            found.update(_compile_metric_names(metric))
        else:
            found[metric.name] = metric
    return found


def _compile_metric_names(compiled: Any) -> dict[str, Any]:
    # Mirrors how `CompileMetrics.result()` names its entries: an output-name
    # prefix, a numeric suffix on clashes, "weighted_" for weighted clashes.
    found: dict[str, Any] = {}
    counters: dict[str, int] = {}
    groups = ((False, compiled._flat_metrics), (True, compiled._flat_weighted_metrics))
    for weighted, lists in groups:
        for metric_list in lists:
            if not metric_list:
                continue
            prefix = f"{metric_list.output_name}_" if metric_list.output_name else ""
            for metric in metric_list.metrics:
                name = prefix + metric.name
                if name in counters:
                    if weighted:
                        name = prefix + "weighted_" + metric.name
                    if name in counters:
                        counters[name] += 1
                        name = f"{name}_{counters[name] - 1}"
                counters.setdefault(name, 1)
                found[name] = metric
    return found


def _recovery(metric: Any) -> str | None:
    """How a batch's own value of `metric` follows from its running values."""
    if isinstance(metric, _ROOT_MEANS):
        return _ROOT_MEAN
    if isinstance(metric, keras.metrics.Mean) and type(metric).result is keras.metrics.Mean.result:
        return _MEAN
    return None


def _append_row(table: dict[str, list], epoch: int, step: int, row: dict[str, float]) -> None:
    """Appends a row; a column seen for the first time is NaN in earlier rows."""
    length = len(table["epoch"])
    for name in row:
        if name not in table:
            table[name] = [math.nan] * length
    table["epoch"].append(epoch)
    table["step"].append(step)
    for name, column in table.items():
        if name not in _INDEX_COLUMNS:
            column.append(row.get(name, math.nan))


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@export
class LossHistory(keras.callbacks.Callback):
    """Records each training batch's own loss and metrics, and every epoch's.

    Keras passes `on_train_batch_end` the running mean of each metric since
    the epoch began, not the batch's own value. With `m_k` that running mean
    after the `k`-th step of the epoch (1-based), and every batch of the same
    size, the batch's own value is

    ```
    value_k = k * m_k - (k - 1) * m_(k-1)
    ```

    which is what this callback records. For a metric that is the square root
    of a running mean (`keras.metrics.RootMeanSquaredError` and
    `keras_extras.RMSE`), the mean square is recovered first
    (`sqrt(k * m_k**2 - (k - 1) * m_(k-1)**2)`).

    * **Three tables.** `batches` holds the recovered per-batch values,
      `running` the raw running means exactly as Keras passed them, and
      `epochs` the epoch-end logs, `val_*` included, as `History` records
      them: with what callbacks listed after this one add to the logs
      (`learning_rate` from `LearningRateScheduler`), NaN in the epochs
      that `validation_freq` skips, and scalars only (a vector-valued
      metric such as `F1Score(average=None)` is left out). Each is a dict of
      equal-length lists, columns `epoch` (Keras's 0-based index), `step`
      (the global count of training batches done so far, continuing across
      `fit` calls) and one column per metric; a value missing in a row is
      NaN. `pandas.DataFrame(history.batches)` makes a frame of one.
    * **Which batches are exact.** The sample counts come from the step index:
      Keras gives callbacks no per-batch sample counts, and reading them from
      the model would cost a device sync per batch. Every full-size batch is
      therefore recovered exactly (up to float32 rounding of the running
      means). An epoch's *last* batch may be short, with `b` samples where the
      others have `B`; Keras weights it by `b` and the value recorded for it is
      `m_(S-1) + (v - m_(S-1)) * S * b / ((S - 1) * B + b)`, where `v` is its
      own value and `S` the number of steps in the epoch: its own value pulled
      towards the running mean before it.
    * **`steps_per_execution = n > 1`.** Keras then calls back once per `n`
      steps. One point is then the mean over those `n` batches, weighted by
      their sample counts, at the `step` of the last of them; the epoch's last
      point covers the steps left over. When Keras does not know the epoch's
      length (a generator, a dataset without cardinality), the last point is
      counted as `n` steps, and its value is exact only if the last execution
      ran all `n`.
    * **Metrics that are not running means** (Precision, AUC, F1, ...) have no
      per-batch value recoverable from the logs: their `batches` column is NaN
      and `running` keeps what Keras logged. So is every log key that is not
      one of the model's metrics (e.g. one a custom `train_step` adds). Metrics
      given as `weighted_metrics` are recovered by sample count, which is
      exact only when each batch's weight sum is proportional to its size
      (`loss` is always exact: Keras weights its tracker by batch size).
    * **Non-finite values.** A NaN or inf batch makes Keras's running mean
      non-finite until the epoch ends, so the rest of that epoch's batch values
      are NaN too.
    * **Cost.** A batch costs one list append; all arithmetic happens at the
      epoch end, on values Keras already brought to the host. The callback is
      marked `async_safe`, so on JAX and torch Keras may call it from its
      callback thread, in any order.
    * **Lifetime.** It can be passed to several `fit` calls (with or without
      `initial_epoch`): rows are appended and `step` continues. It holds no
      reference to the model after training ends, and pickles and deep-copies.

    Args:
        metrics: Names of the training metrics to record (e.g. `["loss"]`);
            their `val_` counterparts are recorded at epoch level. `None`
            records every scalar in the logs.

    Raises:
        ValueError: from the first `on_epoch_end` (Keras's own callbacks check
            their `monitor` there too), when a name in `metrics` is not in the
            logs; the message lists the names that are.

    Example:
    >>> import keras, numpy as np, keras_extras
    >>> x = np.random.default_rng(0).normal(size=(100, 4)).astype("float32")
    >>> y = x.sum(axis=1, keepdims=True)
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    >>> history = keras_extras.LossHistory()
    >>> _ = model.fit(x, y, batch_size=25, epochs=2, shuffle=False, verbose=0,
    ...               callbacks=[history])
    >>> history.batches["step"], history.epochs["epoch"]
    ([1, 2, 3, 4, 5, 6, 7, 8], [0, 1])
    >>> # With a learning rate of 0, the second batch's loss is that of x[25:50].
    >>> own = model.evaluate(x[25:50], y[25:50], verbose=0)
    >>> bool(abs(history.batches["loss"][1] - own) < 1e-4 * own)
    True
    """

    async_safe = True

    def __init__(self, metrics: Sequence[str] | None = None) -> None:
        super().__init__()
        if metrics is not None:
            if isinstance(metrics, str) or not all(isinstance(m, str) for m in metrics):
                raise ValueError(
                    f"`metrics` must be a list of metric names or None, but it is {metrics!r}."
                )
            metrics = list(metrics)
        self.metrics = metrics
        self.batches: dict[str, list] = {"epoch": [], "step": []}
        self.running: dict[str, list] = {"epoch": [], "step": []}
        self.epochs: dict[str, list] = {"epoch": [], "step": []}
        self._step = 0
        self._recoveries: dict[str, str | None] = {}
        self._checked = metrics is None
        self._pending: list[tuple[int, dict]] = []
        self._epoch_open = False
        self._epoch_logs: dict | None = None

    def _wanted(self, name: str) -> bool:
        return self.metrics is None or name.removeprefix("val_") in self.metrics

    def on_train_begin(self, logs: dict | None = None) -> None:
        """Forgets how the last fit's metrics were recovered."""
        # The model may have been compiled again since the last fit.
        self._recoveries = {}
        self._checked = self.metrics is None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        """Completes the last epoch's row, and opens the epoch."""
        self._complete_epoch()
        self._pending = []
        self._epoch_open = True

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        """Keeps the batch's running means until the epoch ends."""
        # Under async dispatch this runs on Keras's callback threads, possibly
        # out of order: keep it to one atomic append and sort at epoch end.
        self._pending.append((batch, logs or {}))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Recovers the epoch's batch values and records them and the epoch's logs."""
        # A TrainingPlotter may close the epoch before Keras calls us: once only.
        if not self._epoch_open:
            return
        self._epoch_open = False
        pending, self._pending = sorted(self._pending, key=lambda item: item[0]), []
        self._check_metrics(logs)
        if any(name not in self._recoveries for _, batch_logs in pending for name in batch_logs):
            # TensorFlow builds the compiled metrics in the first step, so they
            # are looked up here. `_model`: on JAX `model` would sync the state.
            found = _log_names(self._model)
            self._recoveries.update({name: _recovery(metric) for name, metric in found.items()})
        steps = (self.params or {}).get("steps")
        done = 0
        previous: dict[str, float] = {}
        for batch, batch_logs in pending:
            # With steps_per_execution, Keras's last `batch` may overshoot.
            end = _keras_internals.batch_end(batch, self._model)
            end = min(end, steps) if steps else end
            size = end - done
            if size <= 0:
                continue
            self._step += size
            raw = {
                name: float(value)
                for name, value in batch_logs.items()
                if isinstance(value, numbers.Real) and self._wanted(name)
            }
            own = {
                name: self._own_value(name, value, previous.get(name), done, end)
                for name, value in raw.items()
            }
            _append_row(self.running, epoch, self._step, raw)
            _append_row(self.batches, epoch, self._step, own)
            previous, done = raw, end
        _append_row(self.epochs, epoch, self._step, self._scalars(logs))
        # Callbacks after this one may still add to the logs (LearningRateScheduler
        # adds `learning_rate`), and History, called last, records that too.
        self._epoch_logs = logs

    def _scalars(self, logs: dict | None) -> dict[str, float]:
        return {
            name: float(value)
            for name, value in (logs or {}).items()
            if isinstance(value, numbers.Real) and self._wanted(name)
        }

    def _complete_epoch(self) -> None:
        """Records in the last epoch's row what later callbacks put in its logs."""
        logs, self._epoch_logs = self._epoch_logs, None
        length = len(self.epochs["epoch"])
        for name, value in self._scalars(logs).items():
            self.epochs.setdefault(name, [math.nan] * length)[-1] = value

    def _check_metrics(self, logs: dict | None) -> None:
        if self._checked or not logs:
            return
        self._checked = True
        unknown = [name for name in self.metrics if name not in logs]
        if unknown:
            raise ValueError(
                f"LossHistory(metrics={self.metrics!r}): {unknown} are not in the training "
                f"logs. The logs hold {sorted(logs)}."
            )

    def _own_value(
        self, name: str, value: float, before: float | None, done: int, end: int
    ) -> float:
        recovery = self._recoveries.get(name)
        before = 0.0 if done == 0 else before
        if recovery is None or before is None:
            return math.nan
        if recovery == _ROOT_MEAN:
            square = (end * value * value - done * before * before) / (end - done)
            # Rounding can take a zero mean square slightly below zero.
            return math.sqrt(max(square, 0.0)) if not math.isnan(square) else math.nan
        return (end * value - done * before) / (end - done)

    def on_train_end(self, logs: dict | None = None) -> None:
        """Completes the last epoch's row, and drops the reference to the model."""
        self._complete_epoch()
        self._model = None

    def to_dict(self) -> dict[str, dict[str, list]]:
        """Returns the three tables, copied.

        Returns:
            `{"batches": ..., "running": ..., "epochs": ...}`, each a dict of
            equal-length lists (see the class docstring).
        """
        return {
            "batches": {k: list(v) for k, v in self.batches.items()},
            "running": {k: list(v) for k, v in self.running.items()},
            "epochs": {k: list(v) for k, v in self.epochs.items()},
        }

    def to_csv(self, path: str | os.PathLike) -> None:
        """Writes the three tables as one CSV file, atomically.

        The columns are `table` (`batches`, `running` or `epochs`), `epoch`,
        `step`, and every metric in the order first seen. Values are written
        with `repr`, so floats read back exactly; a missing value is `nan`.

        Args:
            path: The file to write.
        """
        tables = self.to_dict()
        names: list[str] = []
        for table in tables.values():
            names += [n for n in table if n not in _INDEX_COLUMNS and n not in names]
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["table", *_INDEX_COLUMNS, *names])
        for table_name, table in tables.items():
            for i in range(len(table["epoch"])):
                values = [table[n][i] if n in table else math.nan for n in names]
                index = [table_name, table["epoch"][i], table["step"][i]]
                writer.writerow(index + [repr(v) for v in values])
        atomic_write(os.fspath(path), text.getvalue().encode("utf-8"))

    def to_json(self, path: str | os.PathLike) -> None:
        """Writes `to_dict()` as a JSON file, atomically.

        JSON has no NaN or infinity: non-finite values are written as `null`.

        Args:
            path: The file to write.
        """
        tables = {
            name: {k: [_json_safe(v) for v in column] for k, column in table.items()}
            for name, table in self.to_dict().items()
        }
        atomic_write(os.fspath(path), json.dumps(tables, allow_nan=False).encode("utf-8"))

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments.

        Returns:
            A dict with `metrics`.
        """
        return {"metrics": self.metrics}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LossHistory:
        """Creates a `LossHistory` from `get_config()`'s output.

        Args:
            config: The dict `get_config()` returned.

        Returns:
            A new, empty `LossHistory`.
        """
        return cls(**config)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_model"] = None
        return state


def _check_matplotlib() -> dict[str, str]:
    """The file formats matplotlib writes; an ImportError naming the extra if it is missing."""
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError as error:
        raise ImportError(
            "TrainingPlotter needs matplotlib, which is not installed. Install it with "
            "`pip install keras-extras[plot]`."
        ) from error
    return FigureCanvasBase.get_supported_filetypes()


def _format_of(name: str, formats: dict[str, str], argument: str) -> str:
    extension = os.path.splitext(name)[1].lower().lstrip(".")
    if extension not in formats:
        raise ValueError(
            f"`{argument}` {name!r} has no file extension that matplotlib writes; use one "
            f"of {sorted(formats)}."
        )
    return extension


def _directions(model: Any) -> dict[str, str]:
    """Maps each log name of `model` to "min" or "max", where Keras knows which."""
    directions = {}
    for name, metric in _log_names(model).items():
        direction = {"up": "max", "down": "min"}.get(getattr(metric, "_direction", None))
        if name.endswith("loss"):
            direction = "min"
        if direction:
            directions[name] = direction
    return directions


def _ipython_shell() -> Any:
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    return get_ipython() if get_ipython else None


class _DrawingProcess:
    """A child process that draws and writes plot files, one job at a time."""

    def __init__(self) -> None:
        self._process: subprocess.Popen | None = None
        self._stderr: Any = None

    def start(self) -> None:
        if self._process is not None and self._process.poll() is None:
            return
        self._discard()
        # A file, not a pipe: nobody has to drain it, and a crash's message can
        # be read back.
        self._stderr = tempfile.TemporaryFile()
        # The child never selects a backend: a notebook's MPLBACKEND, which
        # matplotlib validates on import, is of no use to it.
        env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
        self._process = subprocess.Popen(
            _plotting.child_command(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
        )

    def run(self, job: dict[str, Any]) -> bytes | None:
        self.start()
        process = self._process
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
            raise RuntimeError(
                f"the drawing process stopped (exit code {code}) while writing "
                f"{[path for path, _ in job['targets']]}" + (f":\n{said}" if said else "")
            ) from error
        if reply["error"]:
            raise RuntimeError(f"drawing failed in the drawing process:\n{reply['error']}")
        return reply["png"]

    def close(self) -> None:
        if self._process is not None:
            # Closing its stdin ends the child once its current job is written.
            with contextlib.suppress(OSError):
                self._process.stdin.close()
            try:
                self._process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._process.kill()
        self._discard()

    def _discard(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.kill()
            process.wait()
            for stream in (process.stdin, process.stdout):
                with contextlib.suppress(OSError):
                    stream.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


@export
class TrainingPlotter(keras.callbacks.Callback):
    """Draws the training curves that a `LossHistory` records, safely and fast.

    The figure has a panel with the per-batch loss (x axis: global step), then
    one panel per metric with its per-epoch training and `val_` curves (x axis:
    epoch, 1-based) and the best epoch marked.

    * **Output.** At the end of every `every_n_epochs`-th epoch, and at the end
      of training if the last epoch was not drawn, `<directory>/<filename>` is
      rewritten. `snapshot`, a pattern such as `"plot_at_epoch_{epoch}.png"`,
      also keeps one file per drawn epoch (`{epoch}` is 1-based, as in
      `keras.callbacks.ModelCheckpoint`). The format follows each file's
      extension: png, svg, pdf or any other that matplotlib writes. A PNG is
      100 dpi: `figsize` times 100 pixels.
    * **Atomic writes.** Each file is rendered in memory, written to a
      temporary file in the same folder, then moved over the old one with
      `os.replace`. A crash at any point leaves the previous plot intact (a
      hard crash may leave a hidden `.<name>.*.tmp` file beside it).
    * **Off the training process.** Drawing a figure holds Python's GIL for
      0.1 s or more, which would stall training steps if done in a thread. The
      plotter therefore draws in a child process, started at `on_train_begin`
      with a lower CPU priority and ended at `on_train_end`; the training
      thread only copies the history's columns at the end of an epoch. The
      child uses matplotlib's object-oriented API on an Agg canvas and never
      pyplot: the user's matplotlib backend and pyplot state are untouched,
      and it works headless, from any thread and in notebooks. Drawings are
      queued, never skipped; `on_train_end` (or `wait()`) returns once every
      file is complete.
    * **Faults.** The output folder is created and checked for writing at
      `on_train_begin`, before any training step. NaN and inf values are drawn
      as gaps, so a diverging run still gets its plot. An error while drawing
      never stops training: it is reported as one `RuntimeWarning` per `fit`,
      and the next drawing is tried again.
    * **Notebooks.** With `display=True` under IPython, the plot is also shown
      below the cell and updated in place at every drawing.

    The plotter fills its `history`: a new `LossHistory` by default, or the one
    passed in, which may also be passed to `fit` (in any order) without
    anything being recorded twice.

    Args:
        directory: Folder for the plot files; created if missing.
        filename: Name of the file rewritten at every drawing, in `directory`.
        snapshot: Optional pattern for one extra file per drawn epoch, in
            `directory`, with an `{epoch}` field.
        every_n_epochs: Draw at the end of every n-th epoch (counted 1-based).
        smoothing: Weight in [0, 1) of an exponential moving average drawn over
            the per-batch loss (debiased, as in TensorBoard); 0 draws none.
        yscale: `"linear"` or `"log"`, for every panel (a panel without a
            positive value stays linear).
        modes: Maps a metric name to `"min"` or `"max"`, the direction in which
            its best epoch is marked. Metrics not listed use the direction that
            Keras knows for them (losses: min, accuracies: max); one without a
            known direction gets no marker. The validation curve is marked
            when there is one.
        figsize: `(width, height)` of the figure in inches. `None`: 5 x 3.2
            per panel, two panels per row.
        display: Also show the plot inline when running under IPython; no
            effect elsewhere.
        history: The `LossHistory` to fill and draw. `None` creates one,
            available as `plotter.history`.

    Raises:
        ImportError: if matplotlib is missing; install `keras-extras[plot]`.
        ValueError: for an argument out of range, a `filename` or `snapshot`
            of a format matplotlib cannot write, or a `snapshot` without an
            `{epoch}` field. Each message names the offending value.
        OSError: from `on_train_begin`, if the output folder cannot be
            created or written to; the message names the path.

    Example:
    >>> import os, tempfile, keras, numpy as np, keras_extras
    >>> x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    >>> y = x.sum(axis=1, keepdims=True)
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> folder = tempfile.mkdtemp()
    >>> plotter = keras_extras.TrainingPlotter(
    ...     folder, snapshot="plot_at_epoch_{epoch}.png", smoothing=0.6)
    >>> _ = model.fit(x, y, batch_size=16, epochs=2, verbose=0,
    ...               callbacks=[plotter])
    >>> sorted(os.listdir(folder))
    ['plot_at_epoch_1.png', 'plot_at_epoch_2.png', 'training.png']
    >>> len(plotter.history.batches["loss"])
    8
    """

    async_safe = True

    def __init__(
        self,
        directory: str | os.PathLike,
        filename: str = "training.png",
        snapshot: str | None = None,
        every_n_epochs: int = 1,
        smoothing: float = 0.0,
        yscale: str = "linear",
        modes: dict[str, str] | None = None,
        figsize: Sequence[float] | None = None,
        display: bool = False,
        history: LossHistory | None = None,
    ) -> None:
        super().__init__()
        formats = _check_matplotlib()
        self._formats = {"filename": _format_of(filename, formats, "filename")}
        if snapshot is not None:
            self._formats["snapshot"] = _format_of(snapshot, formats, "snapshot")
            try:
                first, second = snapshot.format(epoch=1), snapshot.format(epoch=2)
            except (KeyError, IndexError, ValueError) as error:
                raise ValueError(
                    f"`snapshot` must be a pattern whose only field is {{epoch}}, but it is "
                    f"{snapshot!r} ({error!r})."
                ) from None
            if first == second:
                raise ValueError(
                    f"`snapshot` must contain an {{epoch}} field, but it is {snapshot!r}."
                )
        if (
            not isinstance(every_n_epochs, int)
            or isinstance(every_n_epochs, bool)
            or (every_n_epochs < 1)
        ):
            raise ValueError(
                f"`every_n_epochs` must be an integer >= 1, but it is {every_n_epochs!r}."
            )
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"`smoothing` must be in [0, 1), but it is {smoothing!r}.")
        if yscale not in ("linear", "log"):
            raise ValueError(f"`yscale` must be 'linear' or 'log', but it is {yscale!r}.")
        modes = dict(modes or {})
        for name, mode in modes.items():
            if mode not in ("min", "max"):
                raise ValueError(
                    f"`modes` values must be 'min' or 'max', but modes[{name!r}] is {mode!r}."
                )
        if figsize is not None:
            if len(figsize) != 2 or not all(float(v) > 0 for v in figsize):
                raise ValueError(f"`figsize` must be two positive numbers, but it is {figsize!r}.")
            figsize = (float(figsize[0]), float(figsize[1]))
        if history is not None and not isinstance(history, LossHistory):
            raise ValueError(f"`history` must be a LossHistory or None, but it is {history!r}.")
        self.directory = os.fspath(directory)
        self.filename = filename
        self.snapshot = snapshot
        self.every_n_epochs = every_n_epochs
        self.smoothing = float(smoothing)
        self.yscale = yscale
        self.modes = modes
        self.figsize = figsize
        self.display = bool(display)
        self._owns_history = history is None
        self.history = LossHistory() if history is None else history
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._lock = threading.Lock()
        self._jobs: deque = deque()
        self._worker: threading.Thread | None = None
        self._process = _DrawingProcess()
        self._display_handle = None
        self._error: BaseException | None = None
        self._warned = False
        self._feeds_history = True
        self._last_epoch: int | None = None
        self._drawn_epoch: int | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        """Checks the output folders and starts the drawing process."""
        self._check_folders()
        self._error, self._warned = None, False
        self._last_epoch = self._drawn_epoch = None
        # When Keras drives the history too, it gave both of us the same params.
        self._feeds_history = self.params is None or self.history.params is not self.params
        if self._feeds_history:
            if self.params is not None:
                self.history.set_params(self.params)
            self.history.set_model(self._model)
            self.history.on_train_begin(logs)
        # Importing matplotlib in the child overlaps with the first epoch.
        try:
            self._process.start()
        except OSError as error:
            self._error = error

    def _check_folders(self) -> None:
        paths = [self.filename] + ([self.snapshot.format(epoch=1)] if self.snapshot else [])
        for folder in {os.path.dirname(os.path.join(self.directory, p)) for p in paths}:
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

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        """Passes the call on to the history, unless Keras calls it too."""
        if self._feeds_history:
            self.history.on_epoch_begin(epoch, logs)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        """Passes the call on to the history, unless Keras calls it too."""
        if self._feeds_history:
            self.history.on_train_batch_end(batch, logs)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Queues a drawing, every `every_n_epochs` epochs."""
        # Closes the history's epoch even if Keras has not called it yet; a
        # second call does nothing.
        self.history.on_epoch_end(epoch, logs)
        self._last_epoch = epoch
        if (epoch + 1) % self.every_n_epochs == 0:
            self._queue_drawing(epoch, snapshot=True)
        self._report_error()

    def on_train_end(self, logs: dict | None = None) -> None:
        """Draws the last epoch if it was not drawn, and waits for every file."""
        if self._last_epoch is not None and self._drawn_epoch != self._last_epoch:
            self._queue_drawing(self._last_epoch, snapshot=False)
        self.wait()
        self._process.close()
        if self._feeds_history:
            self.history.on_train_end(logs)
        self._model = None
        self._report_error()

    def wait(self) -> None:
        """Blocks until every drawing queued so far is written."""
        while True:
            with self._lock:
                worker = self._worker
            if worker is None:
                return
            worker.join()

    def _queue_drawing(self, epoch: int, snapshot: bool) -> None:
        self._drawn_epoch = epoch
        try:
            batches, epochs = self.history.batches, self.history.epochs
            targets = [(os.path.join(self.directory, self.filename), self._formats["filename"])]
            if snapshot and self.snapshot:
                path = os.path.join(self.directory, self.snapshot.format(epoch=epoch + 1))
                targets.append((path, self._formats["snapshot"]))
            job = {
                "data": {
                    "batches": {
                        k: np.asarray(batches[k], dtype=np.float64)
                        for k in ("step", "loss")
                        if k in batches
                    },
                    "epochs": {k: np.asarray(v, dtype=np.float64) for k, v in epochs.items()},
                },
                "targets": targets,
                "smoothing": self.smoothing,
                "yscale": self.yscale,
                "modes": {**_directions(self._model), **self.modes},
                "figsize": self.figsize,
                "png": self.display and _ipython_shell() is not None,
            }
        except Exception as error:  # noqa: BLE001 - plotting must never stop training
            self._error = self._error or error
            return
        with self._lock:
            self._jobs.append(job)
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._work, name="keras_extras.TrainingPlotter", daemon=True
                )
                self._worker.start()

    def _work(self) -> None:
        # This thread mostly waits on the child's pipe, without the GIL.
        while True:
            with self._lock:
                if not self._jobs:
                    self._worker = None
                    return
                job = self._jobs.popleft()
            try:
                png = self._process.run(job)
                if png is not None:
                    self._show(png)
            except Exception as error:  # noqa: BLE001 - reported on the training thread
                self._error = self._error or error

    def _show(self, png: bytes) -> None:
        from IPython.display import Image, display

        if self._display_handle is None:
            self._display_handle = display(Image(data=png), display_id=True)
        else:
            self._display_handle.update(Image(data=png))

    def _report_error(self) -> None:
        if self._error is not None and not self._warned:
            self._warned = True
            warnings.warn(
                f"TrainingPlotter could not draw its plot in {self.directory!r}: "
                f"{self._error}. Training goes on; this warning is not repeated in this fit.",
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
        state = self.__dict__.copy()
        for name in ("_lock", "_jobs", "_worker", "_process", "_display_handle", "_error"):
            del state[name]
        state["_model"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._init_runtime()
        self.__dict__.update(state)
