"""Runs the benchmarks for one Keras backend and writes `<device>-<backend>.json`.

    python -m benchmarks.run --backend jax            # CPU, then the GPU if there is one
    python -m benchmarks.run --backend torch --device gpu
    python -m benchmarks.run --quick                  # smoke run, into a temp folder
    python -m benchmarks.run --only scaling           # some stages only (see STAGES)

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
from keras_extras_core.files import atomic_write

RESULTS = Path(__file__).resolve().parent / "results"
SCHEMA = 1
# Exit status of a GPU run whose backend sees no GPU (a CPU-only build): no result.
NO_GPU = 3
# In the order they run: a run cut short by a time limit keeps the first ones.
STAGES = ("metric_update", "scaling", "training_step", "callback", "layer")


def write_json(path: Path, data: Any) -> None:
    """Writes `data` to `path` atomically, creating its folder."""
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


def _stage(record: dict[str, Any]) -> str:
    return record["id"].split("/")[0]


def carry_over(path: Path, result: dict[str, Any], stages: tuple[str, ...]) -> None:
    """Keeps, from the file this run replaces, the stages it does not run.

    Only from a file of the same device (by name too), backend and mode (quick
    or full); each kept stage keeps the date and commit of the run that
    measured it, in `result["carried"]`.
    """
    if not path.exists():
        return
    old = json.loads(path.read_text())
    same = ("device", "device_name", "backend")
    if old.get("quick") != result["quick"] or any(
        old["machine"].get(k) != result["machine"][k] for k in same
    ):
        return
    present = {_stage(r) for r in old["results"]} | ({"scaling"} if "scaling" in old else set())
    kept = [s for s in STAGES if s not in stages and s in present]
    origin = {"started": old["started"], "git_commit": old["machine"].get("git_commit")}
    result["carried"] = {s: old.get("carried", {}).get(s, origin) for s in kept}
    result["results"] = [r for r in old["results"] if _stage(r) in kept]
    if "scaling" in kept:
        result["scaling"] = old["scaling"]


def run_device(
    device: str, backend: str | None, quick: bool, out: Path, stages: tuple[str, ...] = STAGES
) -> int:
    """Runs the benchmarks of `stages` on `device` in this process.

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

    from benchmarks import cases, scaling

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
            "stages": list(stages),
        },
        "results": [],
    }
    carry_over(path, result, stages)
    print(f"=== {backend} on {device}: {result['machine']['device_name']} -> {path}", flush=True)
    start = time.perf_counter()
    for stage in stages:
        if stage == "scaling":
            result["scaling"] = scaling.measure(settings, lambda line: print(line, flush=True))
            write_json(path, result)
            continue
        for record in cases.GROUPS[stage](settings):
            print(_summary(record), flush=True)
            result["results"].append(record)
            result["results"].sort(key=lambda r: STAGES.index(_stage(r)))
            # Written after every comparison, so an interrupted run keeps what it measured.
            write_json(path, result)
    result["complete"] = True
    result["seconds"] = round(time.perf_counter() - start, 1)
    write_json(path, result)
    print(f"=== {backend} on {device}: {result['seconds']} s", flush=True)
    return 1 if any(r["status"] == "error" for r in result["results"]) else 0


def run_all_devices(
    backend: str | None, quick: bool, out: Path, stages: tuple[str, ...] = STAGES
) -> int:
    """Runs the CPU, then the GPU if the machine has one, each in a child process."""
    devices = ["cpu"] + (["gpu"] if machine.nvidia_gpu_present() else [])
    status = 0
    for device in devices:
        command = [sys.executable, "-m", "benchmarks.run", "--device", device, "--out", str(out)]
        command += ["--only", ",".join(stages)]
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
    parser.add_argument(
        "--only",
        type=_stages,
        default=STAGES,
        metavar="STAGE[,STAGE]",
        help=f"run these stages only, in the usual order: {', '.join(STAGES)}",
    )
    args = parser.parse_args(argv)
    backend = args.backend or os.environ.get("KERAS_BACKEND")
    out = args.out
    if out is None:
        out = Path(tempfile.mkdtemp(prefix="keras-extras-bench-")) if args.quick else RESULTS
    if args.device is None:
        return run_all_devices(backend, args.quick, out, args.only)
    return run_device(args.device, backend, args.quick, out, args.only)


def _stages(text: str) -> tuple[str, ...]:
    names = {name.strip() for name in text.split(",") if name.strip()}
    unknown = names - set(STAGES)
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown stage {', '.join(sorted(unknown)) or repr(text)}; "
            f"choose from {', '.join(STAGES)}"
        )
    return tuple(stage for stage in STAGES if stage in names)


if __name__ == "__main__":
    sys.exit(main())
