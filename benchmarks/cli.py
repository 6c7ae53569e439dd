"""What the `keras-extras` command costs before and around training.

* `--help` and a bad argument, in a fresh process each time (the median of
  `--repeats` runs), beside a bare `python -c pass`: they import no backend, so
  they should answer in well under a second.
* The demo's TensorBoard writer on JAX and PyTorch (`tensorboard.summary.Writer`):
  its import in a fresh process, and one epoch's summaries (six scalars, flushed).
    python -m benchmarks.cli [--out benchmarks/results/cli.json]

The result is one JSON file and one line per figure on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from keras_extras_core.files import atomic_write

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT / "src"))

WRITER = """
import json, os, sys, tempfile, time
start = time.perf_counter()
import tensorboard.summary
imported = time.perf_counter() - start
import keras
from keras_extras.demo import _EpochSummaries
logs = {"loss": 0.5, "accuracy": 0.9, "rmse": 0.2, "val_loss": 0.6, "val_accuracy": 0.8,
        "val_rmse": 0.3}
with tempfile.TemporaryDirectory() as folder:
    callback = _EpochSummaries(folder)
    callback.on_train_begin()
    times = []
    for epoch in range(200):
        start = time.perf_counter()
        callback.on_epoch_end(epoch, logs)
        times.append(time.perf_counter() - start)
    callback.on_train_end()
times.sort()
print(json.dumps({"import_s": imported, "epoch_ms": 1000 * times[len(times) // 2]}))
"""


def _wall(command: list[str], repeats: int, **env: str) -> dict[str, float]:
    # CPU time as well as wall time: on a busy machine the wall time mostly waits.
    walls, cpus = [], []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, env={**ENV, **env}, check=False)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return {
        "wall_s": round(statistics.median(walls), 3),
        "cpu_s": round(statistics.median(cpus), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cli.json")
    args = parser.parse_args()
    cli = [sys.executable, "-m", "keras_extras_cli"]
    results = {
        "python -c pass": _wall([sys.executable, "-c", "pass"], args.repeats),
        "keras-extras --help": _wall([*cli, "--help"], args.repeats),
        "keras-extras demo --epochs 0": _wall([*cli, "demo", "--epochs", "0"], args.repeats),
        "keras-extras demo --data missing.npz": _wall(
            [*cli, "demo", "--data", "missing.npz"], args.repeats, KERAS_BACKEND="jax"
        ),
    }
    report: dict[str, object] = {"median of fresh processes": results}
    for backend in ("jax", "torch"):
        proc = subprocess.run(
            [sys.executable, "-c", WRITER],
            capture_output=True,
            text=True,
            env={**ENV, "KERAS_BACKEND": backend},
            check=True,
        )
        report[f"tensorboard writer, {backend}"] = json.loads(proc.stdout)
    report["machine"] = f"{os.cpu_count()} cores, python {sys.version.split()[0]}"
    atomic_write(args.out, json.dumps(report, indent=2) + "\n")
    for name, value in report.items():
        print(f"{name}: {value}")


if __name__ == "__main__":
    main()
