"""CustomModel against the "customizing what happens in fit()" patterns of Keras's guides.

Each pattern is written here once per backend, in the form that backend's guide uses, as
a class factory over its base class. It runs with `keras.Model` and with
`keras_extras.CustomModel` as the base, from the same seed, and both runs must agree:
every History series and every weight to 1e-5. Where `keras.Model` cannot run a pattern,
the test says so and checks CustomModel against values computed here.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import keras_extras
from tests.custom_models import X as DIGITS
from tests.custom_models import Y as LABELS
from tests.custom_models import classic_subclass, classifier, compile_classifier
from tests.harness import BACKEND, assert_same_training, warnings_as_errors, weight_values

rng = np.random.default_rng(7)
X = rng.normal(size=(96, 6)).astype("float32")
Y = (X @ rng.normal(size=(6, 1)) + 0.1 * rng.normal(size=(96, 1))).astype("float32")
SW = rng.uniform(0.1, 2.0, size=(96,)).astype("float32")
X_VAL, Y_VAL = X[:32] * 0.5, Y[:32] * 0.5
FIT = dict(batch_size=16, epochs=3, shuffle=False, verbose=0)


def regressor(cls, seed=0):
    """A small regression net with the parts a hand-written step must get right.

    The kernel regulariser adds a loss that `compute_loss` must include, and batch
    normalisation has non-trainable state that the step must carry forward.
    """
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(6,))
    h = keras.layers.Dense(8, activation="relu", kernel_regularizer=keras.regularizers.L2(1e-2))(
        inputs
    )
    h = keras.layers.BatchNormalization()(h)
    return cls(inputs, keras.layers.Dense(1)(h))


def both(make, run):
    """Runs `run(model_class)` with each base; returns {base: result}."""
    return {base: run(make(base)) for base in (keras.Model, keras_extras.CustomModel)}


def assert_same(runs):
    (model, history), (reference, reference_history) = (
        runs[keras_extras.CustomModel],
        runs[keras.Model],
    )
    assert_same_training(model, history, reference, reference_history)


def update_metrics(model, loss, y, y_pred, sample_weight=None):
    """The guides' metric loop: the loss tracker gets the loss, the others the data."""
    for metric in model.metrics:
        if metric.name == "loss":
            metric.update_state(loss)
        else:
            metric.update_state(y, y_pred, sample_weight=sample_weight)
    return {m.name: m.result() for m in model.metrics}


def stateless_metrics(model, metrics_variables, loss, y, y_pred, sample_weight=None):
    """The JAX guide's form of the same loop: `(logs, new metric variables)`."""
    logs, new_metrics_variables = {}, []
    for metric in model.metrics:
        start = len(new_metrics_variables)
        variables = metrics_variables[start : start + len(metric.variables)]
        if metric.name == "loss":
            variables = metric.stateless_update_state(variables, loss)
        else:
            variables = metric.stateless_update_state(
                variables, y, y_pred, sample_weight=sample_weight
            )
        logs[metric.name] = metric.stateless_result(variables)
        new_metrics_variables += variables
    return logs, new_metrics_variables


def stateless_loss(
    model, trainable, non_trainable, metrics_variables, x, y, sample_weight, training
):
    """The JAX guide's forward pass and compiled loss: `(loss, (y_pred, non_trainable))`."""
    y_pred, non_trainable = model.stateless_call(trainable, non_trainable, x, training=training)
    loss, (_, non_trainable, _) = model.stateless_compute_loss(
        trainable,
        non_trainable,
        metrics_variables,
        x=x,
        y=y,
        y_pred=y_pred,
        sample_weight=sample_weight,
        training=training,
    )
    return loss, (y_pred, non_trainable)


# --- 1. An overridden train_step, as each backend's guide writes it ----------------------


