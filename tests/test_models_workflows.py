"""CustomModel in the workflows around the step: weights, multi-IO, callbacks, saving, scale."""

from __future__ import annotations

import json
import math

import keras
import numpy as np
import pytest

import keras_extras
from tests.custom_models import (
    X_VAL,
    Y_VAL,
    X,
    Y,
    classifier,
    compile_classifier,
    numpy_forward,
    twin,
)
from tests.harness import assert_same_training, run_in_fresh_process, weight_values

FIT = dict(batch_size=64, epochs=2, shuffle=False, verbose=0)


@pytest.mark.parametrize("weighting", ["sample_weight", "class_weight"])
def test_sample_and_class_weights_match_keras_model(weighting):
    model = classifier(extras=False)
    reference = twin(model, extras=False)
    for m in (model, reference):
        m.compile(
            optimizer=keras.optimizers.Adam(1e-2),
            loss="sparse_categorical_crossentropy",
            weighted_metrics=["accuracy"],
        )
    if weighting == "sample_weight":
        kwargs = {"sample_weight": np.linspace(0.0, 2.0, len(X)).astype("float32")}
    else:
        kwargs = {"class_weight": {c: 1.0 + c / 3 for c in range(10)}}
    history = model.fit(X, Y, **kwargs, **FIT)
    assert_same_training(model, history, reference, reference.fit(X, Y, **kwargs, **FIT))


# --- The ticket-routing model: three inputs, two outputs ------------------------------------

TITLE_WORDS, BODY_WORDS, TAGS, DEPARTMENTS = 40, 60, 8, 4


def ticket_data(n, seed):
    rng = np.random.default_rng(seed)
    x = {
        "title": (rng.random((n, TITLE_WORDS)) < 0.1).astype("float32"),
        "text_body": (rng.random((n, BODY_WORDS)) < 0.1).astype("float32"),
        "tags": (rng.random((n, TAGS)) < 0.3).astype("float32"),
    }
    y = {
        "priority": rng.random((n, 1)).astype("float32"),
        "department": rng.integers(0, DEPARTMENTS, size=n).astype("int32"),
    }
    return x, y


