"""What `keras_extras.LossHistory` records, without Keras: three tables and the recovery.

Keras passes `on_train_batch_end` the running mean `m_k` of each metric after the
`k`-th step of the epoch. A span of steps `(done, end]` has its own value

```
value = (end * m_end - done * m_done) / (end - done)
```

(a root mean, such as RMSE, is squared first and the root taken after). `HistoryCore`
keeps each epoch's running values until the epoch closes, then appends one row per
span to `running` (the values as logged) and `batches` (the spans' own values), and
one row to `epochs`.

It needs no model: what it would learn from Keras (which log names are running means,
how many steps a batch index ends) is passed in as plain values and callables. Its
operations are idempotent where two callbacks may drive one core in the same `fit` (a
`LossHistory` and the `TrainingPlotter` that draws it): an epoch opens and closes once,
and a batch index is recorded once per epoch.
"""

from __future__ import annotations

import csv
import io
import json
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

# How a span's own value follows from the running values at its two ends.
MEAN = "mean"
ROOT_MEAN = "root_mean"

INDEX_COLUMNS = ("epoch", "step")


def own_value(kind: str | None, value: float, before: float | None, done: int, end: int) -> float:
    """The own value of steps `(done, end]` from the running values at `end` and `done`.

    Args:
        kind: `MEAN`, `ROOT_MEAN`, or `None` for a value that is not a running mean.
        value: The running value after `end` steps.
        before: The running value after `done` steps (ignored when `done` is 0).
        done: Steps of the epoch done before the span.
        end: Steps of the epoch done after it; greater than `done`.

    Returns:
        The span's own value; NaN when `kind` is `None` or `before` is unknown.
    """
    before = 0.0 if done == 0 else before
    if kind is None or before is None:
        return math.nan
    if kind == ROOT_MEAN:
        square = (end * value * value - done * before * before) / (end - done)
        # Rounding can take a zero mean square slightly below zero.
        return math.sqrt(max(square, 0.0)) if not math.isnan(square) else math.nan
    return (end * value - done * before) / (end - done)


