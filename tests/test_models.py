"""CustomModel: its own step against keras.Model's, the classic step, the hooks, bad input."""

from __future__ import annotations

import math
import pickle
import types

import keras
import numpy as np
import pytest
from keras import ops

import keras_extras
import keras_extras.models
from tests.custom_models import (
    X_VAL,
    Y_VAL,
    X,
    Y,
    classic_subclass,
    classifier,
    compile_classifier,
    numpy_forward,
    twin,
)
from tests.harness import (
    OLD_KERAS_TORCH_JIT,
    assert_same_training,
    warnings_as_errors,
    weight_values,
)

# Sample weights far from uniform, and metrics that differ with and without them.
WEIGHTS = np.random.default_rng(5).uniform(0.0, 3.0, size=len(X)).astype("float32")
WEIGHTED_METRICS = {"weighted_metrics": ["accuracy"]}

# --- 1. The step itself --------------------------------------------------------------


def test_default_step_matches_keras_model_without_warnings():
    model = compile_classifier(classifier())
    reference = compile_classifier(twin(model))
    fit = dict(batch_size=64, epochs=2, shuffle=False, validation_data=(X_VAL, Y_VAL), verbose=0)
    with warnings_as_errors():
        history = model.fit(X, Y, **fit)
        model.evaluate(X_VAL, Y_VAL, verbose=0)
        model.predict(X_VAL, verbose=0)
    reference_history = reference.fit(X, Y, **fit)
    assert sorted(history.history) == ["accuracy", "loss", "val_accuracy", "val_loss"]
    assert_same_training(model, history, reference, reference_history)


def test_three_ways_to_build():
    functional = classifier()
    assert type(functional).__name__ == "CustomModel"
    assert isinstance(functional, keras_extras.CustomModel)
    # It is saved under CustomModel's name, which loads as CustomModel.
    name = keras.saving.get_registered_name(type(functional))
    assert name == "keras_extras>CustomModel"
    assert keras.saving.get_registered_object(name) is keras_extras.CustomModel
    unpickled = pickle.loads(pickle.dumps(functional))
    assert type(unpickled) is type(functional)
    np.testing.assert_allclose(
        unpickled.predict(X_VAL, verbose=0), functional.predict(X_VAL, verbose=0)
    )

    # After a functional CustomModel, a subclass with its own __init__ still
    # builds: Keras would have rewritten CustomModel's bases for good.
    # Two positional arguments, as a functional model has: still a subclass.
    class Net(keras_extras.CustomModel):
        def __init__(self, hidden, classes, **kwargs):
            super().__init__(**kwargs)
            self.hidden = keras.layers.Dense(hidden, activation="relu")
            self.out = keras.layers.Dense(classes, activation="softmax")

        def call(self, x):
            return self.out(self.hidden(x))

    keras.utils.set_random_seed(0)
    net = compile_classifier(Net(16, 10))
    reference = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    net(X[:1])
    reference.set_weights(net.get_weights())
    compile_classifier(reference)
    fit = dict(batch_size=64, epochs=2, shuffle=False, verbose=0)
    assert_same_training(net, net.fit(X, Y, **fit), reference, reference.fit(X, Y, **fit))
    assert keras_extras.CustomModel.__bases__ == (keras.Model,)


# --- 2. tf.keras-faithful compiled_loss and compiled_metrics --------------------------


CLASSIC_BACKENDS = pytest.mark.backends(
    "tensorflow", "torch", reason="the classic step needs GradientTape or backward(), JAX neither"
)


