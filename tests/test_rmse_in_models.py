"""RMSE inside compiled multi-output models, checked against NumPy float64."""

from __future__ import annotations

import keras
import numpy as np

import keras_extras


def test_rmse_on_a_dense_and_a_sparse_head():
    # Two RMSE heads, dense targets first: on torch the sparse head once failed in
    # Keras's "meta"-device build, after the dense head had written meta state.
    rng = np.random.default_rng(0)
    x = rng.random((96, 8)).astype("float32")
    priority = rng.random((96, 1)).astype("float32")
    labels = rng.integers(0, 3, 96)
    inputs = keras.Input((8,))
    outputs = [
        keras.layers.Dense(1, activation="sigmoid", name="p")(inputs),
        keras.layers.Dense(3, activation="softmax", name="d")(inputs),
    ]
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.0),  # weights stay put
        loss=["mse", "sparse_categorical_crossentropy"],
        metrics=[[keras_extras.RMSE()], [keras_extras.RMSE()]],
    )
    logs = model.fit(x, [priority, labels], batch_size=32, epochs=1, verbose=0).history
    p_pred, d_pred = (a.astype("float64") for a in model.predict(x, verbose=0))
    np.testing.assert_allclose(
        logs["p_rmse"][0], np.sqrt(np.mean((p_pred - priority) ** 2)), rtol=1e-5
    )
    np.testing.assert_allclose(
        logs["d_rmse"][0], np.sqrt(np.mean((d_pred - np.eye(3)[labels]) ** 2)), rtol=1e-5
    )