def append_row(table: dict[str, list], epoch: int, step: int, row: Mapping[str, float]) -> None:
    """Appends a row; a column seen for the first time is NaN in earlier rows."""
    length = len(table["epoch"])
    for name in row:
        if name not in table:
            table[name] = [math.nan] * length
    table["epoch"].append(epoch)
    table["step"].append(step)
    for name, column in table.items():
        if name not in INDEX_COLUMNS:
            column.append(row.get(name, math.nan))


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class HistoryCore:
    """The `batches`, `running` and `epochs` tables, and how a batch's value is recovered.

    A fit drives it as `begin_fit`, then per epoch `open_epoch`, `record_batch` for
    each callback call (in any order, from any thread), `close_epoch`; and `end_fit`.

    Args:
        metrics: Log names to record (their `val_` twins at epoch level), or `None`
            for every scalar.
    """

    def __init__(self, metrics: Sequence[str] | None = None) -> None:
        self.metrics = None if metrics is None else list(metrics)
        self.batches: dict[str, list] = {"epoch": [], "step": []}
        self.running: dict[str, list] = {"epoch": [], "step": []}
        self.epochs: dict[str, list] = {"epoch": [], "step": []}
        self._step = 0
        self._kinds: dict[str, str | None] = {}
        self._checked = metrics is None
        self._pending: dict[int, Mapping[str, Any]] = {}
        self._open = False
        self._epoch_logs: Mapping[str, Any] | None = None

    def wanted(self, name: str) -> bool:
        """Whether the log name `name` is recorded."""
        return self.metrics is None or name.removeprefix("val_") in self.metrics

    def scalars(self, logs: Mapping[str, Any] | None) -> dict[str, float]:
        """The recorded scalars of `logs`, as floats."""
        return {
            name: float(value)
            for name, value in (logs or {}).items()
            if isinstance(value, numbers.Real) and self.wanted(name)
        }

    def begin_fit(self) -> None:
        """Forgets how the last fit's names were recovered: the model may be compiled again."""
        self._kinds = {}
        self._checked = self.metrics is None

    def open_epoch(self) -> None:
        """Completes the last epoch's row and opens an epoch; again before a batch, a no-op."""
        self.complete_epoch()
        self._pending = {}
        self._open = True

    def record_batch(self, batch: int, logs: Mapping[str, Any] | None) -> None:
        """Keeps the running values that Keras passed with batch index `batch`, once."""
        # One atomic dict operation: Keras may call from several threads, out of order.
        self._pending.setdefault(batch, logs or {})

    def close_epoch(
        self,
        epoch: int,
        logs: Mapping[str, Any] | None,
        steps: int | None,
        batch_end: Callable[[int], int],
        kinds: Callable[[], Mapping[str, str | None]],
    ) -> None:
        """Appends the epoch's batch rows and its epoch row; a no-op if no epoch is open.

        Args:
            epoch: Keras's 0-based epoch index.
            logs: The epoch-end logs; kept, so that what is added to them later
                reaches the row (see `complete_epoch`).
            steps: The epoch's number of steps, `None` if unknown.
            batch_end: Maps a batch index that Keras passed to the number of the
                epoch's steps done after it (more than one with `steps_per_execution`).
            kinds: Returns `MEAN`, `ROOT_MEAN` or `None` for each log name; called
                only when a batch logs a name not seen in this fit.

        Raises:
            ValueError: at the first epoch of a fit, when a name in `metrics` is
                not in `logs`.
        """
        if not self._open:
            return
        self._open = False
        pending, self._pending = sorted(self._pending.items()), {}
        self._check_metrics(logs)
        names = {name for _, batch_logs in pending for name in batch_logs}
        if not names <= self._kinds.keys():
            # A name that is no metric (one a custom `train_step` adds) is not
            # looked up again in this fit.
            self._kinds.update(dict.fromkeys(names), **kinds())
        done = 0
        previous: dict[str, float] = {}
        for batch, batch_logs in pending:
            # With steps_per_execution, the last span may overshoot the epoch.
            end = batch_end(batch)
            end = min(end, steps) if steps else end
            if end <= done:
                continue
            self._step += end - done
            raw = self.scalars(batch_logs)
            own = {
                name: own_value(self._kinds.get(name), value, previous.get(name), done, end)
                for name, value in raw.items()
            }
            append_row(self.running, epoch, self._step, raw)
            append_row(self.batches, epoch, self._step, own)
            previous, done = raw, end
        append_row(self.epochs, epoch, self._step, self.scalars(logs))
        self._epoch_logs = logs

    def complete_epoch(self) -> None:
        """Records in the last epoch's row what was added to its logs after it closed.

        Callbacks listed after a `LossHistory` may still add to the logs
        (`LearningRateScheduler` adds `learning_rate`), and `History`, called last,
        records that too.
        """
        logs, self._epoch_logs = self._epoch_logs, None
        length = len(self.epochs["epoch"])
        for name, value in self.scalars(logs).items():
            self.epochs.setdefault(name, [math.nan] * length)[-1] = value

    def to_dict(self) -> dict[str, dict[str, list]]:
        """The three tables, copied: `{"batches": ..., "running": ..., "epochs": ...}`."""
        tables = {"batches": self.batches, "running": self.running, "epochs": self.epochs}
        return {name: {k: list(v) for k, v in table.items()} for name, table in tables.items()}

    def csv_text(self) -> str:
        """The three tables as one CSV text, a `table` column first (see `LossHistory.to_csv`)."""
        tables = self.to_dict()
        names: list[str] = []
        for table in tables.values():
            names += [n for n in table if n not in INDEX_COLUMNS and n not in names]
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["table", *INDEX_COLUMNS, *names])
        for table_name, table in tables.items():
            for i in range(len(table["epoch"])):
                values = [table[n][i] if n in table else math.nan for n in names]
                index = [table_name, table["epoch"][i], table["step"][i]]
                writer.writerow(index + [repr(v) for v in values])
        return text.getvalue()

    def json_text(self) -> str:
        """`to_dict()` as JSON text, `null` for each non-finite value (JSON has none)."""
        tables = {
            name: {k: [_json_safe(v) for v in column] for k, column in table.items()}
            for name, table in self.to_dict().items()
        }
        return json.dumps(tables, allow_nan=False)

    def _check_metrics(self, logs: Mapping[str, Any] | None) -> None:
        if self._checked or not logs or self.metrics is None:
            return
        self._checked = True
        unknown = [name for name in self.metrics if name not in logs]
        if unknown:
            raise ValueError(
                f"LossHistory(metrics={self.metrics!r}): {unknown} are not in the training "
                f"logs. The logs hold {sorted(logs)}."
            )
