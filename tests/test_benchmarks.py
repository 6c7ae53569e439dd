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


def test_a_result_names_its_commit_and_whether_the_code_measured_differs_from_it(
    tmp_path, monkeypatch
):
    """Catches results credited to a commit whose code they did not run (a run from a
    tree with uncommitted changes to src/ or the harness), results files counted as
    such changes, and a run outside git that forgets `BENCH_GIT_COMMIT`."""
    monkeypatch.setenv("BENCH_GIT_COMMIT", "f00d123")
    assert machine.git_commit(tmp_path) == "f00d123"
    for name in ("src/a.py", "benchmarks/cases.py", "benchmarks/results/cpu-jax.json"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("0")
    for args in (
        ["init", "-q"],
        ["add", "."],
        ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "x"],
    ):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=tmp_path, capture_output=True, text=True
    ).stdout.strip()
    assert machine.git_commit(tmp_path) == head
    (tmp_path / "benchmarks/results/cpu-jax.json").write_text("1")
    assert machine.git_commit(tmp_path) == head
    for name in ("src/a.py", "benchmarks/cases.py"):
        (tmp_path / name).write_text("1")
        assert machine.git_commit(tmp_path) == f"{head}-dirty", name
        subprocess.run(["git", "checkout", "-q", name], cwd=tmp_path, check=True)
    assert machine.git_commit(tmp_path) == head


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
    # Another benchmark's JSON beside the runs is not a run.
    (tmp_path / "cli.json").write_text(json.dumps({"median of fresh processes": {}}))
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


@pytest.mark.parametrize(
    "seconds, start",
    [
        ([1.0, 1.0, 1.0, 1.0, 1.0], None),  # a fixed cost all along
        ([1.0, 1.0, 1.1, 4.0, 16.0], 128),  # linear once the batch reaches 128
        ([1.0, 4.0, 16.0, 64.0, 256.0], 8),
        ([1.0, 4.0, 16.0, 64.0, 64.0], None),  # the last step stopped growing
        ([1.0, 1.0, 1.0, 3.0, 4.5], 128),  # exactly 3/4 of the batch's growth counts
    ],
)
def test_linear_from(seconds, start):
    assert report.linear_from([8, 32, 128, 512, 1024], seconds) == start


def _scaling(bandwidth, fixed_s):
    """Scaling points of an update that costs `fixed_s` plus 2x the floor."""
    points = []
    for mode in ("eager", "compiled"):
        for kind in ("dense", "sparse"):
            for batch in [32 * 4**k for k in range(8)] + [2**20]:
                read = batch * 10 * 4 * (2 if kind == "dense" else 1) + (
                    batch * 4 if kind == "sparse" else 0
                )
                floor = read / bandwidth
                cost = fixed_s[mode]
                points.append(
                    {
                        "kind": kind,
                        "mode": mode,
                        "batch": batch,
                        "updates_per_sample": 10,
                        "bytes_read": read,
                        "floor_s": floor,
                        "reference_s": cost + 2 * floor,
                        "ours_s": 2 * cost + 3 * floor,
                        "ratio_median": 1.0,
                    }
                )
    moved = 2 * 2**28
    return {
        "copy": {
            "bytes": 2**28,
            "seconds": moved / bandwidth,
            "moved_bytes": moved,
            "bandwidth_Bps": bandwidth,
        },
        "points": points,
        "wall_s": 1.0,
    }


