"""Sharded evaluation of a Keras-torch model across processes with `torch.distributed`.

Run it with `python examples/torch_distributed_evaluation.py` (it selects the
torch backend). It saves a small model to a `.keras` file and starts two ranks
on 127.0.0.1, joined by `torch.distributed.init_process_group("gloo")` on a
free loopback port. Each rank loads the model, compiles it with a
`keras_extras.RMSE` and evaluates its own shard of the data with
`model.evaluate`; the ranks then exchange `RMSE.get_state()` with
`torch.distributed.all_gather_object`, and every rank merges the states with
`RMSE.merge_state`. The merged RMSE must equal one `evaluate` of the whole data
in one process, to float32 rounding, for an even split and for an uneven one
(5 and 59 samples, neither a multiple of the batch).

The same holds for a classifier scored against sparse integer labels
(`RMSE` compares them with the predicted probabilities as one-hot vectors),
on the uneven split.

Averaging the ranks' own results instead, or losing one rank's state, would be
far off; the launcher prints both.

The ranks then train a Keras model the way Keras documents for torch: a torch
training loop around the model wrapped in `DistributedDataParallel`, each rank
on its half of every global batch, with a `keras_extras.RMSE` per epoch merged
across the ranks. The final weights and the per-epoch RMSE must equal the same
loop on whole batches in one process, to a relative 1e-5.

On a cluster, start one rank per process with `torchrun` (which sets
`RANK`, `WORLD_SIZE`, `MASTER_ADDR` and `MASTER_PORT`) and call
`evaluate_shard` there; the launcher here (`launcher.Workers`) adds a hard
timeout, an error as soon as a rank dies, and kills every process group.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

os.environ["KERAS_BACKEND"] = "torch"
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import keras  # noqa: E402
import numpy as np  # noqa: E402
from launcher import (  # noqa: E402, F401 (WorkerFailed re-exported)
    WorkerFailed,
    Workers,
    free_ports,
    loopback_env,
    read_results,
)
from sharded_evaluation import make_model_and_data, merge  # noqa: E402

import keras_extras  # noqa: E402

WORLD_SIZE = 2
BATCH = 16
# Rank 0's share of the samples in each split; rank 1 takes the rest.
SPLITS = {"even": 32, "uneven": 5}
GLOBAL_BATCH = 16
TRAIN_EPOCHS = 2
CLASSES = 3


def shard_bounds(samples: int, first: int) -> list[tuple[int, int]]:
    """The `[start, stop)` rows of each rank when rank 0 takes the first `first` samples."""
    return [(0, first), (first, samples)]


def make_classifier(folder: str, x: np.ndarray) -> tuple[str, np.ndarray]:
    """A saved softmax classifier of `x` and sparse integer labels for it; `(path, labels)`."""
    rng = np.random.default_rng(8)
    labels = np.argmax(x[:, :CLASSES] + rng.normal(size=(len(x), CLASSES)), axis=1)
    keras.utils.set_random_seed(8)
    model = keras.Sequential([keras.Input((x.shape[1],)), keras.layers.Dense(CLASSES, "softmax")])
    path = os.path.join(folder, "classifier.keras")
    model.save(path)
    return path, labels.astype("int32")


def evaluate(
    path: str, x: np.ndarray, y: np.ndarray, loss: str = "mean_squared_error"
) -> tuple[float, keras_extras.RMSE]:
    """`model.evaluate` of the saved model with a fresh `keras_extras.RMSE`.

    Returns:
        The evaluated RMSE and the metric, whose state holds the data seen.
    """
    model = keras.saving.load_model(path)
    rmse = keras_extras.RMSE()
    model.compile(loss=loss, metrics=[rmse])
    logs = model.evaluate(x, y, batch_size=BATCH, verbose=0, return_dict=True)
    return float(logs["rmse"]), rmse


def train_loop(x: np.ndarray, y: np.ndarray, rank: int | None = None) -> dict:
    """The route Keras documents for torch: a torch loop around the Keras model, DDP across ranks.

    Plain SGD on the mean squared error over `TRAIN_EPOCHS` epochs of global
    batches of `GLOBAL_BATCH`. With `rank`, the model is wrapped in
    `DistributedDataParallel` and this rank trains on its half of every
    global batch (DDP averages the ranks' gradients, which for equal halves
    is the gradient of the whole batch); `keras_extras.RMSE` records each
    epoch, and the ranks' states are merged into the RMSE of the global batches.
    Without `rank`, the same loop on whole batches in one process.

    Returns:
        `epoch_rmse` (one value per epoch) and the final `weights`.
    """
    import torch
    import torch.distributed as dist

    keras.utils.set_random_seed(7)
    model = keras.Sequential(
        [keras.Input((x.shape[1],)), keras.layers.Dense(8, "tanh"), keras.layers.Dense(y.shape[1])]
    )
    module = model if rank is None else torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    rmse = keras_extras.RMSE()
    epoch_rmse = []
    for _ in range(TRAIN_EPOCHS):
        rmse.reset_state()
        for start in range(0, len(x), GLOBAL_BATCH):
            rows = slice(start, start + GLOBAL_BATCH)
            if rank is not None:
                half = GLOBAL_BATCH // WORLD_SIZE
                rows = slice(start + rank * half, start + (rank + 1) * half)
            inputs, targets = torch.from_numpy(x[rows]), torch.from_numpy(y[rows])
            predictions = module(inputs)
            loss = torch.mean((predictions - targets) ** 2)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            rmse.update_state(targets, predictions.detach())
        if rank is None:
            epoch_rmse.append(float(rmse.result()))
        else:
            states = [None] * WORLD_SIZE
            dist.all_gather_object(states, rmse.get_state())
            epoch_rmse.append(float(merge(states).result()))
    return {"epoch_rmse": epoch_rmse, "weights": [w.tolist() for w in model.get_weights()]}


def run_rank(rank: int, port: int, folder: str) -> None:
    """One rank: evaluates its shard of each split, gathers and merges; writes `rank<N>.json`."""
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE
    )
    try:
        with open(os.path.join(folder, "data.npz"), "rb") as f:
            data = np.load(f)
            x, y, labels = data["x"], data["y"], data["labels"]
        # The regression model on both splits; the classifier with sparse labels.
        cases = {split: ("model.keras", y, "mean_squared_error") for split in SPLITS}
        cases["sparse"] = ("classifier.keras", labels, "sparse_categorical_crossentropy")
        results = {}
        for case, (name, targets, loss) in cases.items():
            first = SPLITS.get(case, SPLITS["uneven"])
            start, stop = shard_bounds(len(x), first)[rank]
            path = os.path.join(folder, name)
            own, rmse = evaluate(path, x[start:stop], targets[start:stop], loss)
            states = [None] * WORLD_SIZE
            dist.all_gather_object(states, rmse.get_state())
            results[case] = {
                "rows": stop - start,
                "own": own,
                "states": states,
                "merged": float(merge(states).result()),
            }
        results["ddp"] = train_loop(x, y, rank)
    finally:
        dist.destroy_process_group()
    with open(os.path.join(folder, f"rank{rank}.json"), "w") as f:
        json.dump(results, f)


def run(timeout: float = 240) -> dict:
    """Saves the model, runs the ranks, and evaluates the whole data here for comparison.

    Returns:
        `one_process` (one `evaluate` of all the data), `numpy` (float64
        reference), the same two for the classifier under `sparse`, and per
        rank and case (each split, and `sparse`) what the rank reported.
    """
    with tempfile.TemporaryDirectory() as folder:
        path, x, y = make_model_and_data(folder)
        classifier, labels = make_classifier(folder, x)
        with open(os.path.join(folder, "data.npz"), "wb") as f:
            np.savez(f, x=x, y=y, labels=labels)
        (port,) = free_ports(1)
        names = [f"rank{rank}" for rank in range(WORLD_SIZE)]
        commands = [
            [sys.executable, __file__, "--rank", str(r), "--port", str(port), "--folder", folder]
            for r in range(WORLD_SIZE)
        ]
        with Workers(commands, [loopback_env()] * WORLD_SIZE, folder, names) as ranks:
            ranks.wait(timeout)
        results = read_results(folder, names)
        one_process, _ = evaluate(path, x, y)
        sparse, _ = evaluate(classifier, x, labels, "sparse_categorical_crossentropy")
        one_process_training = train_loop(x, y)
        predictions = keras.saving.load_model(path).predict(x, batch_size=BATCH, verbose=0)
        probabilities = keras.saving.load_model(classifier).predict(x, batch_size=BATCH, verbose=0)
    error = predictions.astype("float64") - y.astype("float64")
    # Sparse labels: the error against the one-hot label, per sample over the classes.
    sparse_error = probabilities.astype("float64") - np.eye(CLASSES)[labels]
    return {
        "one_process": one_process,
        "numpy": float(np.sqrt(np.mean(error**2))),
        "sparse": {
            "one_process": sparse,
            "numpy": float(np.sqrt(np.mean(np.mean(sparse_error**2, axis=-1)))),
        },
        "samples": len(x),
        "splits": SPLITS,
        "one_process_training": one_process_training,
        **results,
    }


def main() -> int:
    """Launcher by default; `--rank N` is a process it starts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rank", type=int, help="run as rank N")
    parser.add_argument("--port", type=int, help="rank: the rendezvous port on 127.0.0.1")
    parser.add_argument("--folder", help="rank: where the model and data are, and results go")
    parser.add_argument("--timeout", type=float, default=240, help="launcher: seconds to wait")
    parser.add_argument("--out", help="launcher: write the values to this JSON file")
    args = parser.parse_args()
    if args.rank is not None:
        run_rank(args.rank, args.port, args.folder)
        return 0

    values = run(args.timeout)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(values, f)
    status = 0
    for split in SPLITS:
        merged = values["rank0"][split]["merged"]
        own = [values[f"rank{r}"][split]["own"] for r in range(WORLD_SIZE)]
        rows = [values[f"rank{r}"][split]["rows"] for r in range(WORLD_SIZE)]
        ok = abs(merged - values["one_process"]) <= 1e-6 * values["one_process"]
        status |= not ok
        print(
            f"{split} split {rows}: merged {merged:.7f}, one process "
            f"{values['one_process']:.7f} ({'equal' if ok else 'MISMATCH'}); "
            f"mean of the ranks' results {np.mean(own):.7f}, rank 0 alone {own[0]:.7f}"
        )
    ddp, single = values["rank0"]["ddp"], values["one_process_training"]
    same = all(
        np.allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())
        for a, b in zip(
            ddp["weights"] + [ddp["epoch_rmse"]], single["weights"] + [single["epoch_rmse"]]
        )
    )
    status |= not same
    sparse = values["sparse"]["one_process"]
    merged = values["rank0"]["sparse"]["merged"]
    ok = abs(merged - sparse) <= 1e-6 * sparse
    status |= not ok
    print(
        f"sparse labels, uneven split: merged {merged:.7f}, one process {sparse:.7f} "
        f"({'equal' if ok else 'MISMATCH'})"
    )
    print(
        f"DDP training over {WORLD_SIZE} ranks: epoch RMSE {ddp['epoch_rmse']}, one process "
        f"{single['epoch_rmse']}; weights {'equal' if same else 'MISMATCH'}"
    )
    return status


if __name__ == "__main__":
    sys.exit(main())
