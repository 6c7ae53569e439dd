"""Data-parallel training across processes on JAX: `jax.distributed` and `keras.distribution`.

Run it with `python examples/jax_multiprocess.py`. It starts two processes on
127.0.0.1, each with one CPU device, joined by `jax.distributed.initialize`
into one global mesh of two devices, with gloo for the CPU collectives; and a
third process that trains the same model on one device. Both processes must
end with the one-device numbers, to a relative 1e-5: the per-epoch loss and
`keras_extras.RMSE` of a regression head (dense targets) and of a classifier
head (sparse labels), the validation values, `evaluate`, the final weights
and `ScheduledDropout`'s batch counter. The dropout rate is not 0: JAX draws
the dropout mask of the whole global batch whichever device holds which rows,
so even the masks are those of the one-device run.

Then process 0 saves the model to a `.keras` file, both processes load it and
train one more epoch, and that epoch must equal the one-device run that went
on without stopping: the file resumes the dropout schedule (its counter and
random state) as well as the weights.

The recipe, on each process of a real cluster (one process per host):

1. `jax.distributed.initialize(coordinator_address, num_processes, process_id)`
   before anything else touches JAX (on CPU, also select gloo collectives);
2. `DataParallel(devices=keras.distribution.list_devices())`, which lists
   every process's devices, with `auto_shard_dataset = False`;
3. feed `fit` this process's share of every global batch, with
   `batch_size = global_batch // num_processes`: Keras assembles the global
   batch from the processes' shares in process order.

A process that dies leaves the others waiting inside a collective; the
launcher (`launcher.Workers`) reports it at once, stops the others and kills
every process group, and gives up after a hard timeout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from launcher import WorkerFailed, Workers, free_ports  # noqa: E402, F401 (re-exported)

NUM_PROCESSES = 2
DROPOUT_RATE = 0.3
# Training runs 8 batches, then 4 more after the reload: the rate is still
# rising when the file is loaded, so a lost counter would change the numbers.
WARMUP_STEPS = 16
RESUMED_EPOCHS = 1
# In the second half of each global batch, the value that splits class 1 from 2.
CLASS_EDGE = 3.0


def make_data() -> tuple[Any, dict, Any, dict]:
    """`common.make_data()`, with each target as a regression value and a class label.

    The labels, like the values, differ between the halves of every global
    batch: class 0 in the first half, classes 1 and 2 (by the value) in the
    second. A classifier that has learnt the classes' frequencies then errs
    differently on the two halves, so a process's share lost or counted
    twice moves the sparse RMSE too.

    Returns:
        `(x, y, x_val, y_val)`, the targets as `{"value": ..., "label": ...}`.
    """
    import common
    import numpy as np

    def targets(y: np.ndarray) -> dict:
        label = np.where(y[:, 0] < CLASS_EDGE, 1, 2)
        label[~common.second_halves(len(y))] = 0
        return {"value": y, "label": label.astype("int32")}

    x, y, x_val, y_val = common.make_data()
    return x, targets(y), x_val, targets(y_val)


def process_share(data: tuple, index: int) -> tuple:
    """Process `index`'s rows of every global batch: its half, in order.

    With `auto_shard_dataset = False`, Keras builds each global batch from the
    processes' batches in process order, so process 0 feeds the first half of
    every global batch and process 1 the second.
    """
    import common
    import keras

    def share(a: Any) -> Any:
        return a[common.second_halves(len(a)) == bool(index)]

    return keras.tree.map_structure(share, data)


def build_model(seed: int = 0) -> Any:
    """A two-headed CustomModel: a value with MSE and dense RMSE, a class with sparse RMSE.

    Call it where the variables belong (inside the distribution's scope).
    """
    import keras

    import keras_extras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(4,))
    hidden = keras.layers.Dense(8, activation="tanh")(inputs)
    hidden = keras_extras.ScheduledDropout(
        DROPOUT_RATE,
        schedule=keras_extras.LinearWarmupSchedule(warmup_steps=WARMUP_STEPS),
        seed=seed,
        name="dropout",
    )(hidden)
    outputs = {
        "value": keras.layers.Dense(1, name="value")(hidden),
        "label": keras.layers.Dense(3, activation="softmax", name="label")(hidden),
    }
    model = keras_extras.CustomModel(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.05),
        loss={"value": "mean_squared_error", "label": "sparse_categorical_crossentropy"},
        metrics={"value": [keras_extras.RMSE()], "label": [keras_extras.RMSE()]},
    )
    return model


def dropout_iterations(model: Any) -> int:
    """The batches `ScheduledDropout` has counted, as this process reads them."""
    import keras

    return int(keras.ops.convert_to_numpy(model.get_layer("dropout").iterations.value))


def resume(model: Any, x: Any, y: Any, batch_size: int) -> dict:
    """Trains `RESUMED_EPOCHS` more epochs; returns their logs, weights and counter."""
    history = model.fit(
        x, y, batch_size=batch_size, epochs=RESUMED_EPOCHS, shuffle=False, verbose=0
    )
    return {
        "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
        "weights": [w.tolist() for w in model.get_weights()],
        "dropout_iterations": dropout_iterations(model),
    }


def save_atomically(model: Any, path: str) -> None:
    """`model.save(path)`, so that a reader never sees half a file."""
    from keras_extras._files import atomic_write

    with tempfile.TemporaryDirectory(dir=os.path.dirname(path) or None) as folder:
        tmp = os.path.join(folder, "model.keras")
        model.save(tmp)
        with open(tmp, "rb") as f:
            atomic_write(path, f.read())


def run_worker(index: int, port: int, folder: str, crash_after_batch: int | None) -> None:
    """One process of the data-parallel run; writes `worker<index>.json` to `folder`."""
    import jax

    # Before any JAX computation: the CPU backend's collectives are chosen when it starts.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}",
        num_processes=NUM_PROCESSES,
        process_id=index,
    )
    import common
    import keras
    from jax.experimental import multihost_utils

    def on_train_batch_end(batch: int, logs: dict) -> None:
        print(f"worker {index}: batch {batch + 1} done", flush=True)
        if crash_after_batch is not None and index == 1 and batch + 1 == crash_after_batch:
            print(f"worker 1: exiting at {time.time():.3f}", flush=True)
            os._exit(3)

    distribution = keras.distribution.DataParallel(devices=keras.distribution.list_devices("cpu"))
    distribution.auto_shard_dataset = False
    x, y, x_val, y_val = share = process_share(make_data(), index)
    progress = keras.callbacks.LambdaCallback(on_train_batch_end=on_train_batch_end)
    path = os.path.join(folder, "model.keras")
    with distribution.scope():
        model = build_model()
        results = common.train(
            model,
            extra_callbacks=[progress],
            data=share,
            batch_size=common.GLOBAL_BATCH // NUM_PROCESSES,
        )
        # A fault on purpose: process 1 feeds process 0's share, so its own is
        # dropped and process 0's counted twice.
        _, _, x_bad, y_bad = process_share(make_data(), 0)
        results["fault_evaluate"] = model.evaluate(
            x_bad,
            y_bad,
            batch_size=common.GLOBAL_BATCH // NUM_PROCESSES,
            verbose=0,
            return_dict=True,
        )
    # Outside the scope: saving creates throwaway variables, and creating a
    # variable under a multi-process distribution is a collective, which
    # process 0 alone would wait in forever.
    if index == 0:
        save_atomically(model, path)
    multihost_utils.sync_global_devices("model saved")
    with distribution.scope():
        resumed = keras.saving.load_model(path)
        results["loaded_iterations"] = dropout_iterations(resumed)
        results["resumed"] = resume(resumed, x, y, common.GLOBAL_BATCH // NUM_PROCESSES)
    layout = distribution.get_data_layout((common.GLOBAL_BATCH, 4))
    results.update(
        processes=jax.process_count(),
        devices=[str(d) for d in jax.devices()],
        batch_axes=list(layout.axes),
        kernel_replicated=bool(model.trainable_weights[0].value.sharding.is_fully_replicated),
    )
    common.write_json(os.path.join(folder, f"worker{index}.json"), results)


def run_reference(folder: str) -> None:
    """The same training on one device, going on without a reload; writes `reference.json`."""
    import common

    x, y, x_val, y_val = data = make_data()
    model = build_model()
    results = common.train(model, data=data)
    results["sensitivity"] = common.replica_sensitivity(model, x_val, y_val)
    predictions = model.predict(x_val, batch_size=common.GLOBAL_BATCH, verbose=0)
    results["val_predictions"] = {k: v.tolist() for k, v in predictions.items()}
    results["resumed"] = resume(model, x, y, common.GLOBAL_BATCH)
    common.write_json(os.path.join(folder, "reference.json"), results)


def launch(folder: str, worker_args: tuple[str, ...] = (), reference: bool = True) -> Workers:
    """Starts the processes; each writes `<name>.json` and `<name>.log` to `folder`.

    Args:
        folder: For the logs, results and the saved model.
        worker_args: Extra command-line arguments for the workers.
        reference: Whether to start the one-device run too.

    Returns:
        The started `Workers`: worker 0, worker 1, then `reference` if asked.
    """
    (port,) = free_ports(1)
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    # One CPU device per process, whatever the caller asked XLA for.
    env.pop("XLA_FLAGS", None)
    names = [f"worker{index}" for index in range(NUM_PROCESSES)]
    commands = [
        [sys.executable, __file__, "--worker", str(index), "--port", str(port), *worker_args]
        for index in range(NUM_PROCESSES)
    ]
    if reference:
        names.append("reference")
        commands.append([sys.executable, __file__, "--reference"])
    for command in commands:
        command += ["--folder", folder]
    return Workers(commands, [env] * len(commands), folder, names)


def main() -> int:
    """Launcher by default; `--worker N` and `--reference` are the processes it starts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    role = parser.add_mutually_exclusive_group()
    role.add_argument("--worker", type=int, help="run as process N of the data-parallel run")
    role.add_argument("--reference", action="store_true", help="run on one device")
    parser.add_argument("--port", type=int, help="worker: the coordinator's port on 127.0.0.1")
    parser.add_argument("--folder", help="worker, reference: where results and the model go")
    parser.add_argument("--timeout", type=float, default=300, help="launcher: seconds to wait")
    parser.add_argument("--out", help="launcher: write every process's numbers to this JSON file")
    parser.add_argument(
        "--crash-after-batch",
        type=int,
        help="for testing the launcher: worker 1 exits with status 3 after this training batch",
    )
    args = parser.parse_args()
    if args.worker is not None:
        run_worker(args.worker, args.port, args.folder, args.crash_after_batch)
        return 0
    if args.reference:
        run_reference(args.folder)
        return 0

    import common

    with tempfile.TemporaryDirectory() as folder:
        extra = (
            ()
            if args.crash_after_batch is None
            else ("--crash-after-batch", str(args.crash_after_batch))
        )
        with launch(folder, extra) as workers:
            workers.wait(args.timeout)
        results = {}
        for name in workers.names:
            with open(os.path.join(folder, f"{name}.json")) as f:
                results[name] = json.load(f)
    if args.out:
        common.write_json(args.out, results)
    reference = results["reference"]
    status = 0
    for name in workers.names[:-1]:
        run = results[name]
        print(f"{name}: {run['processes']} processes, devices {run['devices']}")
        status |= common.report(common.compare(run, reference), name)
        status |= common.report(
            common.compare(run["resumed"], reference["resumed"]), f"{name}, resumed from .keras"
        )
    return status


if __name__ == "__main__":
    sys.exit(main())