def ticket_model(cls, structure, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = {
        "title": keras.Input(shape=(TITLE_WORDS,), name="title"),
        "text_body": keras.Input(shape=(BODY_WORDS,), name="text_body"),
        "tags": keras.Input(shape=(TAGS,), name="tags"),
    }
    features = keras.layers.Concatenate()(list(inputs.values()))
    features = keras.layers.Dense(16, activation="relu")(features)
    priority = keras.layers.Dense(1, activation="sigmoid", name="priority")(features)
    department = keras.layers.Dense(DEPARTMENTS, activation="softmax", name="department")(features)
    if structure == "dict":
        return cls(inputs, {"priority": priority, "department": department})
    return cls(list(inputs.values()), [priority, department])


def compile_ticket_model(model, structure):
    loss = {"priority": "mean_squared_error", "department": "sparse_categorical_crossentropy"}
    weights = {"priority": 1.0, "department": 0.5}
    metrics = {"priority": ["mean_absolute_error"], "department": ["accuracy"]}
    if structure == "list":
        loss, weights, metrics = (list(d.values()) for d in (loss, weights, metrics))
    model.compile(optimizer="adam", loss=loss, loss_weights=weights, metrics=metrics)


@pytest.mark.parametrize("structure", ["dict", "list"])
def test_ticket_model_with_several_inputs_and_outputs(structure):
    (x, y), (x_val, y_val) = ticket_data(128, seed=1), ticket_data(64, seed=2)
    if structure == "list":
        x, y, x_val, y_val = (list(d.values()) for d in (x, y, x_val, y_val))
    model = ticket_model(keras_extras.CustomModel, structure)
    reference = ticket_model(keras.Model, structure)
    for m in (model, reference):
        compile_ticket_model(m, structure)
    fit = dict(FIT, validation_data=(x_val, y_val))
    history = model.fit(x, y, **fit)
    assert {"priority_loss", "department_loss", "val_department_accuracy"} <= set(history.history)
    assert_same_training(model, history, reference, reference.fit(x, y, **fit))
    logs = model.evaluate(x_val, y_val, verbose=0, return_dict=True)
    assert math.isclose(
        logs["loss"], logs["priority_loss"] + 0.5 * logs["department_loss"], rel_tol=1e-5
    )


# --- Validation, evaluate and predict against NumPy -----------------------------------------


def test_validation_evaluate_and_predict_against_numpy():
    model = compile_classifier(classifier(extras=False))
    history = model.fit(X, Y, validation_data=(X_VAL, Y_VAL), **FIT)
    weights = weight_values(model)
    probs = numpy_forward(weights, X_VAL.astype("float64"))
    np.testing.assert_allclose(model.predict(X_VAL, verbose=0), probs, rtol=1e-4, atol=1e-6)

    cross_entropy = -np.log(probs[np.arange(len(Y_VAL)), Y_VAL]).mean()
    l2 = 1e-3 * (weights[0].astype("float64") ** 2).sum()
    accuracy = (probs.argmax(axis=1) == Y_VAL).mean()
    logs = model.evaluate(X_VAL, Y_VAL, batch_size=16, verbose=0, return_dict=True)
    assert math.isclose(logs["loss"], cross_entropy + l2, rel_tol=1e-5)
    assert math.isclose(logs["accuracy"], accuracy, rel_tol=1e-6)
    # The last epoch's validation ran on these same weights.
    assert math.isclose(history.history["val_loss"][-1], logs["loss"], rel_tol=1e-5)
    assert math.isclose(history.history["val_accuracy"][-1], accuracy, rel_tol=1e-6)


def weighted_cross_entropy(model, x, y, sample_weight=None):
    """Keras's loss in float64: sum(w * cross-entropy) / samples + the L2 penalty.

    Keras's losses divide by the batch size, not by the sum of the weights,
    and the loss tracker weighs each batch by its size; so the mean over any
    batching is the mean over all the samples.
    """
    weights = weight_values(model)
    probs = numpy_forward(weights, x)
    per_sample = -np.log(probs[np.arange(len(y)), y])
    if sample_weight is not None:
        per_sample = per_sample * sample_weight
    return per_sample, 1e-3 * (weights[0].astype("float64") ** 2).sum(), probs


def test_sample_weights_in_evaluate_and_validation_against_numpy_and_keras_model():
    """`evaluate(..., sample_weight=w)` and `validation_data=(x, y, w)` weigh by `w`.

    Batches of 50 leave a short one of 14. Catches a test step that drops the
    weights (the unweighted loss, more than 10% off here), that divides by the
    sum of the weights, or that drops them for the weighted metrics.
    """
    w_val = np.random.default_rng(6).uniform(0.0, 3.0, size=len(X_VAL)).astype("float32")
    model = compile_classifier(classifier(extras=False), weighted_metrics=["accuracy"])
    history = model.fit(
        X,
        Y,
        batch_size=50,
        epochs=2,
        shuffle=False,
        validation_data=(X_VAL, Y_VAL, w_val),
        verbose=0,
    ).history
    per_sample, l2, probs = weighted_cross_entropy(model, X_VAL, Y_VAL, w_val)
    expected_loss = per_sample.mean() + l2
    correct = probs.argmax(axis=1) == Y_VAL
    expected = {
        "loss": expected_loss,
        "accuracy": correct.mean(),
        "weighted_accuracy": (w_val * correct).sum() / w_val.sum(),
    }
    unweighted = weighted_cross_entropy(model, X_VAL, Y_VAL)[0].mean() + l2
    assert abs(unweighted - expected_loss) > 0.1 * expected_loss
    assert abs(expected["weighted_accuracy"] - expected["accuracy"]) > 1e-4

    reference = compile_classifier(twin(model, extras=False), weighted_metrics=["accuracy"])
    evaluate = dict(
        x=X_VAL, y=Y_VAL, sample_weight=w_val, batch_size=50, verbose=0, return_dict=True
    )
    logs, keras_logs = model.evaluate(**evaluate), reference.evaluate(**evaluate)
    for name, value in expected.items():
        assert math.isclose(logs[name], value, rel_tol=1e-5), name
        assert math.isclose(keras_logs[name], value, rel_tol=1e-5), name
        # The last epoch's validation ran on the same weights.
        assert math.isclose(history[f"val_{name}"][-1], value, rel_tol=1e-5), name


def test_short_last_batch_weighs_by_its_size_in_history_evaluate_and_loss_history():
    """The loss of a short last batch counts by its sample count, against NumPy.

    192 samples in batches of 50: three of 50 and one of 42, which the model
    was not trained on, so its loss is higher. With a learning rate of 0
    every batch's loss is known in float64. Catches a loss tracker that
    weighs batches equally (the epoch loss is then the mean of the four batch
    losses) in `fit`, in `evaluate` or in `LossHistory`'s epoch table.
    """
    model = compile_classifier(classifier(extras=False))
    model.fit(X[:150], Y[:150], batch_size=50, epochs=10, verbose=0)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="sparse_categorical_crossentropy")
    recorder = keras_extras.LossHistory()
    history = model.fit(
        X, Y, batch_size=50, epochs=2, shuffle=False, callbacks=[recorder], verbose=0
    ).history
    per_sample, l2, _ = weighted_cross_entropy(model, X, Y)
    batches = np.array([per_sample[i : i + 50].mean() + l2 for i in range(0, len(X), 50)])
    expected = per_sample.mean() + l2
    # Equal weights would be this far off, 100 times the tolerance below.
    assert abs(batches.mean() - expected) > 100 * 1e-5 * expected

    np.testing.assert_allclose(history["loss"], [expected] * 2, rtol=1e-5)
    logs = model.evaluate(X, Y, batch_size=50, verbose=0, return_dict=True)
    assert math.isclose(logs["loss"], expected, rel_tol=1e-5)
    np.testing.assert_allclose(recorder.epochs["loss"], [expected] * 2, rtol=1e-5)
    np.testing.assert_allclose(recorder.running["loss"][3::4], [expected] * 2, rtol=1e-5)
    for epoch in (0, 1):
        recorded = recorder.batches["loss"][4 * epoch : 4 * epoch + 4]
        np.testing.assert_allclose(recorded[:3], batches[:3], rtol=1e-4)
        # The documented value of a short last batch: S = 4 steps, b = 42, B = 50.
        before = batches[:3].mean()
        documented = before + (batches[3] - before) * 4 * 42 / (3 * 50 + 42)
        np.testing.assert_allclose(recorded[3], documented, rtol=1e-4)