def guide_step(base):
    """The guide's step: compute_loss, gradients, every metric by hand; sample weights."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        class Stepped(base):
            def train_step(self, data):
                x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
                with tf.GradientTape() as tape:
                    y_pred = self(x, training=True)
                    loss = self.compute_loss(y=y, y_pred=y_pred, sample_weight=sample_weight)
                gradients = tape.gradient(loss, self.trainable_variables)
                self.optimizer.apply(gradients, self.trainable_variables)
                return update_metrics(self, loss, y, y_pred, sample_weight)

    elif BACKEND == "torch":
        import torch

        class Stepped(base):
            def train_step(self, data):
                x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
                self.zero_grad()
                y_pred = self(x, training=True)
                loss = self.compute_loss(y=y, y_pred=y_pred, sample_weight=sample_weight)
                loss.backward()
                weights = list(self.trainable_weights)
                with torch.no_grad():
                    self.optimizer.apply([w.value.grad for w in weights], weights)
                return update_metrics(self, loss, y, y_pred, sample_weight)

    else:
        import jax

        class Stepped(base):
            def compute_loss_and_updates(
                self, trainable, non_trainable, metrics_variables, x, y, sample_weight, training
            ):
                return stateless_loss(
                    self, trainable, non_trainable, metrics_variables, x, y, sample_weight, training
                )

            def train_step(self, state, data):
                trainable, non_trainable, optimizer_variables, metrics_variables = state
                x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
                grad_fn = jax.value_and_grad(self.compute_loss_and_updates, has_aux=True)
                (loss, (y_pred, non_trainable)), gradients = grad_fn(
                    trainable, non_trainable, metrics_variables, x, y, sample_weight, True
                )
                trainable, optimizer_variables = self.optimizer.stateless_apply(
                    optimizer_variables, gradients, trainable
                )
                logs, metrics_variables = stateless_metrics(
                    self, metrics_variables, loss, y, y_pred, sample_weight
                )
                return logs, (trainable, non_trainable, optimizer_variables, metrics_variables)

    return Stepped


def true_loss(model, x, y):
    """The loss `regressor` minimises, in NumPy float64: MSE plus the L2 penalty."""
    y_pred = model.predict(x, verbose=0).astype("float64")
    kernel = np.asarray(weight_values(model)[0], dtype="float64")
    return np.mean((y_pred - y) ** 2) + 1e-2 * np.sum(kernel**2)


@pytest.mark.parametrize("run_eagerly", [False, True], ids=["compiled", "eager"])
def test_overridden_train_step_trains_as_on_keras_model(run_eagerly):
    def run(cls):
        model = regressor(cls)
        model.compile(
            optimizer=keras.optimizers.Adam(1e-2),
            loss="mse",
            metrics=["mae"],
            run_eagerly=run_eagerly,
        )
        return model, model.fit(X, Y, **FIT)

    runs = both(guide_step, run)
    assert sorted(runs[keras_extras.CustomModel][1].history) == ["loss", "mae"]
    assert_same(runs)


def test_overridden_train_step_with_the_default_validation_step():
    # Validation runs the base class's own test step between the custom train steps.
    # On JAX, keras.Model's test step calls `compute_loss_and_updates`, which the guide's
    # step overrides with a shorter return value, so there only CustomModel can run it.
    model = regressor(guide_step(keras_extras.CustomModel))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse", metrics=["mae"])
    history = model.fit(X, Y, validation_data=(X_VAL, Y_VAL), **dict(FIT, epochs=1))
    np.testing.assert_allclose(
        history.history["val_loss"], [true_loss(model, X_VAL, Y_VAL)], rtol=1e-5
    )
    reference = regressor(guide_step(keras.Model))
    reference.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse", metrics=["mae"])
    if BACKEND == "jax":
        with pytest.raises(ValueError, match="not enough values to unpack"):
            reference.fit(X, Y, validation_data=(X_VAL, Y_VAL), **dict(FIT, epochs=1))
    else:
        assert_same_training(
            model,
            history,
            reference,
            reference.fit(X, Y, validation_data=(X_VAL, Y_VAL), **dict(FIT, epochs=1)),
        )


# --- 2. Sample weights, own metrics and a custom test step -------------------------------


def weighted_step(base):
    """The guide's lower-level step: its own loss function and metrics, sample weights.

    On JAX the stateless helper is named `compute_loss_and_updates`, as in the guide, but
    with the user's own signature: the name of a `keras.Model` method it shadows.
    """

    class Weighted(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.loss_tracker = keras.metrics.Mean(name="loss")
            self.mae_metric = keras.metrics.MeanAbsoluteError(name="mae")
            self.loss_fn = keras.losses.MeanSquaredError()

        @property
        def metrics(self):
            return [self.loss_tracker, self.mae_metric]

    if BACKEND == "tensorflow":
        import tensorflow as tf

        class Stepped(Weighted):
            def train_step(self, data):
                x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
                with tf.GradientTape() as tape:
                    y_pred = self(x, training=True)
                    loss = self.loss_fn(y, y_pred, sample_weight=sample_weight)
                gradients = tape.gradient(loss, self.trainable_variables)
                self.optimizer.apply(gradients, self.trainable_variables)
                self.loss_tracker.update_state(loss)
                self.mae_metric.update_state(y, y_pred, sample_weight=sample_weight)
                return {m.name: m.result() for m in self.metrics}

    elif BACKEND == "torch":
        import torch

        class Stepped(Weighted):
            def train_step(self, data):
                x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
                self.zero_grad()
                y_pred = self(x, training=True)
                loss = self.loss_fn(y, y_pred, sample_weight=sample_weight)
                loss.backward()
                weights = list(self.trainable_weights)
                with torch.no_grad():
                    self.optimizer.apply([w.value.grad for w in weights], weights)
                self.loss_tracker.update_state(loss)
                self.mae_metric.update_state(y, y_pred, sample_weight=sample_weight)
                return {m.name: m.result() for m in self.metrics}

    else:
        import jax

        class Stepped(Weighted):
            def compute_loss_and_updates(
                self, trainable, non_trainable, x, y, sample_weight, training=False
            ):
                y_pred, non_trainable = self.stateless_call(
                    trainable, non_trainable, x, training=training
                )
                loss = self.loss_fn(y, y_pred, sample_weight=sample_weight)
                return loss, (y_pred, non_trainable)

            def train_step(self, state, data):
                trainable, non_trainable, optimizer_variables, metrics_variables = state
                x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
                grad_fn = jax.value_and_grad(self.compute_loss_and_updates, has_aux=True)
                (loss, (y_pred, non_trainable)), gradients = grad_fn(
                    trainable, non_trainable, x, y, sample_weight, training=True
                )
                trainable, optimizer_variables = self.optimizer.stateless_apply(
                    optimizer_variables, gradients, trainable
                )
                split = len(self.loss_tracker.variables)
                loss_variables = self.loss_tracker.stateless_update_state(
                    metrics_variables[:split], loss
                )
                mae_variables = self.mae_metric.stateless_update_state(
                    metrics_variables[split:], y, y_pred, sample_weight=sample_weight
                )
                logs = {
                    "loss": self.loss_tracker.stateless_result(loss_variables),
                    "mae": self.mae_metric.stateless_result(mae_variables),
                }
                state = (
                    trainable,
                    non_trainable,
                    optimizer_variables,
                    loss_variables + mae_variables,
                )
                return logs, state

    return Stepped


def test_sample_weights_in_a_lower_level_step():
    def run(cls):
        model = regressor(cls)
        model.compile(optimizer=keras.optimizers.Adam(1e-2))
        return model, model.fit(X, Y, sample_weight=SW, **FIT)

    runs = both(weighted_step, run)
    assert sorted(runs[keras_extras.CustomModel][1].history) == ["loss", "mae"]
    assert_same(runs)
    # The weights reach the step: an unweighted run ends elsewhere.
    unweighted = regressor(weighted_step(keras_extras.CustomModel))
    unweighted.compile(optimizer=keras.optimizers.Adam(1e-2))
    unweighted.fit(X, Y, **FIT)
    model = runs[keras_extras.CustomModel][0]
    assert not np.allclose(weight_values(unweighted)[0], weight_values(model)[0], atol=1e-3)


def test_sample_weights_through_compute_loss():
    def run(cls):
        model = regressor(cls)
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse", weighted_metrics=["mae"])
        return model, model.fit(X, Y, sample_weight=SW, **FIT)

    assert_same(both(guide_step, run))


def guide_test_step(base):
    """The guide's custom evaluation step: compute_loss and every metric by hand."""
    if BACKEND == "jax":

        class Evaluated(base):
            def test_step(self, state, data):
                x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
                trainable, non_trainable, metrics_variables = state
                loss, (y_pred, non_trainable) = stateless_loss(
                    self, trainable, non_trainable, metrics_variables, x, y, sample_weight, False
                )
                logs, metrics_variables = stateless_metrics(
                    self, metrics_variables, loss, y, y_pred
                )
                return logs, (trainable, non_trainable, metrics_variables)

        return Evaluated

    class Evaluated(base):
        def test_step(self, data):
            x, y = data
            y_pred = self(x, training=False)
            loss = self.compute_loss(y=y, y_pred=y_pred)
            return update_metrics(self, loss, y, y_pred)

    return Evaluated


