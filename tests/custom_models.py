"""Models and data shared by the CustomModel tests (and their subprocesses)."""

from __future__ import annotations

import keras
import numpy as np

import keras_extras
from tests.harness import BACKEND, digits

(X, Y), (X_VAL, Y_VAL) = digits()


def classifier(cls=keras_extras.CustomModel, seed=0, extras=True, dropout=True):
    """A small digits classifier; `extras` adds the parts that make a step tricky."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(64,))
    h = keras.layers.Dense(16, activation="relu", kernel_regularizer=keras.regularizers.L2(1e-3))(
        inputs
    )
    if extras:
        # Non-trainable state, randomness and an add_loss loss, all in one step.
        h = keras.layers.BatchNormalization()(h)
        if dropout:
            h = keras.layers.Dropout(0.2, seed=3)(h)
        h = keras.layers.ActivityRegularization(l1=1e-4)(h)
    outputs = keras.layers.Dense(10, activation="softmax")(h)
    return cls(inputs, outputs)


def twin(model, cls=keras.Model, **kwargs):
    """A model of class `cls` with `model`'s architecture and weights."""
    other = classifier(cls, **kwargs)
    other.set_weights(model.get_weights())
    return other


def numpy_forward(weights, x):
    """The class probabilities of `classifier(extras=False)` with `weights`, in float64."""
    w1, b1, w2, b2 = (np.asarray(w, dtype="float64") for w in weights)
    logits = np.maximum(np.asarray(x, dtype="float64") @ w1 + b1, 0.0) @ w2 + b2
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def compile_classifier(model, **kwargs):
    kwargs.setdefault("optimizer", keras.optimizers.Adam(1e-2))
    model.compile(
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        **kwargs,
    )
    return model


def classic_subclass(base=keras_extras.CustomModel):
    """The tf.keras 2 custom train_step, in this backend's form, on `base`.

    It passes the batch's sample weights on, as the tf.keras 2 guide's
    weighted step does; batches without weights give None.
    """
    if BACKEND == "tensorflow":
        import tensorflow as tf

        class Classic(base):
            def train_step(self, data):
                x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
                with tf.GradientTape() as tape:
                    y_pred = self(x, training=True)
                    loss = self.compiled_loss(y, y_pred, sample_weight)
                grads = tape.gradient(loss, self.trainable_weights)
                # The tf.keras 2 idiom, word for word.
                self.optimizer.apply_gradients(zip(grads, self.trainable_weights))  # noqa: B905
                self.compiled_metrics.update_state(y, y_pred, sample_weight)
                return {m.name: m.result() for m in self.metrics}

    else:
        import torch

        class Classic(base):
            def train_step(self, data):
                x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
                self.zero_grad()
                y_pred = self(x, training=True)
                loss = self.compiled_loss(y, y_pred, sample_weight)
                loss.backward()
                grads = [v.value.grad for v in self.trainable_weights]
                with torch.no_grad():
                    self.optimizer.apply(grads, self.trainable_weights)
                self.compiled_metrics.update_state(y, y_pred, sample_weight)
                return {m.name: m.result() for m in self.metrics}

    return Classic
