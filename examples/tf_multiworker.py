"""Data-parallel training over processes with `tf.distribute.MultiWorkerMirroredStrategy`.

Run it with `python examples/tf_multiworker.py`. It starts two worker processes
on 127.0.0.1, each with its own `TF_CONFIG` (free loopback ports picked at run
time), plus one process that trains the same model on one device, and checks
that both workers end with the one-device numbers: epoch-level loss,
`keras_extras.RMSE` of dense targets and of sparse labels, validation values,
`evaluate` and final weights, to a relative 1e-5. Worker 0 draws the training
curves with `keras_extras.TrainingPlotter` and saves the model to a `.keras`
file; both workers load it and train one more epoch, which must equal the
one-device run that went on without stopping (`ScheduledDropout`'s counter
included).

On a real cluster, start the same worker code once per machine, with
`TF_CONFIG` listing every worker's `host:port` and each process's own index.
`MultiWorkerMirroredStrategy()` must be created before any other TensorFlow
call, and the model built and compiled inside its scope, as here.

The launcher (`Workers`, from `launcher.py`) is what makes a multi-process run
safe to script: a hard timeout, a clear error as soon as any worker dies (the
others would otherwise wait for it forever inside a collective), and every
process group killed on the way out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from launcher import (  # noqa: E402, F401 (WorkerFailed re-exported)
    WorkerFailed,
    Workers,
    free_ports,
    run_all,
)

NUM_WORKERS = 2


def tf_config(ports: list[int], index: int) -> str:
    """The `TF_CONFIG` of worker `index` in a cluster of loopback workers."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    return json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})


def launch(folder: str, worker_args: tuple[str, ...] = ()) -> Workers:
    """Starts the workers and the one-device reference, writing results to `folder`.

    Args:
        folder: For the logs and `<name>.json` results.
        worker_args: Extra command-line arguments for the workers.

    Returns:
        The started `Workers`: worker 0, worker 1, ..., then `reference`.
    """
    ports = free_ports(NUM_WORKERS)
    base = dict(os.environ, KERAS_BACKEND="tensorflow")
    base.pop("TF_CONFIG", None)
    commands, envs, names = [], [], []
    for index in range(NUM_WORKERS):
        names.append(f"worker{index}")
        commands.append([sys.executable, __file__, "--worker", *worker_args])
        envs.append({**base, "TF_CONFIG": tf_config(ports, index)})
    names.append("reference")
    commands.append([sys.executable, __file__, "--reference"])
    envs.append(base)
    for command, name in zip(commands, names):
        command += ["--out", os.path.join(folder, name + ".json")]
    return Workers(commands, envs, folder, names)


def reduce_structures(strategy: object) -> None:
    """Makes `strategy.reduce` do what Keras 3's `fit` expects of it.

    Keras 3 (3.15 included) calls `MultiWorkerMirroredStrategy.reduce` in two
    ways the strategy refuses, so `fit` fails out of the box
    (keras-team/keras#20585):

    * at the start of `fit`, `reduce("MEAN", first_batch)` on the whole
      `(x, y)` structure ("Attempt to convert a value (PerReplica...)");
    * after each step, `reduce("MEAN", logs, axis=0)` on scalar logs
      ("Invalid reduction dimension 0 for input with 0 dimensions").

    This reduces each tensor of a structure on its own, and a scalar across
    the replicas only, which is what `MirroredStrategy` does with both.
    """
    import tensorflow as tf

    reduce = strategy.reduce

    def reduce_one(reduce_op, value, axis):
        local = strategy.experimental_local_results(value)[0]
        if axis is not None and local.shape.rank == 0:
            axis = None
        return reduce(reduce_op, value, axis)

    def reduce_each(reduce_op, value, axis):
        return tf.nest.map_structure(lambda v: reduce_one(reduce_op, v, axis), value)

    strategy.reduce = reduce_each


def run_worker(out: str, crash_after_epoch: int | None) -> None:
    """One worker's part: the strategy first, then the model in its scope.

    Worker 0 also draws the training curves, into `plots/` beside `out`, and
    saves the trained model to `model.keras` there; then every worker loads
    that file in the strategy's scope and trains on (`common.resume_from_file`).
    """
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    reduce_structures(strategy)
    sys.path.insert(0, HERE)
    import common
    import keras

    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]

    def on_epoch_end(epoch: int, logs: dict) -> None:
        print(f"worker {index}: epoch {epoch + 1} done", flush=True)
        if crash_after_epoch is not None and index == 1 and epoch + 1 == crash_after_epoch:
            os._exit(3)

    folder = os.path.dirname(os.path.abspath(out))
    with strategy.scope():
        model = common.build_model()
    progress = keras.callbacks.LambdaCallback(on_epoch_end=on_epoch_end)
    # Callbacks are each worker's own: worker 0 alone draws, with no collective.
    plots = os.path.join(folder, "plots") if index == 0 else None
    results = common.train(model, plot_folder=plots, extra_callbacks=[progress])
    results["replicas"] = strategy.num_replicas_in_sync
    path = os.path.join(folder, "model.keras")
    if index == 0:
        common.save_atomically(model, path)
    # The file appears whole (an atomic rename); on a cluster it must be on
    # storage that every worker sees.
    deadline = time.monotonic() + 120
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"worker 0 did not save {path} within 120 s")
        time.sleep(0.1)
    # Every worker loads the file in the scope and trains on: the steps are collectives.
    results.update(common.resume_from_file(path, strategy.scope))
    common.write_json(out, results)


def run_reference(out: str) -> None:
    """The same training on one device, in a process of its own."""
    sys.path.insert(0, HERE)
    import common

    model = common.build_model()
    results = common.train(model)
    results["resumed"] = common.resume(model)
    common.write_json(out, results)


def main() -> int:
    """Launcher by default; `--worker` and `--reference` are the processes it starts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    role = parser.add_mutually_exclusive_group()
    role.add_argument("--worker", action="store_true", help="run as a worker (reads TF_CONFIG)")
    role.add_argument("--reference", action="store_true", help="run on one device")
    parser.add_argument("--out", help="where a worker or the reference writes its numbers")
    parser.add_argument("--timeout", type=float, default=300, help="launcher: seconds to wait")
    parser.add_argument(
        "--crash-after-epoch",
        type=int,
        help="for testing the launcher: worker 1 exits with status 3 after this epoch",
    )
    args = parser.parse_args()
    if args.worker:
        run_worker(args.out, args.crash_after_epoch)
        return 0
    if args.reference:
        run_reference(args.out)
        return 0

    sys.path.insert(0, HERE)
    import common

    crash = args.crash_after_epoch
    extra = () if crash is None else ("--crash-after-epoch", str(crash))
    results = run_all(lambda folder: launch(folder, extra), args.timeout)
    status = 0
    for name in [f"worker{index}" for index in range(NUM_WORKERS)]:
        print(f"{name}: {results[name]['replicas']} replicas in sync")
        status |= common.report_run(results[name], results["reference"], name)
    return status


if __name__ == "__main__":
    sys.exit(main())
