"""Data-parallel training on JAX with `keras.distribution.DataParallel`.

Run it with `python examples/jax_data_parallel.py`. It asks XLA for two virtual
CPU devices (`XLA_FLAGS=--xla_force_host_platform_device_count=2`, which must be
set before JAX is imported), so it runs on any machine; with several GPUs or
TPUs, drop that flag and `DataParallel()` takes them all.

It trains the model of `common.py` on one device and then with the batch
sharded over two devices, with the same global batch, initial weights and plain
SGD, and checks that the epoch-level loss, `keras_extras.RMSE` (dense targets
and sparse labels), validation values, `evaluate` and final weights agree to a
relative 1e-5. `ScheduledDropout` runs at rate 0.3: JAX draws the mask of the
whole global batch whatever the sharding, so even the masks are the one-device
run's. `TrainingPlotter` draws the distributed run. Then the model is saved to
a `.keras` file, loaded in the distribution's scope and trained one more epoch,
which must equal the one-device run that went on without stopping.

The recipe: build and compile the model inside `distribution.scope()` (or after
`keras.distribution.set_distribution(distribution)`), and call `fit` there.
Variables are replicated, each batch is split along its first axis, and the
metrics' sums are reduced over the devices inside the compiled step.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

os.environ["KERAS_BACKEND"] = "jax"
flag = "--xla_force_host_platform_device_count=2"
if flag not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import keras  # noqa: E402


def run(folder: str) -> dict:
    """Trains on one device, then data-parallel over two; returns both runs' numbers.

    `folder` gets the plots (in `plots/`) and the `.keras` file.
    """
    devices = keras.distribution.list_devices("cpu")
    single = common.build_model(rate=common.DROPOUT_RATE)
    initial = single.get_weights()
    reference = common.train(single)
    sensitivity = common.replica_sensitivity(single)
    reference["resumed"] = common.resume(single)

    distribution = keras.distribution.DataParallel(devices=devices[:2])
    with distribution.scope():
        # The same seed, so the same dropout masks; the same initial weights.
        model = common.build_model(rate=common.DROPOUT_RATE)
        model.set_weights(initial)
        parallel = common.train(model, os.path.join(folder, "plots"))
        # The proof that the batch really was split: the layout fit used.
        layout = distribution.get_data_layout((common.GLOBAL_BATCH, common.FEATURES))
        kernel = model.trainable_weights[0].value.sharding
    path = os.path.join(folder, "model.keras")
    common.save_atomically(model, path)
    parallel.update(common.resume_from_file(path, distribution.scope))
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
    parser.add_argument("--folder", help="keep the plots and the model here (default: temporary)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        runs = run(args.folder or temporary)
    print(f"DataParallel over {runs['devices'][:2]}, batch axes {runs['batch_axes']}")
    if args.out:
        common.write_json(args.out, runs)
    return common.report_run(runs["parallel"], runs["reference"], "DataParallel")


if __name__ == "__main__":
    sys.exit(main())