def test_rmse_metric_in_the_step():
    def linear(cls):
        keras.utils.set_random_seed(0)
        inputs = keras.Input(shape=(64,))
        return cls(inputs, keras.layers.Dense(1)(inputs))

    model, reference = linear(keras_extras.CustomModel), linear(keras.Model)
    model.compile(optimizer="sgd", loss="mse", metrics=[keras_extras.RMSE()])
    reference.compile(optimizer="sgd", loss="mse", metrics=[keras.metrics.RootMeanSquaredError()])
    target = (X @ np.linspace(-1.0, 1.0, 64)).astype("float32")[:, None]
    history = model.fit(X, target, **FIT).history
    expected = reference.fit(X, target, **FIT).history
    np.testing.assert_allclose(history["rmse"], expected["root_mean_squared_error"], rtol=1e-5)
    prediction = model.predict(X, verbose=0).astype("float64")
    rmse = np.sqrt(((prediction - target) ** 2).mean())
    logs = model.evaluate(X, target, batch_size=50, verbose=0, return_dict=True)
    assert math.isclose(logs["rmse"], rmse, rel_tol=1e-5)


# --- Callbacks ------------------------------------------------------------------------------


def test_early_stopping_and_model_checkpoint(tmp_path):
    model = compile_classifier(classifier(extras=False))
    path = tmp_path / "best.keras"
    history = model.fit(
        X,
        Y,
        validation_data=(X_VAL, Y_VAL),
        batch_size=64,
        epochs=5,
        verbose=0,
        callbacks=[
            # Nothing improves by 10: it stops after the second epoch.
            keras.callbacks.EarlyStopping(monitor="val_loss", min_delta=10.0, patience=1),
            keras.callbacks.ModelCheckpoint(path, monitor="val_loss", save_best_only=True),
        ],
    ).history
    assert len(history["loss"]) == 2
    best = keras.saving.load_model(path)
    assert isinstance(best, keras_extras.CustomModel)
    logs = best.evaluate(X_VAL, Y_VAL, verbose=0, return_dict=True)
    assert math.isclose(logs["loss"], min(history["val_loss"]), rel_tol=1e-5)


