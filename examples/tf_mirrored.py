"""Data-parallel training on one host with `tf.distribute.MirroredStrategy`.

Run it with `python examples/tf_mirrored.py` (TensorFlow backend). It splits the
CPU into two logical devices, so it runs on any machine; on a host with several
GPUs, drop `split_cpu` and `MirroredStrategy()` takes them all.

It trains the model of `common.py` on one device and then with a
`MirroredStrategy` over two devices, with the same global batch, initial weights
and plain SGD, and checks that the epoch-level loss, `keras_extras.RMSE`,
validation values, `evaluate` and final weights agree to a relative 1e-5, for
a value head (dense targets) and a class head (sparse labels). Then it saves
the distributed model to a `.keras` file, loads it in the strategy's scope and
trains one more epoch, which must equal the one-device run that went on
without stopping: `ScheduledDropout`'s counter included.

The recipe: build *and compile* the model inside `strategy.scope()`, and give
`fit` the global batch size; Keras splits each batch over the replicas and
`keras_extras.RMSE` sums its state over them.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

os.environ["KERAS_BACKEND"] = "tensorflow"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_extras  # noqa: E402


def split_cpu(count: int = 2) -> list[str]:
    """Splits the CPU into `count` logical devices; must run before TensorFlow starts.

    Returns:
        The logical device names.
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
    )
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def run(folder: str) -> dict:
    """Trains on one device, then mirrored over two; returns both runs' numbers.

    `folder` gets the plots (in `plots/`) and the `.keras` file.
    """
    devices = split_cpu(2)
    single = common.build_model()
    initial = single.get_weights()
    reference = common.train(single)
    sensitivity = common.replica_sensitivity(single)
    reference["resumed"] = common.resume(single)

    strategy = tf.distribute.MirroredStrategy(devices)
    with strategy.scope():
        model = common.build_model()
        model.set_weights(initial)
    mirrored = common.train(model, os.path.join(folder, "plots"))
    path = os.path.join(folder, "model.keras")
    common.save_atomically(model, path)
    mirrored.update(common.resume_from_file(path, strategy.scope))
    return {
        "replicas": strategy.num_replicas_in_sync,
        "reference": reference,
        "mirrored": mirrored,
        "sensitivity": sensitivity,
        "first_replica_rmse": first_replica_rmse(strategy, model),
    }


class OneReplicaRMSE(keras_extras.RMSE):
    """Broken on purpose: its state keeps the first replica's part only.

    `keras_extras.RMSE` sums its state over the replicas (Keras's default
    "sum" aggregation of metric variables); this copy shows what the value
    would be if one replica's contribution were dropped.
    """

    def add_variable(self, *args, **kwargs):  # noqa: D102
        return super().add_variable(*args, **{**kwargs, "aggregation": "only_first_replica"})


def first_replica_rmse(strategy: tf.distribute.Strategy, model: keras.Model) -> float:
    """The value head's validation RMSE of the trained `model` with `OneReplicaRMSE`."""
    _, _, x_val, y_val = common.make_data()
    with strategy.scope():
        metric = OneReplicaRMSE()
        probe = keras.Model(model.inputs, model.get_layer("value").output)
        probe.compile(loss="mean_squared_error", metrics=[metric])
    logs = probe.evaluate(
        x_val, y_val["value"], batch_size=common.GLOBAL_BATCH, verbose=0, return_dict=True
    )
    return float(logs["rmse"])


def main() -> int:
    """Runs the comparison; `--out PATH` also writes the numbers as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write both runs' numbers to this JSON file")
    parser.add_argument("--folder", help="keep the plots and the model here (default: temporary)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        runs = run(args.folder or temporary)
        plots = sorted(os.listdir(os.path.join(args.folder or temporary, "plots")))
    print(f"MirroredStrategy over {runs['replicas']} replicas; plots: {plots}")
    print(
        f"evaluate value_rmse {runs['mirrored']['evaluate']['value_rmse']:.6f}; with the "
        f"second replica's part dropped it would read {runs['first_replica_rmse']:.6f}"
    )
    if args.out:
        common.write_json(args.out, runs)
    return common.report_run(runs["mirrored"], runs["reference"], "mirrored")


if __name__ == "__main__":
    sys.exit(main())
