"""The scaling figure's data: RMSE update time against batch size, and its memory floor.

For each batch size, dense and sparse, eager and compiled, the built-in RMSE and
ours are timed as in `cases.metric_update` (interleaved, results checked), and
their medians are divided down to the time of one update. The floor under every
point is the bytes an update must read (its inputs, once) over the bandwidth of
a plain array copy timed on the same device in the same run: no implementation
can take less time once its inputs no longer fit in a cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from keras import ops

from benchmarks.cases import BACKEND, CLASSES, Settings, metric_comparison

FLOAT32_BYTES = 4
INT32_BYTES = 4
# Rows of data per call: fewer updates per call at large batches, so that a point
# takes a fraction of a second, yet at least two, since calls alternate two batches.
ROWS_PER_EAGER_CALL = 2**19
ROWS_PER_COMPILED_CALL = 2**22


def bytes_read(kind: str, batch: int) -> int:
    """The bytes of one update's inputs: predictions and dense targets, or int32 labels."""
    predictions = batch * CLASSES * FLOAT32_BYTES
    if kind == "dense":
        return 2 * predictions
    return predictions + batch * INT32_BYTES


def updates_per_call(mode: str, batch: int, settings: Settings) -> int:
    """Updates in one timed call: the settings' count, fewer for large batches."""
    if mode == "compiled":
        return int(np.clip(ROWS_PER_COMPILED_CALL // batch, 2, settings.compiled_updates))
    return int(np.clip(ROWS_PER_EAGER_CALL // batch, 2, settings.eager_updates))


def _wait(x: Any) -> None:
    """Returns once the device has finished computing `x`."""
    if BACKEND == "jax":
        x.block_until_ready()
    elif BACKEND == "torch":
        import torch

        if x.is_cuda:
            torch.cuda.synchronize()
    else:
        ops.convert_to_numpy(x[:1])  # a read waits for the op that wrote it


def copy_bandwidth(
    nbytes: int, repeats: int = 5, clock: Callable[[], float] = time.perf_counter
) -> dict[str, Any]:
    """Bytes per second a plain array copy moves (each byte read once and written once).

    The copy is `y = -x` in float32, one elementwise pass, so that no backend can
    return `x` itself; the fastest of `repeats` copies after one warm-up counts,
    as STREAM reports its best time.

    Args:
        nbytes: Size of the array copied; several times the largest cache.
        repeats: Timed copies.
        clock: Seconds as a float.

    Returns:
        A dict with `bytes` (copied), `seconds` (the fastest copy), `moved_bytes`
        (read plus written) and `bandwidth_Bps`.
    """
    x = ops.convert_to_tensor(np.full(nbytes // FLOAT32_BYTES, 1.5, dtype=np.float32))
    _wait(ops.negative(x))
    times = []
    for _ in range(repeats):
        start = clock()
        _wait(ops.negative(x))
        times.append(clock() - start)
    best = min(times)
    moved = 2 * (nbytes // FLOAT32_BYTES) * FLOAT32_BYTES
    return {
        "op": "y = -x, float32",
        "bytes": nbytes,
        "seconds": best,
        "moved_bytes": moved,
        "bandwidth_Bps": moved / best,
    }


def measure(settings: Settings, report: Callable[[str], None] = print) -> dict[str, Any]:
    """The points of the scaling figure for this backend and device.

    Args:
        settings: Batch sizes, repeats and the copy size.
        report: Called with a line per point, for progress.

    Returns:
        A dict with `copy` (see `copy_bandwidth`) and `points`, one per kind,
        mode and batch, with each side's seconds per update, the floor, and
        the median of the per-pair ratios B/A.
    """
    start = time.perf_counter()
    copy = copy_bandwidth(settings.copy_bytes)
    report(f"  scaling: copy bandwidth {copy['bandwidth_Bps'] / 1e9:.1f} GB/s")
    points = []
    for mode in ("eager", "compiled"):
        for kind in ("dense", "sparse"):
            for batch in settings.scaling_batches:
                n = updates_per_call(mode, batch, settings)
                measured = metric_comparison(
                    kind,
                    mode,
                    batch,
                    n,
                    settings.scaling_repeats,
                    settings.warmup,
                    settings.scaling_min_sample_s,
                )
                updates = n * measured["calls_per_sample"]
                read = bytes_read(kind, batch)
                point = {
                    "kind": kind,
                    "mode": mode,
                    "batch": batch,
                    "updates_per_sample": updates,
                    "bytes_read": read,
                    "floor_s": read / copy["bandwidth_Bps"],
                    "reference_s": measured["a"]["median_s"] / updates,
                    "ours_s": measured["b"]["median_s"] / updates,
                    "ratio_median": measured["ratio_median"],
                }
                points.append(point)
                report(
                    f"  scaling/{kind}/{mode}/batch_{batch:<8} per update: built-in "
                    f"{point['reference_s'] * 1e6:9.1f} us, ours {point['ours_s'] * 1e6:9.1f} us,"
                    f" floor {point['floor_s'] * 1e6:9.2f} us"
                )
    return {"copy": copy, "points": points, "wall_s": round(time.perf_counter() - start, 1)}