@pytest.mark.backends(
    "tensorflow", "jax", reason="Keras's torch trainer runs one step per execution only"
)
def test_steps_per_execution_matches_keras_model():
    model = compile_classifier(classifier(extras=False), steps_per_execution=3)
    reference = compile_classifier(twin(model, extras=False), steps_per_execution=3)
    calls = []
    counter = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: calls.append(b))
    history = model.fit(X, Y, callbacks=[counter], **dict(FIT, batch_size=32))
    assert len(calls) == 2 * 2  # 6 batches an epoch, 3 per execution
    assert_same_training(model, history, reference, reference.fit(X, Y, **dict(FIT, batch_size=32)))


# --- Mixed precision ----------------------------------------------------------------------------


class GradientNorm(keras_extras.CustomModel):
    """Records the global gradient norm that `transform_gradients` sees."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gradient_norm = keras.metrics.Mean(name="gradient_norm")

    def transform_gradients(self, gradients, variables):
        squares = [keras.ops.sum(keras.ops.square(g)) for g in gradients]
        self.gradient_norm.update_state(keras.ops.sqrt(sum(squares)))
        return gradients


def test_mixed_precision_with_loss_scaling():
    float32_model = compile_classifier(classifier(GradientNorm, extras=False))
    float32_history = float32_model.fit(X, Y, **FIT).history
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        model = compile_classifier(classifier(GradientNorm, extras=False))
        reference = compile_classifier(twin(model, extras=False))
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    history = model.fit(X, Y, **FIT)
    norms = history.history.pop("gradient_norm")
    assert_same_training(model, history, reference, reference.fit(X, Y, **FIT))
    # The hook saw the gradients of the true loss, not of the loss times 2**15.
    np.testing.assert_allclose(norms, float32_history["gradient_norm"], rtol=0.05)
    assert int(model.optimizer.iterations.value) == 6


# --- Saving and resuming in a fresh process --------------------------------------------------


def test_keras_file_resumes_training_in_a_fresh_process(tmp_path):
    # No Dropout: Keras does not save a seed generator's state in .keras files, so
    # a resumed run draws other masks (with keras.Model too).
    model = compile_classifier(classifier(dropout=False))
    uninterrupted = compile_classifier(twin(model, cls=keras_extras.CustomModel, dropout=False))
    model.fit(X, Y, **FIT)
    path, data, out = tmp_path / "model.keras", tmp_path / "data.npz", tmp_path / "weights.npz"
    model.save(path)
    np.savez(data, x=X, y=Y)
    stdout = run_in_fresh_process(
        f"""
        import json
        import keras
        import numpy as np
        import keras_extras

        data = np.load({str(data)!r})
        model = keras.saving.load_model({str(path)!r})
        assert type(model).__name__ == "CustomModel", type(model)
        assert isinstance(model, keras_extras.CustomModel)
        compile_config = model.get_compile_config()
        iterations = int(model.optimizer.iterations.value)
        history = model.fit(
            data["x"], data["y"], batch_size=64, epochs=4, initial_epoch=2,
            shuffle=False, verbose=0,
        )
        np.savez({str(out)!r}, *model.get_weights())
        print(json.dumps({{
            "compile_config": compile_config,
            "iterations": iterations,
            "history": history.history,
        }}))
        """
    )
    resumed = json.loads(stdout.strip().splitlines()[-1])
    assert resumed["compile_config"] == json.loads(json.dumps(model.get_compile_config()))
    assert resumed["iterations"] == 6
    expected = uninterrupted.fit(X, Y, **dict(FIT, epochs=4)).history
    for key, values in expected.items():
        np.testing.assert_allclose(resumed["history"][key], values[2:], rtol=1e-5, err_msg=key)
    weights = np.load(out)
    final = weight_values(uninterrupted)
    assert len(weights.files) == len(final)
    for i, w in enumerate(final):
        np.testing.assert_allclose(weights[f"arr_{i}"], w, rtol=1e-5, atol=1e-6)


# --- tf.distribute ------------------------------------------------------------------------------

MIRRORED = """
import json
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)
import keras
import numpy as np
import keras_extras
from tests.custom_models import X as x, X_VAL as x_val, Y as y, Y_VAL as y_val, classic_subclass