class WeightsAtEpochBegin(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.weights = []

    def on_epoch_begin(self, epoch, logs=None):
        self.weights.append(weight_values(self.model))


@CLASSIC_BACKENDS
def test_classic_step_reports_the_true_loss_epoch_by_epoch():
    # One full batch per epoch: each epoch's loss is the loss of the weights it
    # started with, which evaluate() reports for the same weights and data.
    model = compile_classifier(classifier(classic_subclass(), extras=False))
    recorder = WeightsAtEpochBegin()
    with warnings_as_errors():
        history = model.fit(X, Y, batch_size=len(X), epochs=4, callbacks=[recorder], verbose=0)
    losses = history.history["loss"]
    assert len(set(losses)) == 4  # it learns
    for epoch, weights in enumerate(recorder.weights):
        model.set_weights(weights)
        logs = model.evaluate(X, Y, batch_size=len(X), verbose=0, return_dict=True)
        assert math.isclose(losses[epoch], logs["loss"], rel_tol=1e-5), epoch
        assert math.isclose(history.history["accuracy"][epoch], logs["accuracy"], rel_tol=1e-6)


@CLASSIC_BACKENDS
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "sample_weight"])
def test_classic_step_trains_like_keras_model(weighted):
    """The classic step's `compiled_loss` and `compiled_metrics` give keras.Model's run.

    Batches of 50 leave a short last batch of 42, so a `compiled_loss` that
    records a batch with weight 1 (not its size) reports another epoch loss.
    With sample weights, it catches a `compiled_loss` that drops them (another
    loss and other gradients) and a `compiled_metrics.update_state` that drops
    them (`weighted_accuracy` equal to `accuracy`).
    """
    model = compile_classifier(classifier(classic_subclass(), extras=False), **WEIGHTED_METRICS)
    reference = compile_classifier(twin(model, extras=False), **WEIGHTED_METRICS)
    fit = dict(batch_size=50, epochs=2, shuffle=False, verbose=0)
    if weighted:
        fit["sample_weight"] = WEIGHTS
    history = model.fit(X, Y, **fit)
    assert_same_training(model, history, reference, reference.fit(X, Y, **fit))
    accuracy, weighted_accuracy = (history.history[k] for k in ("accuracy", "weighted_accuracy"))
    assert (accuracy != weighted_accuracy) == weighted


def test_compiled_loss_inside_the_loss_hook_is_counted_once():
    """A `compute_loss` that calls `compiled_loss` is recorded once, as what it returns.

    The hook returns the compiled loss plus 1, which changes no gradient: the
    run is keras.Model's, with every reported loss 1 higher. Catches a step
    that records `compiled_loss`'s own value too (the loss would be 0.5
    higher: the mean of both records).
    """

    class ViaCompiledLoss(keras_extras.CustomModel):
        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            return self.compiled_loss(y, y_pred, sample_weight) + 1.0

    model = compile_classifier(classifier(ViaCompiledLoss))
    reference = compile_classifier(twin(model))
    fit = dict(batch_size=50, epochs=2, shuffle=False, validation_data=(X_VAL, Y_VAL), verbose=0)
    history = model.fit(X, Y, **fit).history
    expected = reference.fit(X, Y, **fit).history
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(history.pop(key), np.add(expected.pop(key), 1.0), rtol=1e-5)
    assert_same_training(
        model,
        types.SimpleNamespace(history=history),
        reference,
        types.SimpleNamespace(history=expected),
    )


def test_compiled_loss_and_metrics_outside_a_step():
    """`compiled_loss` and `compiled_metrics.update_state` outside a step, against NumPy.

    Catches a `compiled_loss` that ignores `sample_weight` or
    `regularization_losses`, that records a batch with weight 1 rather than
    its size (two calls of 50 and 14 samples), and a
    `compiled_metrics.update_state` that ignores `sample_weight` or touches
    the loss.
    """
    model = compile_classifier(classifier(extras=False), **WEIGHTED_METRICS)
    model.fit(X[:64], Y[:64], batch_size=64, epochs=1, verbose=0)
    model.reset_metrics()
    weights = weight_values(model)
    l2 = 1e-3 * (weights[0].astype("float64") ** 2).sum()
    cross_entropy, correct, total = [], [], 0.0
    for part in (slice(0, 50), slice(50, 64)):
        y_pred = model(X[part])
        with warnings_as_errors():
            loss = model.compiled_loss(Y[part], y_pred, WEIGHTS[part])
            model.compiled_metrics.update_state(Y[part], y_pred, WEIGHTS[part])
        probs = ops.convert_to_numpy(y_pred).astype("float64")
        np.testing.assert_allclose(probs, numpy_forward(weights, X[part]), rtol=1e-4, atol=1e-6)
        cross_entropy.append(-np.log(probs[np.arange(len(probs)), Y[part]]))
        correct.append(probs.argmax(axis=1) == Y[part])
        # Keras's losses divide by the batch size, not by the sum of the weights.
        expected = (WEIGHTS[part] * cross_entropy[-1]).mean() + l2
        assert math.isclose(float(loss), expected, rel_tol=1e-5)
        total += len(probs) * expected
    cross_entropy, correct = np.concatenate(cross_entropy), np.concatenate(correct)
    results = model.get_metrics_result()
    # The tracker weighs each call by its batch size: 50 and 14 samples.
    assert math.isclose(float(results["loss"]), total / 64, rel_tol=1e-5)
    assert math.isclose(float(results["accuracy"]), correct.mean(), rel_tol=1e-6)
    weighted_accuracy = (WEIGHTS[:64] * correct).sum() / WEIGHTS[:64].sum()
    assert math.isclose(float(results["weighted_accuracy"]), weighted_accuracy, rel_tol=1e-6)
    assert abs(weighted_accuracy - correct.mean()) > 1e-3  # the weights matter here
    # Without regularisation losses: the cross-entropy alone.
    alone = model.compiled_loss(Y[50:64], model(X[50:64]), regularization_losses=[])
    assert math.isclose(float(alone), cross_entropy[50:].mean(), rel_tol=1e-5)


