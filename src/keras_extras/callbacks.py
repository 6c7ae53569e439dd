"""`LossHistory`: the callback that records each batch's own loss and metrics."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import keras

from keras_extras import _keras_internals
from keras_extras._export import export
from keras_extras.metrics import RootMeanSquaredError
from keras_extras_core.files import atomic_write
from keras_extras_core.history import MEAN, ROOT_MEAN, HistoryCore

_ROOT_MEANS = (keras.metrics.RootMeanSquaredError, RootMeanSquaredError)


def _recovery(metric: Any) -> str | None:
    """How a batch's own value of `metric` follows from its running values."""
    if isinstance(metric, _ROOT_MEANS):
        return ROOT_MEAN
    if isinstance(metric, keras.metrics.Mean) and type(metric).result is keras.metrics.Mean.result:
        return MEAN
    return None


def _log_metrics(model: Any) -> dict[str, Any]:
    """Maps each key of `model`'s training logs to the metric object behind it.

    `model.metrics` holds the loss tracker, one object for the compiled metrics and
    the rest; the logs name a compiled metric as `CompileMetrics.result()` does,
    which is copied here: the output name as a prefix, then on a clash a
    `weighted_` prefix for a weighted metric, then a numeric suffix.
    tests/test_callbacks.py compares these names with Keras's own logs.
    """
    if model is None:
        return {}
    compiled = _keras_internals.compiled_metrics_object(model)
    found: dict[str, Any] = {}
    taken: dict[str, int] = {}  # name: how many metrics asked for it
    for metric in model.metrics:
        if metric is not compiled:
            found[metric.name] = metric
            continue
        unweighted, weighted = _keras_internals.compiled_metric_lists(compiled)
        groups = [(False, *group) for group in unweighted] + [(True, *g) for g in weighted]
        for is_weighted, output_name, metrics in groups:
            prefix = f"{output_name}_" if output_name else ""
            for each in metrics:
                name = prefix + each.name
                if name in taken and is_weighted:
                    name = prefix + "weighted_" + each.name
                if name in taken:
                    taken[name] += 1
                    name = f"{name}_{taken[name] - 1}"
                else:
                    taken[name] = 1
                found[name] = each
    return found


def _close_epoch(
    callback: keras.callbacks.Callback, core: HistoryCore, epoch: int, logs: Any
) -> None:
    """Closes `core`'s epoch, with what it needs to know of `callback`'s model and params."""
    # Not `callback.model`: on JAX it would copy the training state at every epoch.
    model = _keras_internals.callback_model(callback)
    # With steps_per_execution, a batch index is the last step of its execution, or
    # on Keras 3.10 the first: `batch + span` steps are done after it.
    span = 1
    if not _keras_internals.batch_index_is_last_step():
        span = getattr(model, "steps_per_execution", None) or 1
    core.close_epoch(
        epoch,
        logs,
        steps=(callback.params or {}).get("steps"),
        batch_end=lambda batch: batch + span,
        # TensorFlow builds the compiled metrics in the first step: looked up here.
        kinds=lambda: {name: _recovery(metric) for name, metric in _log_metrics(model).items()},
    )


@export
class LossHistory(keras.callbacks.Callback):
    """Records the loss and metrics of every training batch, and every epoch's logs.

    Keras passes batch callbacks the running mean of each metric since the epoch
    began. This callback recovers each batch's own value from them: with `m_k`
    the running mean after the `k`-th step of the epoch,

    ```
    value_k = k * m_k - (k - 1) * m_(k-1)
    ```

    It keeps three tables, each a dict of equal-length lists with the columns
    `epoch` (Keras's index), `step` (training batches done so far, across `fit`
    calls) and one per metric, NaN where a row has no value: `batches` (each
    batch's own values), `running` (the running means as Keras passed them) and
    `epochs` (the epoch-end logs, `val_*` included, as `History` records them).
    Every full-size batch is recovered exactly; the guide explains the short last
    batch, `steps_per_execution`, metrics that are not means, and what a batch
    costs: :ref:`loss-history`.

    Args:
        metrics: Names of the training metrics to record (e.g. `["loss"]`);
            their `val_` counterparts are recorded at epoch level. `None`
            records every scalar in the logs.

    Raises:
        ValueError: if `metrics` is not a list of names; from the first
            `on_epoch_end`, if a name in `metrics` is not in the logs (the
            message lists the names that are).

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
        # The tables and the recovery; a TrainingPlotter drawing this history feeds
        # the same core, whose operations make every batch and epoch count once.
        self._core = HistoryCore(metrics)

    @property
    def core(self) -> HistoryCore:
        """The Keras-free tables and recovery behind this callback, fed by its hooks.

        A `TrainingPlotter` feeds it too: each batch and epoch still counts once.
        """
        return self._core

    @property
    def batches(self) -> dict[str, list]:
        """Each training batch's own values, recovered from the running means."""
        return self._core.batches

    @property
    def running(self) -> dict[str, list]:
        """The running means, as Keras passed them to `on_train_batch_end`."""
        return self._core.running

    @property
    def epochs(self) -> dict[str, list]:
        """The epoch-end logs, `val_*` included; NaN where an epoch has no value."""
        return self._core.epochs

    def on_train_begin(self, logs: dict | None = None) -> None:
        """Forgets how the last fit's metrics were recovered."""
        self._core.begin_fit()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        """Completes the last epoch's row, and opens the epoch."""
        self._core.open_epoch()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        """Keeps the batch's running means until the epoch ends."""
        # Under async dispatch this runs on Keras's callback threads, possibly
        # out of order: the core keeps it to one atomic dict operation.
        self._core.record_batch(batch, logs)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Recovers the epoch's batch values and records them and the epoch's logs."""
        _close_epoch(self, self._core, epoch, logs)

    def on_train_end(self, logs: dict | None = None) -> None:
        """Completes the last epoch's row, and drops the reference to the model."""
        self._core.complete_epoch()
        _keras_internals.forget_model(self)

    def to_dict(self) -> dict[str, dict[str, list]]:
        """Returns the three tables, copied.

        Returns:
            `{"batches": ..., "running": ..., "epochs": ...}`, each a dict of
            equal-length lists.
        """
        return self._core.to_dict()

    def to_csv(self, path: str | os.PathLike) -> None:
        """Writes the three tables as one CSV file, atomically.

        The columns are `table` (`batches`, `running` or `epochs`), `epoch`,
        `step`, and every metric in the order first seen. Values are written
        with `repr`, so floats read back exactly; a missing value is `nan`.

        Args:
            path: The file to write.
        """
        atomic_write(os.fspath(path), self._core.csv_text())

    def to_json(self, path: str | os.PathLike) -> None:
        """Writes `to_dict()` as a JSON file, atomically.

        JSON has no NaN or infinity: non-finite values are written as `null`.

        Args:
            path: The file to write.
        """
        atomic_write(os.fspath(path), self._core.json_text())

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
        return _keras_internals.picklable_state(self)
