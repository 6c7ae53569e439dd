"""Across processes: JAX multi-process training and torch.distributed evaluation.

Both start real processes on 127.0.0.1 through the examples' launcher
(`examples/launcher.py`) and check their numbers against one process: the JAX
run against a one-device run of the same global batches
(`examples/jax_multiprocess.py`); the torch ranks' merged RMSE against one
`evaluate` of all the data, and their DistributedDataParallel loop against the
same loop in one process (`examples/torch_distributed_evaluation.py`).
"""

from __future__ import annotations

import harness
import numpy as np
import pytest
from harness import MARGIN, load_example, read_json, run_example

common = load_example("common")


def numpy_rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Float64 RMSE, per sample over the output axis, then over the samples."""
    error = np.asarray(y_pred, "float64") - np.asarray(y_true, "float64")
    return float(np.sqrt(np.mean(np.mean(error**2, axis=-1))))


JAX_ONLY = "jax.distributed and keras.distribution across processes run on JAX"


# Keras 3.10.0's fit, under a distribution across processes, refuses NumPy input whatever
# `auto_shard_dataset` says: "ValueError: When using multi-worker distribution, the data
# must be provided as a `tf.data.Dataset` instance. Received: type(x)=<class
# 'numpy.ndarray'>" (keras/src/trainers/data_adapters/__init__.py), in both tests. Keras
# 3.11.0 accepts any input with `auto_shard_dataset = False` (keras-team/keras#21430);
# both tests pass on 3.11.0, 3.11.3, 3.12.4, 3.13.2, 3.14.1, 3.15.1 and keras-nightly.
OLD_KERAS_MULTIPROCESS = pytest.mark.skipif(
    harness.KERAS_VERSION < (3, 11),
    reason="Keras 3.10 refuses NumPy input under a multi-process distribution "
    "(needs a tf.data.Dataset; keras-team/keras#21430, in 3.11.0)",
)


@OLD_KERAS_MULTIPROCESS
@pytest.mark.multiprocess
@pytest.mark.backends("jax", reason=JAX_ONLY)
def test_jax_two_processes_equal_one_device(tmp_path):
    # One launch for every check (process start-up and compilation are most
    # of the cost), each check in a helper of its own below.
    _, workers = harness.launch_example("jax_multiprocess", tmp_path)
    reference = workers.pop("reference")
    assert sorted(workers) == ["worker0", "worker1"]
    for name, run in workers.items():
        assert run["processes"] == 2
        # One global mesh: each process sees both processes' devices.
        assert len(set(run["devices"])) == 2
        assert run["devices"] == workers["worker0"]["devices"]
        assert run["batch_axes"] == ["batch", None]
        assert run["kernel_replicated"]
        harness.assert_same_as_one_device(run, reference, name)
    assert_rmse_against_numpy(reference, workers)
    assert_one_share_dropped_or_doubled_is_seen(reference, workers)
    assert_dropout_counts_global_batches_and_resumes(reference, workers)
    # Process 0 alone draws; what it drew are the one-device numbers.
    assert "plotted_epochs" not in workers["worker1"]
    harness.assert_plotted(tmp_path / "plots", workers["worker0"], reference)


def assert_rmse_against_numpy(reference: dict, workers: dict) -> None:
    """Dense and sparse RMSE in every process's `evaluate`, against float64 NumPy."""
    history = reference["history"]
    assert all(len(v) == common.EPOCHS for v in history.values())
    # The regression head's RMSE is sqrt of Keras's MSE, epoch by epoch.
    for prefix in ("", "val_"):
        np.testing.assert_allclose(
            history[f"{prefix}value_rmse"], np.sqrt(history[f"{prefix}value_loss"]), rtol=1e-5
        )
    _, _, _, y_val = common.make_data()
    predictions = {k: np.asarray(v) for k, v in reference["val_predictions"].items()}
    one_hot = np.eye(3)[y_val["label"]]
    for run in (reference, *workers.values()):
        evaluation = run["evaluate"]
        np.testing.assert_allclose(
            evaluation["value_rmse"], numpy_rmse(y_val["value"], predictions["value"]), rtol=1e-5
        )
        np.testing.assert_allclose(
            evaluation["label_rmse"], numpy_rmse(one_hot, predictions["label"]), rtol=1e-5
        )


def assert_one_share_dropped_or_doubled_is_seen(reference: dict, workers: dict) -> None:
    """A process's share lost or counted twice moves every value far past the tolerance."""
    # On one device: the second half of every validation batch dropped, or doubled.
    harness.assert_sensitive(reference["sensitivity"])
    # Across the processes: process 1 fed process 0's share in place of its own.
    for name, run in workers.items():
        for key, want in reference["evaluate"].items():
            change = abs(run["fault_evaluate"][key] - want) / abs(want)
            assert change > MARGIN * common.RTOL, f"{name}: the fault moves {key} by {change:.2e}"


