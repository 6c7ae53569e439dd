"""The benchmark harness: its statistics, its report, and a quick run on this backend.

The quick run is the smoke test that keeps `benchmarks/` from rotting; it checks the
structure and arithmetic of what the harness writes, never how fast anything is.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

import keras_extras
from benchmarks import machine, report, timing
from tests.harness import BACKEND

ROOT = Path(__file__).resolve().parents[1]

durations = st.lists(st.floats(0.001, 10.0), min_size=3, max_size=12)


class FakeWork:
    """Callables A and B that take the next of their given durations on a fake clock."""

    def __init__(self, a: list[float], b: list[float]):
        self.now = 0.0
        self.calls: list[str] = []
        self.durations = {"A": list(a), "B": list(b)}

    def clock(self) -> float:
        return self.now

    def run(self, side: str):
        def call() -> None:
            self.calls.append(side)
            self.now += self.durations[side].pop(0)

        return call


@pytest.fixture(autouse=True)
def _no_collections(monkeypatch):
    # A full collection per sample is right for real timings, but slow with a
    # backend loaded and irrelevant on a fake clock.
    monkeypatch.setattr(timing.gc, "collect", lambda: 0)
    monkeypatch.setattr(timing.gc, "freeze", lambda: None)


@given(durations, st.data())
def test_compare_interleaves_after_warmup_and_summarises(a, data):
    b = data.draw(st.lists(st.floats(0.001, 10.0), min_size=len(a), max_size=len(a)))
    warmup = data.draw(st.integers(0, 2))
    repeats = len(a) - warmup
    work = FakeWork(a, b)
    out = timing.compare(
        work.run("A"), work.run("B"), repeats=repeats, warmup=warmup, work=640, clock=work.clock
    )
    assert work.calls == ["A", "B"] * len(a)
    counted_a, counted_b = a[warmup:], b[warmup:]
    assert out["a"]["times_s"] == pytest.approx(counted_a)
    assert out["b"]["times_s"] == pytest.approx(counted_b)
    for side, times in (("a", counted_a), ("b", counted_b)):
        assert out[side]["median_s"] == pytest.approx(float(np.median(times)))
        assert out[side]["min_s"] == pytest.approx(min(times))
        assert out[side]["max_s"] == pytest.approx(max(times))
        assert out[side]["samples_per_s"] == pytest.approx(640 / float(np.median(times)))
    ratios = np.array(counted_b) / np.array(counted_a)
    assert out["ratios"] == pytest.approx(list(ratios))
    assert out["ratio_median"] == pytest.approx(float(np.median(ratios)))
    assert out["calls_per_sample"] == 1


def test_compare_min_sample_s_sets_calls_from_fastest_of_three():
    # A warm-up pair, then three calibration calls of A (the fastest 0.125 s),
    # then samples of 0.5 / 0.125 = 4 calls each.
    a = [9.0] + [0.375, 0.125, 0.25] + [0.125] * 8
    b = [9.0] + [0.25] * 8
    work = FakeWork(a, b)
    out = timing.compare(
        work.run("A"), work.run("B"), repeats=2, min_sample_s=0.5, work=8, clock=work.clock
    )
    assert out["calls_per_sample"] == 4
    assert work.calls == ["A", "B"] + ["A"] * 3 + (["A"] * 4 + ["B"] * 4) * 2
    assert out["a"]["times_s"] == [0.5, 0.5]
    assert out["b"]["times_s"] == [1.0, 1.0]
    assert out["ratio_median"] == 2.0
    assert out["work_per_sample"] == 32
    assert out["b"]["samples_per_s"] == 32.0


def test_compare_min_sample_s_needs_one_call_when_a_call_is_long_enough():
    work = FakeWork([9.0] + [0.75] * 3, [9.0] + [1.5] * 2)
    out = timing.compare(
        work.run("A"), work.run("B"), repeats=2, min_sample_s=0.5, clock=work.clock
    )
    assert out["calls_per_sample"] == 1
    assert work.calls == ["A", "B", "A"] + ["A", "B"] * 2
    assert out["ratios"] == [2.0, 2.0]


@pytest.mark.parametrize("repeats, warmup", [(0, 1), (3, -1)])
def test_compare_rejects_bad_counts(repeats, warmup):
    with pytest.raises(ValueError, match="must be at least"):
        timing.compare(lambda: None, lambda: None, repeats=repeats, warmup=warmup)


def test_target_met():
    assert timing.target_met(1.05, 1.05) is True
    assert timing.target_met(1.0501, 1.05) is False
    assert timing.target_met(3.0, None) is None


@pytest.mark.parametrize(
    "device_string, kind",
    [
        ("/job:localhost/replica:0/task:0/device:CPU:0", "cpu"),  # TensorFlow
        ("/job:localhost/replica:0/task:0/device:GPU:0", "gpu"),
        ("TFRT_CPU_0", "cpu"),  # JAX
        ("cpu:0", "cpu"),
        ("cuda:0", "gpu"),
        ("cpu", "cpu"),  # torch
        ("cuda:0", "gpu"),
    ],
)
def test_device_kind_of_each_backends_device_strings(device_string, kind):
    # The GPU run refuses to measure unless Keras really places tensors on the GPU.
    assert machine.device_kind(device_string) == kind


def _record(case_id, title, target, ratios, status="ok"):
    record = {
        "id": case_id,
        "title": title,
        "a_label": "keras.Reference",
        "b_label": "keras_extras.Ours",
        "target": target,
        "params": {},
        "status": status,
    }
    if status != "ok":
        record["reason"] = "keras_extras.Ours does not exist in this version."
        return record
    times_a = [0.1] * len(ratios)
    times_b = [0.1 * r for r in ratios]
    record.update(
        a=timing.summarize(times_a),
        b=timing.summarize(times_b),
        ratios=ratios,
        ratio_median=statistics.median(ratios),
        target_met=timing.target_met(statistics.median(ratios), target),
    )
    return record


def _run(backend, device, records):
    return {
        "schema": 1,
        "quick": False,
        "complete": True,
        "started": "2025-01-01T00:00:00+00:00",
        "seconds": 12.0,
        "machine": {
            "device": device,
            "device_name": "Test CPU (2 cores)" if device == "cpu" else "Test GPU",
            "tensor_device": device,
            "platform": "Linux",
            "backend": backend,
            "versions": {"python": "3.11.0", "keras": "3.0.0", backend: "1.0"},
            "git_commit": "abc1234",
        },
        "settings": {},
        "results": records,
    }


def test_report_tables_mark_met_and_missed_targets(tmp_path):
    runs = {
        "cpu-jax": _run(
            "jax",
            "cpu",
            [
                _record("m/1", "Metric one", 1.05, [1.01, 1.02, 1.03]),
                _record("m/2", "Metric two", None, [2.0, 2.5, 3.0]),
                _record("t/1", "Train one", 1.02, [1.10, 1.20, 1.30]),
            ],
        ),
        "cpu-torch": _run(
            "torch",
            "cpu",
            [
                _record("m/1", "Metric one", 1.05, [1.2, 1.1, 1.3]),
                _record("m/2", "Metric two", None, [0.5, 0.5, 0.5]),
                _record("t/1", "Train one", 1.02, [], status="not available"),
            ],
        ),
        "gpu-jax": _run("jax", "gpu", [_record("m/1", "Metric one", 1.05, [0.9, 0.8, 1.0])]),
    }
    for name, run in runs.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(run))
    outputs = report.write_report(tmp_path)
    assert [p.name for p in outputs] == ["README.md", "table.rst", "ratios.png"]

    markdown = (tmp_path / "README.md").read_text()
    assert "| Comparison (B/A) | Target | jax | torch |" in markdown
    assert "| Metric one | ≤ 1.05 | 1.020 ✓ | 1.200 ✗ |" in markdown
    assert "| Metric two | – | 2.500 | 0.500 |" in markdown
    assert "| Train one | ≤ 1.02 | 1.200 ✗ | not available |" in markdown
    assert "| Metric one | ≤ 1.05 | 0.900 ✓ |" in markdown  # the GPU table
    assert markdown.index("## CPU") < markdown.index("## GPU")
    cpu = markdown[markdown.index("## CPU") : markdown.index("## GPU")]
    missed = cpu[cpu.index("### Missed targets") : cpu.index("### Not measured")]
    assert "- jax, Train one: 1.200× (target ≤ 1.02×)" in missed
    assert "- torch, Metric one: 1.200× (target ≤ 1.05×)" in missed
    assert missed.count("\n- ") == 2
    assert "torch, Train one: not available" in cpu
    assert "Test CPU (2 cores)" in cpu and "commit abc1234" in cpu
    gpu = markdown[markdown.index("## GPU") :]
    assert "None: every target was met." in gpu
    # Details: median [min, max] of each side's times, in ms.
    details = (
        "| Metric two | keras.Reference | keras_extras.Ours | 100 [100, 100] | 250 [200, 300] |"
    )
    assert details in markdown

    rst = (tmp_path / "table.rst").read_text()
    assert "CPU\n~~~\n" in rst and "GPU\n~~~\n" in rst
    assert "   * - Metric one\n     - ≤ 1.05\n     - 1.020 ✓\n     - 1.200 ✗\n" in rst
    assert "``jax``" in rst and ".. image::" not in rst

    with Image.open(tmp_path / "ratios.png") as image:
        assert image.format == "PNG"
        assert image.size[0] == 1000
        pixels = np.asarray(image.convert("L"), dtype=np.float64)
    assert pixels.std() > 10  # not blank


def test_report_without_results_says_so(tmp_path):
    report.write_report(tmp_path)
    assert "No measurements yet: run `make bench`" in (tmp_path / "README.md").read_text()
    assert "No measurements yet: run ``make bench``" in (tmp_path / "table.rst").read_text()
    with Image.open(tmp_path / "ratios.png") as image:
        assert image.format == "PNG"


def _finite_positive(x):
    return isinstance(x, float) and math.isfinite(x) and x > 0


def test_quick_run_writes_valid_results(tmp_path):
    code = "import sys; "
    if BACKEND != "tensorflow":
        # GPU machines may have JAX or torch without TensorFlow: the harness must
        # not need it, so here importing it fails.
        code += "sys.modules['tensorflow'] = None; "
    code += (
        "from benchmarks.run import main; "
        f"sys.exit(main(['--quick', '--device', 'cpu', '--backend', {BACKEND!r}, "
        f"'--out', {str(tmp_path)!r}]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    assert [p.name for p in tmp_path.iterdir()] == [f"cpu-{BACKEND}.json"]
    result = json.loads((tmp_path / f"cpu-{BACKEND}.json").read_text())

    assert result["schema"] == 1 and result["quick"] is True and result["complete"] is True
    machine = result["machine"]
    assert machine["device"] == "cpu" and machine["backend"] == BACKEND
    assert "cpu" in machine["tensor_device"].lower()
    assert machine["device_name"].endswith("cores)") and len(machine["device_name"]) > 8
    # The installed distribution, an independent source for the backend's version.
    distributions = {
        "tensorflow": ("tensorflow", "tensorflow-cpu"),
        "jax": ("jax",),
        "torch": ("torch",),
    }[BACKEND]
    installed = set()
    for name in distributions:
        try:
            installed.add(importlib.metadata.version(name))
        except importlib.metadata.PackageNotFoundError:
            pass
    assert machine["versions"]["python"] == platform.python_version()
    assert machine["versions"]["keras"] == keras.__version__
    assert machine["versions"]["keras_extras"] == keras_extras.__version__
    assert machine["versions"][BACKEND] in installed

    records = {r["id"]: r for r in result["results"]}
    expected = {
        f"metric_update/{kind}/{mode}/batch_32"
        for kind in ("dense", "sparse")
        for mode in ("eager", "compiled")
    } | {
        "training_step/jit_off",
        "training_step/jit_on",
        "callback/LossHistory",
        "callback/TrainingPlotter",
        "layer/ScheduledDropout",
    }
    assert set(records) == expected
    needs = {
        "training_step": "CustomModel",
        "callback/LossHistory": "LossHistory",
        "callback/TrainingPlotter": "TrainingPlotter",
        "layer/ScheduledDropout": "ScheduledDropout",
    }
    for case_id, record in records.items():
        component = next((c for prefix, c in needs.items() if case_id.startswith(prefix)), None)
        if component is not None and not hasattr(keras_extras, component):
            assert record["status"] == "not available", case_id
            assert component in record["reason"]
            continue
        if record["status"] == "skipped":
            # Only the jit_compile setting that Keras would not pick here.
            assert case_id.startswith("training_step/"), case_id
            continue
        assert record["status"] == "ok", (case_id, record.get("reason"))
        for side in ("a", "b"):
            times = record[side]["times_s"]
            assert len(times) == 2 and all(_finite_positive(t) for t in times)
            assert record[side]["median_s"] == pytest.approx(statistics.median(times))
            assert record[side]["min_s"] == min(times) and record[side]["max_s"] == max(times)
            assert record[side]["samples_per_s"] == pytest.approx(
                record["work_per_sample"] / record[side]["median_s"]
            )
        ratios = [
            b / a for a, b in zip(record["a"]["times_s"], record["b"]["times_s"], strict=True)
        ]
        assert record["ratios"] == pytest.approx(ratios)
        assert record["ratio_median"] == pytest.approx(statistics.median(ratios))
        assert record["target_met"] == (
            None if record["target"] is None else record["ratio_median"] <= record["target"]
        )
    statuses = {r["status"] for r in records.values()}
    assert statuses <= {"ok", "not available", "skipped"}
    skipped = [i for i, r in records.items() if r["status"] == "skipped"]
    assert len(skipped) <= 1

    report.write_report(tmp_path)
    markdown = (tmp_path / "README.md").read_text()
    for record in records.values():
        assert f"| {record['title']} |" in markdown