def test_custom_test_step_in_fit_and_evaluate():
    def run(cls):
        model = regressor(cls)
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse", metrics=["mae"])
        history = model.fit(X, Y, validation_data=(X_VAL, Y_VAL), **FIT)
        model.evaluated = model.evaluate(X_VAL, Y_VAL, batch_size=32, verbose=0, return_dict=True)
        return model, history

    runs = both(guide_test_step, run)
    assert_same(runs)
    model = runs[keras_extras.CustomModel][0]
    reference = runs[keras.Model][0].evaluated
    # Keras 3.10 names the guide's metrics `compile_metrics`; 3.11 and later, `mae`.
    assert sorted(model.evaluated) == sorted(reference)
    assert sorted(model.evaluated) in (["loss", "mae"], ["compile_metrics", "loss"])
    np.testing.assert_allclose(model.evaluated["loss"], true_loss(model, X_VAL, Y_VAL), rtol=1e-5)
    if "mae" in reference:
        np.testing.assert_allclose(model.evaluated["mae"], reference["mae"], rtol=1e-6)


def renamed_helper_step(base):
    """The JAX guide's step, its stateless helper given the user's own signature."""
    import jax

    class Stepped(base):
        def compute_loss_and_updates(self, trainable, non_trainable, x, y, training=False):
            y_pred, non_trainable = self.stateless_call(
                trainable, non_trainable, x, training=training
            )
            # The penalty reads the kernel, so it needs the traced values in a scope.
            mapping = list(zip(self.trainable_variables, trainable, strict=True))
            with keras.StatelessScope(state_mapping=mapping):
                loss = self.compute_loss(y=y, y_pred=y_pred)
            return loss, (y_pred, non_trainable)

        def train_step(self, state, data):
            trainable, non_trainable, optimizer_variables, metrics_variables = state
            x, y = data
            grad_fn = jax.value_and_grad(self.compute_loss_and_updates, has_aux=True)
            (loss, (y_pred, non_trainable)), gradients = grad_fn(
                trainable, non_trainable, x, y, training=True
            )
            trainable, optimizer_variables = self.optimizer.stateless_apply(
                optimizer_variables, gradients, trainable
            )
            logs, new_metrics_variables = stateless_metrics(
                self, metrics_variables, loss, y, y_pred
            )
            return logs, (trainable, non_trainable, optimizer_variables, new_metrics_variables)

    return Stepped


