"""Which device a run uses, and the record of the machine and versions it ran on.

`hide_gpus` must run before the backend is imported; everything else imports
only the backend Keras is using, so a machine without TensorFlow can run the
JAX and torch benchmarks.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any


def hide_gpus() -> None:
    """Makes every backend see only the CPU; call before importing Keras."""
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    # JAX with a CUDA plugin warns and probes for GPUs unless told the platform.
    os.environ["JAX_PLATFORMS"] = "cpu"


def nvidia_gpu_present() -> bool:
    """Whether the machine has an NVIDIA GPU at all, without importing a backend.

    Whether the backend can use it (a CUDA build, a driver it accepts) is
    checked by the run on that device, `backend_sees_gpu`.
    """
    if Path("/proc/driver/nvidia/gpus").is_dir():
        return any(Path("/proc/driver/nvidia/gpus").iterdir())
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def backend_sees_gpu(backend: str) -> bool:
    """Whether the Keras backend's library sees a CUDA GPU."""
    if backend == "jax":
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    return False


def tensor_device() -> str:
    """Where Keras puts a new tensor: the device the benchmarks really ran on."""
    import keras

    x = keras.ops.convert_to_tensor([1.0])
    backend = keras.backend.backend()
    if backend == "jax":
        return ",".join(str(d) for d in x.devices())
    return str(x.device)


def device_kind(device_string: str) -> str:
    """`gpu` or `cpu`, from a tensor's device string of any backend."""
    lowered = device_string.lower()
    return "gpu" if ("cuda" in lowered or "gpu" in lowered) else "cpu"


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, with the number of cores this process may use."""
    name = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    name = name or platform.processor() or platform.machine()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 0
    return f"{name} ({cores} cores)"


def gpu_name(backend: str) -> str:
    """The name of the first CUDA GPU, as the backend reports it."""
    if backend == "jax":
        import jax

        return next(d.device_kind for d in jax.devices() if d.platform == "gpu")
    if backend == "torch":
        import torch

        return torch.cuda.get_device_name(0)
    import tensorflow as tf

    gpu = tf.config.list_physical_devices("GPU")[0]
    return tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)


def backend_versions(backend: str) -> dict[str, str]:
    """The version of the backend library, and of what it is built on."""
    if backend == "jax":
        import jax
        import jaxlib

        return {"jax": jax.__version__, "jaxlib": jaxlib.__version__}
    if backend == "torch":
        import torch

        versions = {"torch": torch.__version__}
        if torch.version.cuda:
            versions["cuda"] = torch.version.cuda
        return versions
    import tensorflow as tf

    versions = {"tensorflow": tf.__version__}
    cuda = tf.sysconfig.get_build_info().get("cuda_version")
    if cuda:
        versions["cuda"] = cuda
    return versions


def git_commit(root: Path | None = None) -> str | None:
    """The commit of the checkout the benchmarks ran from (`root`: this repository).

    With `-dirty` appended when the code measured (`src/` or the harness) differs
    from that commit, so that a result is never credited to code it did not run;
    results files do not count. A copy of the tree without `.git` (as sent to a GPU
    machine) names it in the environment variable `BENCH_GIT_COMMIT` instead.
    """
    root = root or Path(__file__).resolve().parent.parent
    commit = _git(["rev-parse", "--short", "HEAD"], root)
    if not commit:
        return os.environ.get("BENCH_GIT_COMMIT") or None
    changed = _git(
        ["status", "--porcelain", "--", "src", "benchmarks", ":!benchmarks/results"], root
    )
    return f"{commit}-dirty" if changed else commit


def _git(args: list[str], cwd: Path) -> str | None:
    """What `git args` prints in `cwd`, stripped; None if git fails."""
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, cwd=cwd)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def describe(device: str) -> dict[str, Any]:
    """The machine record stored in every result file.

    Args:
        device: `cpu` or `gpu`, the device this run measures.

    Returns:
        A dict with the device, its name, the tensor device string, the
        platform, and the versions of Python, NumPy, Keras, keras_extras and
        the backend library.
    """
    import keras
    import numpy as np

    import keras_extras

    backend = keras.backend.backend()
    return {
        "device": device,
        "device_name": gpu_name(backend) if device == "gpu" else cpu_name(),
        "tensor_device": tensor_device(),
        "platform": platform.platform(),
        "backend": backend,
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "keras": keras.__version__,
            "keras_extras": keras_extras.__version__,
            **backend_versions(backend),
        },
        "git_commit": git_commit(),
    }
