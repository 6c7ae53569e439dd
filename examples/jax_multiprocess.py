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

Process 0 also draws the training curves with `keras_extras.TrainingPlotter`
(a callback of that process alone: drawing needs no collective), from the same
global numbers every process logs.

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
import os
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from launcher import (  # noqa: E402, F401 (WorkerFailed re-exported)
    WorkerFailed,
    Workers,
    free_ports,
    run_all,
)

NUM_PROCESSES = 2


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
    share = process_share(common.make_data(), index)
    progress = keras.callbacks.LambdaCallback(on_train_batch_end=on_train_batch_end)
    path = os.path.join(folder, "model.keras")
    process_batch = common.GLOBAL_BATCH // NUM_PROCESSES
    with distribution.scope():
        model = common.build_model(rate=common.DROPOUT_RATE)
        results = common.train(
            model,
            # Process 0 draws the training curves; drawing needs no collective.
            plot_folder=os.path.join(folder, "plots") if index == 0 else None,
            extra_callbacks=[progress],
            data=share,
            batch_size=process_batch,
        )
        # A fault on purpose: process 1 feeds process 0's share, so its own is
        # dropped and process 0's counted twice.
        _, _, x_bad, y_bad = process_share(common.make_data(), 0)
        results["fault_evaluate"] = model.evaluate(
            x_bad, y_bad, batch_size=process_batch, verbose=0, return_dict=True
        )
    # Outside the scope: saving creates throwaway variables, and creating a
    # variable under a multi-process distribution is a collective, which
    # process 0 alone would wait in forever.
    if index == 0:
        common.save_atomically(model, path)
    multihost_utils.sync_global_devices("model saved")
    results.update(common.resume_from_file(path, distribution.scope, share, process_batch))
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

    _, _, x_val, y_val = common.make_data()
    model = common.build_model(rate=common.DROPOUT_RATE)
    results = common.train(model)
    results["sensitivity"] = common.replica_sensitivity(model)
    predictions = model.predict(x_val, batch_size=common.GLOBAL_BATCH, verbose=0)
    results["val_predictions"] = {k: v.tolist() for k, v in predictions.items()}
    results["resumed"] = common.resume(model)
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
    # No GLOO_SOCKET_IFNAME here, unlike torch: jax (0.10.2) does not read it; its gloo
    # binds to the address the host name resolves to.
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

    crash = args.crash_after_batch
    extra = () if crash is None else ("--crash-after-batch", str(crash))
    results = run_all(lambda folder: launch(folder, extra), args.timeout)
    if args.out:
        common.write_json(args.out, results)
    status = 0
    for name in [f"worker{index}" for index in range(NUM_PROCESSES)]:
        run = results[name]
        print(f"{name}: {run['processes']} processes, devices {run['devices']}")
        status |= common.report_run(run, results["reference"], name)
    return status


if __name__ == "__main__":
    sys.exit(main())
