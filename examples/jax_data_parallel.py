"""Data-parallel training on JAX with `keras.distribution.DataParallel`.

Run it with `python examples/jax_data_parallel.py`. It asks XLA for two virtual
CPU devices (`XLA_FLAGS=--xla_force_host_platform_device_count=2`, which must be
set before JAX is imported), so it runs on any machine; with several GPUs or
TPUs, drop that flag and `DataParallel()` takes them all.

It trains the model of `common.py` on one device and then with the batch
sharded over two devices, with the same global batch, initial weights and plain
SGD, and checks that the epoch-level loss, `keras_extras.RMSE`, validation
values, `evaluate` and final weights agree to a relative 1e-5.

The recipe: build and compile the model inside `distribution.scope()` (or after
`keras.distribution.set_distribution(distribution)`), and call `fit` there.
Variables are replicated, each batch is split along its first axis, and the
metrics' sums are reduced over the devices inside the compiled step.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ["KERAS_BACKEND"] = "jax"
flag = "--xla_force_host_platform_device_count=2"
if flag not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import keras  # noqa: E402


def run() -> dict:
    """Trains on one device, then data-parallel over two; returns both runs' numbers."""
    devices = keras.distribution.list_devices("cpu")
    single = common.build_model()
    initial = single.get_weights()
    reference = common.train(single)
    sensitivity = common.replica_sensitivity(single)

    distribution = keras.distribution.DataParallel(devices=devices[:2])
    with distribution.scope():
        model = common.build_model()
        model.set_weights(initial)
        parallel = common.train(model)
        # The proof that the batch really was split: the layout fit used.
        layout = distribution.get_data_layout((common.GLOBAL_BATCH, common.FEATURES))
        kernel = model.trainable_weights[0].value.sharding
    return {
        "devices": devices,
        "batch_axes": list(layout.axes),
        "kernel_replicated": bool(kernel.is_fully_replicated),
        "reference": reference,
        "parallel": parallel,
        "sensitivity": sensitivity,
    }


def main() -> int:
    """Runs the comparison; `--out PATH` also writes the numbers as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write both runs' numbers to this JSON file")
    args = parser.parse_args()
    runs = run()
    print(f"DataParallel over {runs['devices'][:2]}, batch axes {runs['batch_axes']}")
    if args.out:
        common.write_json(args.out, runs)
    return common.report(common.compare(runs["parallel"], runs["reference"]), "DataParallel")


if __name__ == "__main__":
    sys.exit(main())