def test_report_scaling_table_and_chart(tmp_path):
    run = _run("jax", "cpu", [_record("m/1", "Metric one", 1.05, [1.0, 1.0, 1.0])])
    # 10 GB/s, so a dense row's 80 bytes take 8 ns; a fixed cost of 1 ms per eager
    # update (2 ms for ours) and none compiled.
    run["scaling"] = _scaling(1e10, {"eager": 1e-3, "compiled": 0.0})
    (tmp_path / "cpu-jax.json").write_text(json.dumps(run))
    outputs = report.write_report(tmp_path)
    assert [p.name for p in outputs][-1] == "scaling-cpu.png"

    markdown = (tmp_path / "README.md").read_text()
    assert "### Scaling with batch size (CPU)" in markdown
    assert "![RMSE update time against batch size, CPU](scaling-cpu.png)" in markdown
    assert "jax 10.0 GB/s" in markdown and "256 MiB" in markdown
    # Dense eager, the built-in takes 1 ms + 16 ns per row: a step x4 from batch b grows
    # it at least 3-fold once 16 ns * b >= 2 ms, b >= 125,000; ours, 2 ms + 24 ns per
    # row, once b >= 166,667, so only from 524,288 (x2 to 1,048,576: 1.86-fold).
    # At 1,048,576 the floor is 8.39 ms: 1 + 16.78 ms is 2.1x it, 2 + 25.17 ms 3.2x.
    assert "| jax | dense | eager | 131,072 | 524,288 | 2.1 | 3.2 |" in markdown
    # Compiled there is no fixed cost: linear from the smallest batch, 2x and 3x.
    assert "| jax | sparse | compiled | 32 | 32 | 2.0 | 3.0 |" in markdown
    assert "A × floor at 1,048,576" in markdown
    with Image.open(tmp_path / "scaling-cpu.png") as image:
        assert image.format == "PNG"
        pixels = np.asarray(image.convert("L"), dtype=np.float64)
    assert pixels.std() > 10


def test_committed_tables_are_generated_from_the_committed_json():
    # The docs include table.rst: a hand edit, or JSON committed without running
    # the report, would show figures that no run measured.
    results = ROOT / "benchmarks" / "results"
    blocks = report.document(report.load(results))
    assert (results / "README.md").read_text(encoding="utf-8") == report.to_markdown(blocks)
    assert (results / "table.rst").read_text(encoding="utf-8") == report.to_rst(blocks)


def test_a_partial_run_keeps_the_other_stages_of_the_file_it_replaces(tmp_path):
    from benchmarks import run as bench_run

    old = _run(
        "jax",
        "cpu",
        [
            _record("metric_update/a", "Metric", 1.05, [1.0]),
            _record("training_step/a", "Step", 1.02, [1.1]),
            _record("layer/a", "Layer", 1.05, [0.9]),
        ],
    )
    old["scaling"] = _scaling(1e10, {"eager": 1e-3, "compiled": 0.0})
    old["carried"] = {"layer": {"started": "2024-06-01", "git_commit": "0ld"}}
    path = tmp_path / "cpu-jax.json"
    path.write_text(json.dumps(old))
    new = _run("jax", "cpu", [])
    new["machine"]["git_commit"] = "new"
    bench_run.carry_over(path, new, ("training_step",))
    assert [r["id"] for r in new["results"]] == ["metric_update/a", "layer/a"]
    assert new["scaling"] == old["scaling"]
    assert new["carried"] == {
        "metric_update": {"started": old["started"], "git_commit": "abc1234"},
        "scaling": {"started": old["started"], "git_commit": "abc1234"},
        "layer": {"started": "2024-06-01", "git_commit": "0ld"},
    }
    # Nothing is carried from another backend, device or mode.
    for key, value in (("backend", "torch"), ("device", "gpu")):
        other = _run("jax", "cpu", [])
        other["machine"][key] = value
        bench_run.carry_over(path, other, ("training_step",))
        assert other["results"] == [] and "carried" not in other
    quick = _run("jax", "cpu", [])
    quick["quick"] = True
    bench_run.carry_over(path, quick, ("training_step",))
    assert "carried" not in quick

    (tmp_path / "cpu-jax.json").write_text(json.dumps(new))
    report.write_report(tmp_path)
    markdown = (tmp_path / "README.md").read_text()
    assert f"metric_update from the run of {old['started']}, commit abc1234" in markdown
    assert "layer from the run of 2024-06-01, commit 0ld" in markdown


def test_report_without_results_says_so(tmp_path):
    report.write_report(tmp_path)
    assert "No measurements yet: run `make bench`" in (tmp_path / "README.md").read_text()
    assert "No measurements yet: run ``make bench``" in (tmp_path / "table.rst").read_text()
    with Image.open(tmp_path / "ratios.png") as image:
        assert image.format == "PNG"


def test_a_case_whose_component_is_missing_or_skipped_is_recorded_as_such():
    """Results of an older keras_extras (without a component) or of quick mode are
    records that say why, and nothing is measured for them."""
    from benchmarks import cases

    def measure():
        raise AssertionError("measured")

    args = ("x/1", "X", "keras.A", "keras_extras.B", 1.05, {}, measure)
    missing = cases._record(*args, needs="NoSuchComponent")
    assert (missing["status"], missing["reason"]) == (
        "not available",
        "keras_extras.NoSuchComponent does not exist in this version.",
    )
    skipped = cases._record(*args, needs="RMSE", skip="why not")
    assert (skipped["status"], skipped["reason"]) == ("skipped", "why not")