# --- 3. Hooks ---------------------------------------------------------------------------

NOISE = 0.05


class Hooked(keras_extras.CustomModel):
    """An autoencoder with every hook: the loss, the gradients and the logs.

    `free` is a trainable weight the loss does not use. Its gradient is replaced
    by noise, so it does a random walk that shows whether every step draws new
    noise; the other gradients are clipped and must match Keras's own clipping.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.free = self.add_weight(shape=(256,), initializer="zeros", name="free")
        self.noise = keras.random.SeedGenerator(7)
        self.prediction_size = keras.metrics.Mean(name="prediction_size")

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return super().compute_loss(x, x, y_pred, sample_weight, training)

    def transform_gradients(self, gradients, variables):
        used = [g for g, v in zip(gradients, variables, strict=True) if v is not self.free]
        norm = ops.sqrt(sum(ops.sum(ops.square(g)) for g in used))
        factor = ops.minimum(1.0, 0.1 / norm)
        return [
            keras.random.normal((256,), stddev=NOISE, seed=self.noise)
            if v is self.free
            else g * factor
            for g, v in zip(gradients, variables, strict=True)
        ]

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        self.prediction_size.update_state(ops.mean(ops.abs(y_pred), axis=-1))
        logs = super().compute_metrics(x, y, y_pred, sample_weight)
        logs["batch_samples"] = ops.cast(ops.shape(y_pred)[0], "float32")
        return logs


def prediction_size(y_true, y_pred):
    return ops.mean(ops.abs(y_pred), axis=-1)


def autoencoder(cls, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(64,))
    code = keras.layers.Dense(8, activation="relu")(inputs)
    return cls(inputs, keras.layers.Dense(64)(code))


def layer_weights(model):
    return [w for layer in model.layers for w in layer.get_weights()]


@pytest.mark.parametrize(
    "jit_compile", [False, pytest.param(True, marks=OLD_KERAS_TORCH_JIT)], ids=["eager", "jit"]
)
def test_hooks(jit_compile):
    model = autoencoder(Hooked)
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse", jit_compile=jit_compile)
    reference = autoencoder(keras.Model)
    reference.set_weights(layer_weights(model))
    reference.compile(
        optimizer=keras.optimizers.SGD(1.0, global_clipnorm=0.1),
        loss="mse",
        metrics=[prediction_size],
    )
    # Whole batches only: a batch of another size would recompile under torch.compile.
    x, x_val = X[:96], X_VAL[:32]
    fit = dict(batch_size=32, epochs=2, shuffle=False, verbose=0)
    # No targets anywhere: the loss hook takes them from x.
    history = model.fit(x, validation_data=(x_val,), **fit).history
    expected = reference.fit(x, x, validation_data=(x_val, x_val), **fit).history

    # A value added to the logs is reported as it is, not averaged.
    assert history.pop("batch_samples") == [32.0, 32.0]
    assert history.pop("val_batch_samples") == [32.0, 32.0]
    assert sorted(history) == sorted(expected)
    for key in expected:
        np.testing.assert_allclose(history[key], expected[key], rtol=1e-5, atol=1e-6, err_msg=key)
    for w, r in zip(layer_weights(model), reference.get_weights(), strict=True):
        np.testing.assert_allclose(w, r, rtol=1e-5, atol=1e-6)

    # 6 steps of independent N(0, NOISE^2) noise: the walk's variance is 6 NOISE^2.
    # Noise drawn once and repeated would give 36 NOISE^2.
    walk = ops.convert_to_numpy(model.free.value)
    assert 0.5 * 6 * NOISE**2 < walk.var() < 2 * 6 * NOISE**2


class GradientNormLogged(keras_extras.CustomModel):
    """Records in a metric the global gradient norm its gradient hook sees."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gradient_norm = keras.metrics.Mean(name="gradient_norm")

    def transform_gradients(self, gradients, variables):
        self.gradient_norm.update_state(ops.sqrt(sum(ops.sum(ops.square(g)) for g in gradients)))
        return gradients


