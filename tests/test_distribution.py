"""Scale-out: the components under tf.distribute, JAX data parallelism and sharded evaluation.

Each test runs an example script of `examples/` (the code users copy) and checks
its numbers here against the one-device run of the same training. Data and
model come from `examples/common.py`; the second half of every global batch has
other targets than the first, so a replica's contribution that were dropped or
counted twice would move the values by far more than the tolerance
(`test_*` assert that margin too).
"""

from __future__ import annotations

import os
import sys
import time

import harness
import keras
import numpy as np
import psutil
import pytest
from harness import MARGIN, load_example, read_json, run_example

common = load_example("common")
HEADS = ("value", "label")


def assert_consistent(results: dict) -> None:
    """Checks one run against references other than the one-device run."""
    history = results["history"]
    logged = ["loss"] + [f"{head}_{name}" for head in HEADS for name in ("loss", "rmse")]
    assert sorted(history) == sorted(logged + [f"val_{key}" for key in logged])
    assert all(len(v) == common.EPOCHS for v in history.values())
    # The value head's loss is Keras's MSE, RMSE ours: on one output, RMSE = sqrt(MSE).
    # Training epochs only: on TensorFlow, Keras (3.15.1) averages a head's own loss
    # over the batches unweighted, so the validation data's short last batch (6 of 22
    # samples) counts as much as a full one there; the RMSE weights it by its samples.
    np.testing.assert_allclose(history["value_rmse"], np.sqrt(history["value_loss"]), rtol=1e-5)
    evaluation = results["evaluate"]
    np.testing.assert_allclose(evaluation["loss"], history["val_loss"][-1], rtol=1e-5)
    np.testing.assert_allclose(evaluation["value_rmse"], history["val_value_rmse"][-1], rtol=1e-5)
    # ScheduledDropout's integer counter: once per global batch, not per replica.
    assert results["dropout_iterations"] == common.expected_dropout_iterations()
    assert len(results["batches"]["loss"]) == common.expected_dropout_iterations()


@pytest.mark.backends("tensorflow", reason="tf.distribute exists on the TensorFlow backend only")
def test_tf_mirrored_strategy_equals_one_device(tmp_path):
    # One run for every check: sparse labels (the label head), the reload and the plots.
    out = tmp_path / "runs.json"
    run_example("tf_mirrored", "--out", str(out), "--folder", str(tmp_path))
    runs = read_json(out)
    assert runs["replicas"] == 2
    for run in (runs["reference"], runs["mirrored"]):
        assert_consistent(run)
    harness.assert_same_as_one_device(runs["mirrored"], runs["reference"])
    harness.assert_sensitive(runs["sensitivity"])
    # A metric whose state kept the first replica's part only is caught.
    rmse = runs["mirrored"]["evaluate"]["value_rmse"]
    assert abs(runs["first_replica_rmse"] - rmse) > MARGIN * common.RTOL * rmse
    harness.assert_resumed(runs["mirrored"], runs["reference"])
    harness.assert_plotted(tmp_path / "plots", runs["mirrored"], runs["reference"])


@pytest.mark.backends("jax", reason="keras.distribution.DataParallel runs on JAX (and TF DTensor)")
def test_jax_data_parallel_equals_one_device(tmp_path):
    # One run for every check: dropout masks (rate > 0), sparse labels, the reload, the plots.
    out = tmp_path / "runs.json"
    run_example("jax_data_parallel", "--out", str(out), "--folder", str(tmp_path))
    runs = read_json(out)
    assert runs["devices"][:2] == ["cpu:0", "cpu:1"]
    assert runs["batch_axes"] == ["batch", None]
    assert runs["kernel_replicated"]
    for run in (runs["reference"], runs["parallel"]):
        assert_consistent(run)
    harness.assert_same_as_one_device(runs["parallel"], runs["reference"])
    harness.assert_sensitive(runs["sensitivity"])
    harness.assert_resumed(runs["parallel"], runs["reference"])
    harness.assert_plotted(tmp_path / "plots", runs["parallel"], runs["reference"])


@pytest.mark.backends("torch", reason="pins what Keras's torch backend lacks")
def test_keras_distribution_is_unavailable_on_torch():
    # Keras (3.15.1) has no distribution backend for torch: keras.distribution
    # fails on first use. docs/distribution.rst says so and names the torch
    # route instead; when this test fails, Keras has added it, and the docs
    # and examples must follow.
    with pytest.raises(AttributeError, match="list_devices"):
        keras.distribution.list_devices()
    with pytest.raises(AttributeError, match="list_devices"):
        keras.distribution.DataParallel()


