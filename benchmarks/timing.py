"""Interleaved A/B timing and the statistics every benchmark reports.

Nothing here imports Keras or a backend: a callable passed to `compare` must
return only once its work is finished on the device (see `run.block`).
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable
from typing import Any


def _timed(fn: Callable[[], Any], clock: Callable[[], float]) -> float:
    # A collection triggered by one side's garbage would be charged to the other.
    gc.collect()
    start = clock()
    fn()
    return clock() - start


def _freeze_heap() -> None:
    # A full collection walks every object: with TensorFlow loaded that is half a
    # million and a second per sample. Frozen, the objects alive now (modules,
    # compiled functions) are skipped, and only what a sample left behind is walked.
    gc.collect()
    gc.freeze()


def summarize(seconds: list[float]) -> dict[str, Any]:
    """Median, minimum and maximum of one side's counted samples."""
    return {
        "times_s": list(seconds),
        "median_s": statistics.median(seconds),
        "min_s": min(seconds),
        "max_s": max(seconds),
    }


def compare(
    run_a: Callable[[], Any],
    run_b: Callable[[], Any],
    *,
    repeats: int,
    warmup: int = 1,
    work: float | None = None,
    min_sample_s: float = 0.0,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    """Times `run_a` and `run_b` interleaved, A B A B ..., after `warmup` pairs.

    Machine noise (another process, a frequency change) hits neighbouring
    samples alike, so the median of the per-pair ratios B/A is steadier than
    the ratio of the two medians.

    Args:
        run_a: The reference; one call does one unit of work and returns once
            it is done.
        run_b: Ours; one call does the same work as one call of `run_a`.
        repeats: Counted pairs.
        warmup: Uncounted pairs first (compilation, caches, lazy imports).
        work: Samples processed per call, for a samples-per-second figure.
        min_sample_s: With a positive value, the fastest of three calls of
            `run_a` after the warm-up (one, if it lasts that long) sets how
            many calls make one sample, at least this long, so that calls of a
            millisecond are not lost in timer and scheduler noise. Both sides
            make the same number of calls.
        clock: Seconds as a float; tests pass a fake one.

    Returns:
        A dict with `a` and `b` (per-sample seconds with their median, min and
        max), the per-pair `ratios`, `ratio_median`, `calls_per_sample`, and,
        with `work`, `work_per_sample` and each side's `samples_per_s` at its
        median time.

    Raises:
        ValueError: if `repeats` is below 1 or `warmup` below 0.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}.")
    if warmup < 0:
        raise ValueError(f"warmup must be at least 0, got {warmup}.")
    for _ in range(warmup):
        run_a()
        run_b()
    _freeze_heap()
    calls = 1
    if min_sample_s > 0:
        # The fastest of up to three: one call slowed by a neighbour must not set the size.
        once = _timed(run_a, clock)
        for _ in range(2):
            if once >= min_sample_s:
                break
            once = min(once, _timed(run_a, clock))
        calls = max(1, math.ceil(min_sample_s / max(once, 1e-9)))

    def sample(run: Callable[[], Any]) -> float:
        return _timed(lambda: [run() for _ in range(calls)], clock)

    times_a, times_b = [], []
    for _ in range(repeats):
        times_a.append(sample(run_a))
        times_b.append(sample(run_b))
    ratios = [b / a for a, b in zip(times_a, times_b, strict=True)]
    out: dict[str, Any] = {
        "a": summarize(times_a),
        "b": summarize(times_b),
        "ratios": ratios,
        "ratio_median": statistics.median(ratios),
        "calls_per_sample": calls,
    }
    if work is not None:
        out["work_per_sample"] = work * calls
        for side in ("a", "b"):
            out[side]["samples_per_s"] = work * calls / out[side]["median_s"]
    return out


def target_met(ratio: float, target: float | None) -> bool | None:
    """Whether a median ratio B/A meets its target; None where there is none."""
    return None if target is None else bool(ratio <= target)