def run(strategy, cls, initial):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        inputs = keras.Input(shape=(64,))
        hidden = keras.layers.Dense(
            16, activation="relu", kernel_regularizer=keras.regularizers.L2(1e-2)
        )(inputs)
        model = cls(inputs, keras.layers.Dense(10, activation="softmax")(hidden))
        if initial is not None:
            model.set_weights(initial)
        initial = model.get_weights()
        model.compile(
            optimizer=keras.optimizers.SGD(0.5),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy", keras_extras.RMSE()],
        )
    # Short last batches (192 = 80 + 80 + 32, 64 = 48 + 16): each batch's loss counts
    # by its size.
    history = model.fit(
        x, y, batch_size=80, epochs=2, validation_data=(x_val, y_val), validation_batch_size=48,
        shuffle=False, verbose=0,
    )
    evaluation = model.evaluate(x_val, y_val, batch_size=48, verbose=0, return_dict=True)
    return initial, {"history": history.history, "evaluate": evaluation,
                     "replicas": strategy.num_replicas_in_sync}


mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
results = {}
initial = None  # keras.Model's initial weights, given to every model after it
for name, cls in [
    ("keras", keras.Model),
    ("default", keras_extras.CustomModel),
    ("classic", classic_subclass()),
]:
    initial, results[name + "_single"] = run(tf.distribute.get_strategy(), cls, initial)
    _, results[name + "_mirrored"] = run(mirrored, cls, initial)
print(json.dumps(results))
"""


@pytest.mark.backends("tensorflow", reason="tf.distribute exists on the TensorFlow backend only")
def test_mirrored_strategy_reports_the_single_device_loss():
    """Against keras.Model's run on one device, from the same weights. Catches a loss
    reported per replica (halved), or summed over the replicas (doubled), in either
    CustomModel step, and a regularisation loss counted once per replica."""
    # A fresh process: logical devices must be set before TensorFlow starts.
    results = json.loads(run_in_fresh_process(MIRRORED).strip().splitlines()[-1])
    reference = results["keras_single"]
    assert sorted(reference["history"]) == sorted(
        ["loss", "accuracy", "rmse", "val_loss", "val_accuracy", "val_rmse"]
    )
    for model in ("keras", "default", "classic"):
        single, mirrored = results[model + "_single"], results[model + "_mirrored"]
        assert (single["replicas"], mirrored["replicas"]) == (1, 2)
        for run in (single, mirrored):
            assert sorted(run["history"]) == sorted(reference["history"])
            for key in reference["history"]:
                np.testing.assert_allclose(
                    run["history"][key], reference["history"][key], rtol=1e-5, err_msg=key
                )
            for key, value in reference["evaluate"].items():
                assert math.isclose(run["evaluate"][key], value, rel_tol=1e-5), key