def assert_dropout_counts_global_batches_and_resumes(reference: dict, workers: dict) -> None:
    """ScheduledDropout: once per global batch on every process; process 0's file resumes it."""
    trained = common.expected_dropout_iterations()
    assert reference["dropout_iterations"] == trained
    for name, run in workers.items():
        # Not per process, not per device.
        assert run["dropout_iterations"] == trained, name
        assert len(run["batches"]["loss"]) == trained, name
        # Process 0's file, loaded by every process, carries the counter, and
        # training goes on as if it had never stopped: the same rates, masks
        # and weights as the one-device run that did not stop.
        harness.assert_resumed(run, reference, name)


@OLD_KERAS_MULTIPROCESS
@pytest.mark.multiprocess
@pytest.mark.backends("jax", reason=JAX_ONLY)
def test_jax_dead_process_is_reported_and_the_other_stopped(tmp_path):
    launcher = load_example("jax_multiprocess")
    processes = launcher.launch(str(tmp_path), ("--crash-after-batch", "1"), reference=False)
    with processes:
        # The timeout is for a hang only: a launcher that waited for it would report
        # "still running after 900 s", not the exit.
        with pytest.raises(launcher.WorkerFailed, match="worker1 exited with status 3") as info:
            processes.wait(timeout=900)
        # Worker 0 waited inside the next step's collective for a peer that was gone:
        # wait() stopped it (unless the failed collective ended it first), before
        # this block's exit would, and it never finished training.
        assert processes.processes[0].returncode not in (None, 0)
        assert processes.processes[1].returncode == 3
    assert not (tmp_path / "worker0.json").exists()
    # Worker 1 exited where it was told to, and the report carries its last words.
    assert "worker 1: exiting at " in str(info.value)


@pytest.mark.multiprocess
@pytest.mark.backends("torch", reason="torch.distributed with a Keras model on the torch backend")
def test_torch_distributed_evaluation_and_ddp_training_equal_one_process(tmp_path):
    # One launch: the ranks evaluate, then train.
    out = tmp_path / "values.json"
    run_example("torch_distributed_evaluation", "--out", str(out))
    values = read_json(out)
    assert_sharded_evaluation_merges_to_one_process(values)
    assert_ddp_training_equals_one_process(values)


def assert_sharded_evaluation_merges_to_one_process(values: dict) -> None:
    """Each rank's RMSE state, gathered and merged: one process's `evaluate`.

    For the regression model on an even and an uneven split, and for the
    classifier with sparse integer labels on the uneven split.
    """
    assert set(values["splits"]) == {"even", "uneven"}
    cases = {split: (first, values) for split, first in values["splits"].items()}
    cases["sparse"] = (values["splits"]["uneven"], values["sparse"])
    for case, (first, whole) in cases.items():
        one_process = whole["one_process"]
        np.testing.assert_allclose(one_process, whole["numpy"], rtol=1e-6, err_msg=case)
        ranks = [values["rank0"][case], values["rank1"][case]]
        assert [r["rows"] for r in ranks] == [first, values["samples"] - first]
        # Every rank gathered every rank's state, in rank order.
        assert ranks[0]["states"] == ranks[1]["states"]
        for rank in ranks:
            # To float32 rounding: the batches are cut otherwise than in one process.
            np.testing.assert_allclose(rank["merged"], one_process, rtol=1e-6, err_msg=case)
        # What the merge avoids: a rank's part lost (each rank's own result)...
        for rank in ranks:
            assert abs(rank["own"] - one_process) > MARGIN * 1e-6 * one_process, case
        # ...or the ranks' results averaged, wrong for shards of different sizes.
        if first != values["samples"] - first:
            mean = np.mean([rank["own"] for rank in ranks])
            assert abs(mean - one_process) > MARGIN * 1e-6 * one_process, case


def assert_ddp_training_equals_one_process(values: dict) -> None:
    """A torch loop around the Keras model in DDP: the one-process loop's weights and RMSE."""
    single = values["one_process_training"]
    assert single["epoch_rmse"][1] < single["epoch_rmse"][0], "the loop must train"
    for rank in ("rank0", "rank1"):
        ddp = values[rank]["ddp"]
        # The merged RMSE of the ranks' halves is the RMSE of the global batches.
        np.testing.assert_allclose(ddp["epoch_rmse"], single["epoch_rmse"], rtol=1e-5)
        for got, want in zip(ddp["weights"], single["weights"]):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