def _finite_positive(x):
    return isinstance(x, float) and math.isfinite(x) and x > 0


def keras_default_jit_compile() -> bool:
    """What `compile()` picks for `jit_compile="auto"` here, asked of Keras itself."""
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(loss="mse")
    return bool(model.jit_compile)


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
    # Quick mode times only the jit_compile setting that Keras would pick here.
    skipped = f"training_step/jit_{'off' if keras_default_jit_compile() else 'on'}"
    expected = {
        f"metric_update/{kind}/{mode}/batch_32"
        for kind in ("dense", "sparse")
        for mode in ("eager", "compiled")
    } | {
        "metric_update/dense/eager/varying",
        "metric_update/sparse/eager/varying",
        "metric_update/in_fit",
        "training_step/jit_off",
        "training_step/jit_on",
        "callback/LossHistory",
        "callback/TrainingPlotter",
        "callback/TrainingPlotter/long",
        "callback/TrainingPlotter/short_epochs",
        "callback/TrainingPlotter/notebook",
        "layer/ScheduledDropout",
    }
    assert set(records) == expected
    for case_id, record in records.items():
        if case_id == skipped:
            assert record["status"] == "skipped", case_id
            assert record["reason"] == "quick mode runs Keras's default jit_compile only."
            continue
        assert record["status"] == "ok", (case_id, record.get("reason"))
        # Two counted samples a side. The statistics made of them are checked against
        # NumPy on a fake clock (test_compare_*); here, only that they were measured.
        for side in ("a", "b"):
            times = record[side]["times_s"]
            assert len(times) == 2 and all(_finite_positive(t) for t in times)
        assert len(record["ratios"]) == 2 and all(_finite_positive(r) for r in record["ratios"])
        if case_id.startswith("callback/"):
            # One begin-plus-end time per fit with the callback: warm-up and counted.
            fixed = record["fixed_s"]["times_s"]
            assert len(fixed) == 1 + len(record["b"]["times_s"])
            assert all(_finite_positive(t) for t in fixed)
            assert record["fixed_s"]["median_s"] == pytest.approx(float(np.median(fixed)))
    scaling = result["scaling"]
    copy = scaling["copy"]
    assert copy["moved_bytes"] == 2 * copy["bytes"]
    assert copy["bandwidth_Bps"] == pytest.approx(copy["moved_bytes"] / copy["seconds"])
    keys = [(p["kind"], p["mode"], p["batch"]) for p in scaling["points"]]
    assert sorted(keys) == sorted(
        (kind, mode, batch)
        for kind in ("dense", "sparse")
        for mode in ("eager", "compiled")
        for batch in (32, 1024)
    )
    for point in scaling["points"]:
        batch = point["batch"]
        # The inputs as NumPy would hold them: float32 predictions of 10 classes, and
        # float32 targets of the same shape or one int32 label per row.
        inputs = [np.zeros((batch, 10), np.float32)]
        inputs.append(
            np.zeros((batch, 10), np.float32)
            if point["kind"] == "dense"
            else np.zeros(batch, np.int32)
        )
        assert point["bytes_read"] == sum(a.nbytes for a in inputs)
        assert point["floor_s"] == pytest.approx(point["bytes_read"] / copy["bandwidth_Bps"])
        assert _finite_positive(point["reference_s"]) and _finite_positive(point["ours_s"])
        assert point["updates_per_sample"] >= 2

    assert [i for i, r in records.items() if r["status"] != "ok"] == [skipped]

    report.write_report(tmp_path)
    markdown = (tmp_path / "README.md").read_text()
    for record in records.values():
        assert f"| {record['title']} |" in markdown
    plotter = records["callback/TrainingPlotter"]
    fixed = plotter["fixed_s"]["median_s"]
    assert f"{BACKEND}, fit with TrainingPlotter: {fixed * 1e3:,.0f} ms" in markdown
    # The drawing process outlives each fit: its CPU time is read live, every fit.
    assert all(_finite_positive(t) for t in plotter["child_cpu_s"]["times_s"])
    assert records["callback/LossHistory"]["child_cpu_s"]["max_s"] == 0