@pytest.mark.backends("jax", reason="the helper shadows a method of Keras's JAX trainer")
def test_jax_helper_named_like_a_keras_method():
    # keras.Model's JAX test step calls `compute_loss_and_updates` with Keras's own
    # signature, so the user's helper breaks validation there; CustomModel's never calls it.
    def run(cls, **kwargs):
        model = regressor(cls)
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse", metrics=["mae"])
        return model, model.fit(X, Y, **kwargs, **FIT)

    assert_same(both(renamed_helper_step, run))
    model, history = run(
        renamed_helper_step(keras_extras.CustomModel), validation_data=(X_VAL, Y_VAL)
    )
    np.testing.assert_allclose(
        history.history["val_loss"][-1], true_loss(model, X_VAL, Y_VAL), rtol=1e-5
    )
    with pytest.raises(TypeError, match="compute_loss_and_updates"):
        run(renamed_helper_step(keras.Model), validation_data=(X_VAL, Y_VAL))


def penalised_through_keras_jax_step(base):
    """Adds a penalty by overriding the helper of Keras's own JAX step (Keras's signature)."""
    from keras import ops

    class Penalised(base):
        def compute_loss_and_updates(
            self,
            trainable_variables,
            non_trainable_variables,
            metrics_variables,
            x,
            y,
            sample_weight,
            training=False,
            optimizer_variables=None,
        ):
            loss, (unscaled, y_pred, non_trainable, metrics_variables) = (
                super().compute_loss_and_updates(
                    trainable_variables,
                    non_trainable_variables,
                    metrics_variables,
                    x,
                    y,
                    sample_weight,
                    training=training,
                    optimizer_variables=optimizer_variables,
                )
            )
            penalty = 0.1 * ops.mean(ops.square(y_pred))
            return loss + penalty, (unscaled + penalty, y_pred, non_trainable, metrics_variables)

    return Penalised


