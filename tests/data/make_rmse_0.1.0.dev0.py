"""Wrote the keras_extras 0.1.0.dev0 RMSE fixtures; it runs only with that version's code
(commit c125e8d), whose state variables were `hi` and `lo`:

    KERAS_BACKEND=jax python tests/data/make_rmse_0.1.0.dev0.py tests/data
"""

import json
import sys
from pathlib import Path

import keras
import numpy as np

import keras_extras

out = Path(sys.argv[1])
assert keras_extras.__version__ == "0.1.0.dev0"

# A model compiled with RMSE: a .keras file holds the metric's config, not its state.
keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
x = rng.normal(size=(24, 4)).astype("float32")
y = rng.integers(0, 3, size=(24,))
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
model.compile(
    optimizer="sgd",
    loss="sparse_categorical_crossentropy",
    metrics=[keras_extras.RMSE(name="rmse_v0")],
)
model.fit(x, y, batch_size=8, epochs=1, verbose=0)
np.savez(out / "rmse_0.1.0.dev0_data.npz", x=x, y=y)
model.save(out / "rmse_0.1.0.dev0_model.keras")

# A state with non-zero low parts: 2**24 samples, then three more.
metric = keras_extras.RMSE()
hi = np.array([0.3 * 2**24, 2**24], np.float32)
metric.hi.assign(hi)
metric.lo.assign((np.array([0.3 * 2**24, 2**24]) - hi).astype(np.float32))
metric.update_state(np.zeros((3, 1), "float32"), np.full((3, 1), 0.5, "float32"))
state = metric.get_state()
assert all(state["lo"]), state
record = {
    "keras_extras": keras_extras.__version__,
    "keras": keras.__version__,
    "backend": keras.backend.backend(),
    "get_state": state,
    "result": float(metric.result()),
    "evaluate": model.evaluate(x, y, verbose=0, return_dict=True),
}
(out / "rmse_0.1.0.dev0_state.json").write_text(json.dumps(record, indent=1) + "\n")
print(record)
