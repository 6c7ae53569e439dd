"""Runs the benchmarks for one Keras backend and writes `<device>-<backend>.json`.

    python -m benchmarks.run --backend jax            # CPU, then the GPU if there is one
    python -m benchmarks.run --backend torch --device gpu
    python -m benchmarks.run --quick                  # smoke run, into a temp folder

The backend is `--backend`, else `KERAS_BACKEND`, else Keras's default. Without
`--device`, each device runs in a child process of its own, because a backend
chooses its devices once, when it is imported. Only the backend in use is
imported: TensorFlow need not be installed to run JAX or torch.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import machine

RESULTS = Path(__file__).resolve().parent / "results"
SCHEMA = 1
# Exit status of a GPU run whose backend sees no GPU (a CPU-only build): no result.
NO_GPU = 3


def write_json(path: Path, data: Any) -> None:
    """Writes `data` to `path` atomically, creating its folder."""
    # Imported here: keras_extras imports Keras, which must wait for the backend choice.
    from keras_extras._files import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(data, indent=1) + "\n")


def _summary(record: dict[str, Any]) -> str:
    line = f"  {record['id']:<42} {record['status']}"
    if record["status"] == "ok":
        line += f"  B/A {record['ratio_median']:.3f}  [{record['wall_s']:.1f} s]"
        if record["target"] is not None:
            met = "met" if record["target_met"] else "MISSED"
            line += f"  (target <= {record['target']}: {met})"
    elif record.get("reason"):
        line += f": {record['reason']}"
    return line


def run_device(device: str, backend: str | None, quick: bool, out: Path) -> int:
    """Runs every benchmark on `device` in this process.

    Returns:
        0, 1 if a comparison failed (its record says why), or `NO_GPU`.
    """
    if "keras" not in sys.modules:
        if backend:
            os.environ["KERAS_BACKEND"] = backend
        if device == "cpu":
            machine.hide_gpus()
    import keras

    if backend and keras.backend.backend() != backend:
        raise SystemExit(
            f"Keras was imported with the {keras.backend.backend()!r} backend before "
            f"--backend {backend} could take effect."
        )
    backend = keras.backend.backend()
    if device == "gpu" and not machine.backend_sees_gpu(backend):
        print(f"{backend}: no CUDA GPU visible to this build; nothing measured on gpu.")
        return NO_GPU
    placed = machine.tensor_device()
    if machine.device_kind(placed) != device:
        raise SystemExit(f"Asked to measure on {device}, but Keras puts tensors on {placed!r}.")

    from benchmarks import cases

    settings = cases.QUICK if quick else cases.FULL
    path = out / f"{device}-{backend}.json"
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "quick": quick,
        "complete": False,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine.describe(device),
        "settings": {
            "repeats": settings.repeats,
            "fit_repeats": settings.fit_repeats,
            "warmup": settings.warmup,
            "order": "A B A B ...",
        },
        "results": [],
    }
    print(f"=== {backend} on {device}: {result['machine']['device_name']} -> {path}", flush=True)
    start = time.perf_counter()
    for group in cases.GROUPS.values():
        for record in group(settings):
            print(_summary(record), flush=True)
            result["results"].append(record)
            # Written after every comparison, so an interrupted run keeps what it measured.
            write_json(path, result)
    result["complete"] = True
    result["seconds"] = round(time.perf_counter() - start, 1)
    write_json(path, result)
    print(f"=== {backend} on {device}: {result['seconds']} s", flush=True)
    return 1 if any(r["status"] == "error" for r in result["results"]) else 0


def run_all_devices(backend: str | None, quick: bool, out: Path) -> int:
    """Runs the CPU, then the GPU if the machine has one, each in a child process."""
    devices = ["cpu"] + (["gpu"] if machine.nvidia_gpu_present() else [])
    status = 0
    for device in devices:
        command = [sys.executable, "-m", "benchmarks.run", "--device", device, "--out", str(out)]
        if backend:
            command += ["--backend", backend]
        if quick:
            command.append("--quick")
        code = subprocess.run(command, cwd=Path(__file__).resolve().parents[1]).returncode
        if code not in (0, NO_GPU):
            status = code
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--backend", choices=["tensorflow", "jax", "torch"])
    parser.add_argument("--device", choices=["cpu", "gpu"], help="default: cpu, then gpu if any")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: tiny sizes, 2 repeats, no timing value"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help=f"folder for the JSON (default {RESULTS}; a temp folder with --quick)",
    )
    args = parser.parse_args(argv)
    backend = args.backend or os.environ.get("KERAS_BACKEND")
    out = args.out
    if out is None:
        out = Path(tempfile.mkdtemp(prefix="keras-extras-bench-")) if args.quick else RESULTS
    if args.device is None:
        return run_all_devices(backend, args.quick, out)
    return run_device(args.device, backend, args.quick, out)


if __name__ == "__main__":
    sys.exit(main())