class PenalisedThroughComputeLoss(keras_extras.CustomModel):
    """The same penalty where CustomModel takes it, on every backend."""

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x, y, y_pred, sample_weight, training)
        return loss + 0.1 * keras.ops.mean(keras.ops.square(y_pred))


@pytest.mark.backends("jax", reason="`compute_loss_and_updates` is a method of Keras's JAX trainer")
def test_overriding_a_part_of_keras_jax_step_is_an_error_not_ignored():
    def run(cls):
        model = regressor(cls)
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
        return model, model.fit(X, Y, validation_data=(X_VAL, Y_VAL), **FIT)

    # CustomModel's step never calls the override: it says so instead of ignoring it.
    with pytest.raises(TypeError, match="overrides `compute_loss_and_updates`.*compute_loss"):
        run(penalised_through_keras_jax_step(keras_extras.CustomModel))
    # The move the message asks for gives keras.Model's training.
    model, history = run(PenalisedThroughComputeLoss)
    reference, reference_history = run(penalised_through_keras_jax_step(keras.Model))
    assert_same_training(model, history, reference, reference_history)


# --- 3. A GAN that overrides compile() and train_step() ----------------------------------

LATENT = 4
REAL = rng.normal(loc=2.0, scale=0.5, size=(64, 8)).astype("float32")


def gan_class(base):
    """The guides' GAN: two networks, two optimizers, its own compile() signature."""
    from keras import ops

    class GAN(base):
        def __init__(self, discriminator, generator, latent_dim):
            super().__init__()
            self.discriminator = discriminator
            self.generator = generator
            self.latent_dim = latent_dim
            self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
            self.g_loss_tracker = keras.metrics.Mean(name="g_loss")
            self.seed_generator = keras.random.SeedGenerator(1337)
            self.built = True

        @property
        def metrics(self):
            return [self.d_loss_tracker, self.g_loss_tracker]

        def compile(self, d_optimizer, g_optimizer, loss_fn):
            super().compile()
            self.d_optimizer = d_optimizer
            self.g_optimizer = g_optimizer
            self.loss_fn = loss_fn

        def batch(self, real):
            if isinstance(real, tuple):
                real = real[0]
            batch_size = ops.shape(real)[0]
            latent = keras.random.normal((batch_size, self.latent_dim), seed=self.seed_generator)
            combined = ops.concatenate([self.generator(latent), real], axis=0)
            labels = ops.concatenate(
                [ops.ones((batch_size, 1)), ops.zeros((batch_size, 1))], axis=0
            )
            labels += 0.05 * keras.random.uniform(ops.shape(labels), seed=self.seed_generator)
            latent = keras.random.normal((batch_size, self.latent_dim), seed=self.seed_generator)
            return combined, labels, latent, ops.zeros((batch_size, 1))

        def logs(self, d_loss, g_loss):
            self.d_loss_tracker.update_state(d_loss)
            self.g_loss_tracker.update_state(g_loss)
            return {"d_loss": self.d_loss_tracker.result(), "g_loss": self.g_loss_tracker.result()}

    if BACKEND == "tensorflow":
        import tensorflow as tf

        class Trained(GAN):
            def train_step(self, real):
                combined, labels, latent, misleading = self.batch(real)
                with tf.GradientTape() as tape:
                    d_loss = self.loss_fn(labels, self.discriminator(combined))
                weights = self.discriminator.trainable_weights
                self.d_optimizer.apply_gradients(zip(tape.gradient(d_loss, weights), weights))
                with tf.GradientTape() as tape:
                    g_loss = self.loss_fn(misleading, self.discriminator(self.generator(latent)))
                weights = self.generator.trainable_weights
                self.g_optimizer.apply_gradients(zip(tape.gradient(g_loss, weights), weights))
                return self.logs(d_loss, g_loss)

    else:
        import torch

        class Trained(GAN):
            def train_step(self, real):
                combined, labels, latent, misleading = self.batch(real)
                self.zero_grad()
                d_loss = self.loss_fn(labels, self.discriminator(combined))
                d_loss.backward()
                weights = self.discriminator.trainable_weights
                with torch.no_grad():
                    self.d_optimizer.apply([w.value.grad for w in weights], weights)
                self.zero_grad()
                g_loss = self.loss_fn(misleading, self.discriminator(self.generator(latent)))
                g_loss.backward()
                weights = self.generator.trainable_weights
                with torch.no_grad():
                    self.g_optimizer.apply([w.value.grad for w in weights], weights)
                return self.logs(d_loss, g_loss)

    return Trained


