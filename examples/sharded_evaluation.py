"""Sharded evaluation on any engine: one `keras_extras.RMSE` per shard, merged at the end.

Run it with `python examples/sharded_evaluation.py` on any Keras backend. It
trains nothing: it saves a small model to a `.keras` file, splits the evaluation
data into shards of different sizes, and evaluates each shard in its own
process (a `multiprocessing` pool here; a Ray task or a Spark partition work
the same way). Each process sends back `RMSE.get_state()`, plain numbers; the
parent rebuilds a metric per shard with `set_state` and merges them with
`RMSE.merge_state`. The merged value equals the RMSE of the whole data set, as
one metric and a NumPy float64 computation give it, whatever the shard sizes
and whatever order the shards finish in.

`keras.metrics.RootMeanSquaredError` could not do this: averaging the shards'
results is wrong as soon as the shards differ in size or error, and it has no
state to send.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_extras  # noqa: E402

SHARD_SIZES = (5, 17, 42)


def evaluate_shard(job: tuple[str, np.ndarray, np.ndarray]) -> dict[str, list[float]]:
    """Runs in a worker process: the RMSE state of one shard."""
    path, x, y = job
    model = keras.saving.load_model(path)
    metric = keras_extras.RMSE()
    # Batch by batch, as a large shard would be streamed.
    for start in range(0, len(x), 16):
        metric.update_state(y[start : start + 16], model.predict_on_batch(x[start : start + 16]))
    return metric.get_state()


def merge(states: list[dict[str, list[float]]]) -> keras_extras.RMSE:
    """One metric holding the merged `RMSE.get_state()`s of several shards."""
    shards = []
    for state in states:
        shard = keras_extras.RMSE()
        shard.set_state(state)
        shards.append(shard)
    merged = keras_extras.RMSE()
    merged.merge_state(shards)
    return merged


def make_model_and_data(folder: str) -> tuple[str, np.ndarray, np.ndarray]:
    """A saved model and evaluation data; returns `(path, x, y)`."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(sum(SHARD_SIZES), 4)).astype("float32")
    y = (x @ rng.normal(size=(4, 2)) + rng.normal(size=(1, 2))).astype("float32")
    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    path = os.path.join(folder, "model.keras")
    model.save(path)
    return path, x, y


def run(processes: int = 2) -> dict[str, float]:
    """Evaluates the shards in `processes` worker processes and merges them.

    Returns:
        `merged` (the merged RMSE), `one_metric` (one RMSE over all the data),
        `numpy` (float64 reference) and `mean_of_shards` (the wrong answer).
    """
    with tempfile.TemporaryDirectory() as folder:
        path, x, y = make_model_and_data(folder)
        bounds = np.cumsum((0,) + SHARD_SIZES)
        jobs = [(path, x[a:b], y[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
        # "spawn": TensorFlow, JAX and torch are not safe to fork once started.
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            states = pool.map(evaluate_shard, jobs)
        predictions = keras.saving.load_model(path).predict(x, verbose=0)

    merged = merge(states[::-1])  # any order gives the same value
    one = keras_extras.RMSE()
    one.update_state(y, predictions)
    error = predictions.astype("float64") - y.astype("float64")
    return {
        "merged": float(merged.result()),
        "one_metric": float(one.result()),
        "numpy": float(np.sqrt(np.mean(error**2))),
        "mean_of_shards": float(np.mean([float(merge([s]).result()) for s in states])),
    }


def main() -> int:
    """Prints the merged value beside the references; `--out PATH` writes them as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write the values to this JSON file")
    args = parser.parse_args()
    values = run()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(values, f)
    for name, value in values.items():
        print(f"{name:>15}: {value:.7f}")
    ok = abs(values["merged"] - values["numpy"]) <= 1e-6 * values["numpy"]
    print("merged equals the whole-data RMSE" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