@pytest.mark.multiprocess
def test_sharded_evaluation_merges_to_the_whole_data_rmse(tmp_path):
    out = tmp_path / "values.json"
    run_example("sharded_evaluation", "--out", str(out))
    values = read_json(out)
    np.testing.assert_allclose(values["merged"], values["numpy"], rtol=1e-6)
    np.testing.assert_allclose(values["merged"], values["one_metric"], rtol=1e-6)
    # Shards of different sizes: averaging their results would be wrong.
    assert abs(values["mean_of_shards"] - values["numpy"]) > 1e-2 * values["numpy"]


TF_ONLY = "MultiWorkerMirroredStrategy is a TensorFlow strategy"


@pytest.mark.multiprocess
@pytest.mark.backends("tensorflow", reason=TF_ONLY)
def test_tf_multi_worker_equals_one_device(tmp_path):
    # One launch for every check: sparse labels (the label head), the reload and the plots.
    launcher, runs = harness.launch_example("tf_multiworker", tmp_path, timeout=240)
    reference = runs.pop("reference")
    assert_consistent(reference)
    assert sorted(runs) == [f"worker{index}" for index in range(launcher.NUM_WORKERS)]
    for name, results in runs.items():
        assert results["replicas"] == launcher.NUM_WORKERS
        assert_consistent(results)
        harness.assert_same_as_one_device(results, reference, name)
        # Worker 0 saved the file; every worker resumed from it.
        harness.assert_resumed(results, reference, name)
    # Worker 0 alone draws; its plotter recorded the global numbers.
    assert "plotted_epochs" not in runs["worker1"]
    harness.assert_plotted(tmp_path / "plots", runs["worker0"], reference)


@pytest.mark.multiprocess
@pytest.mark.backends("tensorflow", reason=TF_ONLY)
def test_tf_multi_worker_dead_worker_is_reported_and_the_other_stopped(tmp_path):
    launcher = load_example("tf_multiworker")
    workers = launcher.launch(str(tmp_path), ("--crash-after-epoch", "1"))
    with workers:
        # The timeout is for a hang only: a launcher that waited for it would report
        # "still running after 900 s", not the crash.
        with pytest.raises(launcher.WorkerFailed, match="worker1 exited with status 3") as info:
            workers.wait(timeout=900)
        # Worker 0, which waits for worker 1 forever inside a collective, was stopped
        # by wait(), before this block's exit would, and never finished.
        assert workers.processes[0].returncode not in (None, 0)
        assert workers.processes[1].returncode == 3
    assert not (tmp_path / "worker0.json").exists()
    # Worker 1 crashed where it was told to.
    assert "worker 1: epoch 1 done" in str(info.value)


@pytest.mark.multiprocess
@pytest.mark.backends("tensorflow", reason="the launcher of the TensorFlow multi-worker example")
def test_worker_launcher_timeout_kills_every_process_group(tmp_path):
    launcher = load_example("tf_multiworker")
    # A child that starts a grandchild of its own, then both sleep.
    code = (
        "import subprocess, sys, time\n"
        "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        "print(g.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    names = ["sleeper0", "sleeper1"]
    workers = launcher.Workers(
        [[sys.executable, "-c", code]] * 2, [dict(os.environ)] * 2, str(tmp_path), names
    )
    # The deadlines below are for hangs only; a sleeper that outlived a `wait` which
    # ignored its timeout would exit 0 after 600 s, and no WorkerFailed would come.
    with workers:
        deadline = time.monotonic() + 300
        while not all(os.path.getsize(log) for log in workers.logs):
            assert time.monotonic() < deadline, "the sleepers did not start"
            time.sleep(0.1)
        grandchildren = [int(open(log).read()) for log in workers.logs]
        with pytest.raises(launcher.WorkerFailed, match="sleeper0, sleeper1 still running"):
            workers.wait(timeout=1)
        # wait() itself stopped them, before the block's exit would.
        assert all(p.returncode == -9 for p in workers.processes)
    for pid in grandchildren:
        deadline = time.monotonic() + 300
        while _alive(pid):
            assert time.monotonic() < deadline, f"grandchild {pid} survived"
            time.sleep(0.1)


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for its new parent counts as dead)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