@pytest.mark.backends(
    "tensorflow",
    "torch",
    reason="Keras's JAX trainer threads only `self.optimizer`'s variables through a step, "
    "so a GAN with two optimizers of its own has no JAX form (the JAX guide has none)",
)
def test_gan_overriding_compile_and_train_step():
    def run(cls):
        keras.utils.set_random_seed(0)
        discriminator = keras.Sequential(
            [keras.Input((8,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)],
            name="discriminator",
        )
        generator = keras.Sequential(
            [
                keras.Input((LATENT,)),
                keras.layers.Dense(8, activation="relu"),
                keras.layers.Dense(8),
            ],
            name="generator",
        )
        gan = cls(discriminator=discriminator, generator=generator, latent_dim=LATENT)
        gan.start = weight_values(generator)
        gan.compile(
            d_optimizer=keras.optimizers.Adam(3e-3),
            g_optimizer=keras.optimizers.Adam(3e-3),
            loss_fn=keras.losses.BinaryCrossentropy(from_logits=True),
        )
        return gan, gan.fit(REAL, batch_size=16, epochs=3, shuffle=False, verbose=0)

    runs = both(gan_class, run)
    gan, history = runs[keras_extras.CustomModel]
    assert sorted(history.history) == ["d_loss", "g_loss"]
    assert_same(runs)
    moved = [
        np.abs(a - b).max() for a, b in zip(weight_values(gan.generator), gan.start, strict=True)
    ]
    assert min(moved) > 1e-3


# --- 4. Where CustomModel differs on purpose (docs/differences.rst) ----------------------


@pytest.mark.backends(
    "tensorflow", "torch", reason="the classic step needs GradientTape or backward(), JAX neither"
)
def test_classic_tf_keras_step_reports_the_true_loss():
    def run(base):
        model = classifier(classic_subclass(base), extras=False)
        compile_classifier(model, optimizer=keras.optimizers.SGD(0.0))
        history = model.fit(DIGITS, LABELS, batch_size=64, epochs=1, verbose=0)
        measured = model.evaluate(DIGITS, LABELS, verbose=0, return_dict=True)
        return history.history["loss"][0], measured["loss"]

    with warnings_as_errors():
        reported, measured = run(keras_extras.CustomModel)
    assert measured > 2.0
    np.testing.assert_allclose(reported, measured, rtol=1e-5)
    if BACKEND == "tensorflow":
        # keras.Model's shims warn, and the "loss" it reports is the mean softmax output.
        with pytest.warns(UserWarning, match="compiled_loss"):
            reported, measured = run(keras.Model)
        np.testing.assert_allclose(reported, 0.1, rtol=1e-5)
        assert measured > 2.0
    else:
        with pytest.raises(AttributeError, match="compiled_loss"):
            run(keras.Model)


def test_no_loss_at_all_is_an_error_on_every_backend():
    def run(base):
        keras.utils.set_random_seed(0)
        inputs = keras.Input(shape=(6,))
        model = base(inputs, keras.layers.Dense(1)(inputs))
        model.compile(optimizer="sgd")
        return model.fit(X, Y, epochs=1, verbose=0).history

    with pytest.raises(ValueError, match="has no loss to compute"):
        run(keras_extras.CustomModel)
    if BACKEND == "jax":
        # keras.Model's JAX step trains on a loss of 0 instead.
        assert run(keras.Model)["loss"] == [0.0]
    else:
        with pytest.raises(ValueError, match="No loss to compute"):
            run(keras.Model)