@pytest.mark.parametrize("jit_compile", [False, "auto"], ids=["eager", "auto"])
def test_a_metric_updated_in_the_gradient_hook_logs_the_true_norm(jit_compile):
    """A metric updated in `transform_gradients` logs what it was given, on every backend.

    The reference is SGD on a linear model with the MSE loss, run in NumPy
    float64: each step's gradient norm in closed form, averaged over the
    epoch. Catches a JAX step that drops the metric updates made in the hook
    (it logs 0.0), one that updates the metric from the state before the hook,
    or a hook that sees other gradients than the optimizer applies.
    """
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(64,))
    model = GradientNormLogged(inputs, keras.layers.Dense(1)(inputs))
    learning_rate, batch = 0.05, 32
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate), loss="mse", jit_compile=jit_compile
    )
    target = (X @ np.linspace(-1.0, 1.0, 64) + 0.5).astype("float32")[:, None]
    kernel, bias = (np.asarray(w, dtype="float64") for w in model.get_weights())
    history = model.fit(X, target, batch_size=batch, epochs=2, shuffle=False, verbose=0).history

    expected = []
    for _ in range(2):
        norms = []
        for start in range(0, len(X), batch):
            xb = X[start : start + batch].astype("float64")
            residual = xb @ kernel + bias - target[start : start + batch]
            grad_kernel, grad_bias = 2 * xb.T @ residual / len(xb), 2 * residual.sum(0) / len(xb)
            norms.append(np.sqrt((grad_kernel**2).sum() + (grad_bias**2).sum()))
            kernel, bias = kernel - learning_rate * grad_kernel, bias - learning_rate * grad_bias
        expected.append(np.mean(norms))
    assert min(expected) > 0.1
    np.testing.assert_allclose(history["gradient_norm"], expected, rtol=1e-4)
    np.testing.assert_allclose(model.get_weights()[0], kernel, rtol=1e-4, atol=1e-5)


def test_loss_hook_trains_an_autoencoder_on_x_alone():
    class AutoEncoder(keras_extras.CustomModel):
        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            return super().compute_loss(x, x, y_pred, sample_weight, training)

    model = autoencoder(AutoEncoder)
    model.compile(optimizer="adam", loss="mse")
    reference = autoencoder(keras.Model)
    reference.compile(optimizer="adam", loss="mse")
    fit = dict(batch_size=32, epochs=2, shuffle=False, verbose=0)
    history = model.fit(X, **fit)
    assert history.history["loss"][1] < history.history["loss"][0]
    assert_same_training(model, history, reference, reference.fit(X, X, **fit))
    loss, expected = model.evaluate(X, verbose=0), reference.evaluate(X, X, verbose=0)
    assert math.isclose(loss, expected, rel_tol=1e-5)


def test_transform_gradients_must_return_one_gradient_per_variable():
    class Dropping(keras_extras.CustomModel):
        def transform_gradients(self, gradients, variables):
            return gradients[:-1]

    model = compile_classifier(classifier(Dropping, extras=False))
    with pytest.raises(ValueError, match=r"one gradient per trainable variable \(4\).*returned 3"):
        model.fit(X[:32], Y[:32], verbose=0)


# --- 5. Bad input -------------------------------------------------------------------------


def test_fit_before_compile_raises():
    model = classifier()
    with pytest.raises(ValueError, match=r"compile\(\)"):
        model.fit(X, Y, verbose=0)


@pytest.mark.parametrize("call", ["fit", "evaluate"])
def test_missing_target_raises(call):
    model = compile_classifier(classifier())
    with pytest.raises(ValueError, match=r"compiled with .*targets.*y is None"):
        getattr(model, call)(X, verbose=0)


def test_no_loss_at_all_raises():
    inputs = keras.Input(shape=(64,))
    model = keras_extras.CustomModel(inputs, keras.layers.Dense(10)(inputs))
    model.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="no loss to compute"):
        model.fit(X, Y, verbose=0)


def test_nan_loss_shows_in_logs_and_stops_with_terminate_on_nan():
    inputs = keras.Input(shape=(64,))
    model = keras_extras.CustomModel(inputs, keras.layers.Dense(1)(inputs))
    model.compile(optimizer="sgd", loss="mse")
    y = X.sum(axis=1, keepdims=True)
    y[40] = np.nan  # in the second batch of 32
    seen = []
    callback = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: seen.append(logs["loss"])
    )
    history = model.fit(
        X,
        y,
        batch_size=32,
        epochs=3,
        shuffle=False,
        verbose=0,
        callbacks=[callback, keras.callbacks.TerminateOnNaN()],
    )
    assert len(seen) == 2 and math.isfinite(seen[0]) and math.isnan(seen[1])
    assert model.stop_training
    assert len(history.history["loss"]) == 1 and math.isnan(history.history["loss"][0])
