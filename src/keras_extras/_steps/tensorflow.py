"""CustomModel's steps on the TensorFlow backend: a GradientTape."""

from __future__ import annotations

import warnings
from typing import Any

import keras
import tensorflow as tf

from keras_extras import _steps


def replicas_in_sync() -> int:
    """The replicas of the current tf.distribute strategy (1 without one)."""
    return tf.distribute.get_strategy().num_replicas_in_sync


def train_step(model: Any, data: Any) -> dict:
    """One training step; Keras wraps it in tf.function and strategy.run."""
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    with tf.GradientTape() as tape:
        y_pred = _steps.forward(model, x, training=True)
        loss = _steps.step_loss(model, x, y, y_pred, sample_weight, training=True)
        loss = model.optimizer.scale_loss(loss)
    variables = model.trainable_weights
    if variables:
        gradients = tape.gradient(loss, variables)
        gradients = model._hooked_gradients(gradients, variables)
        model.optimizer.apply_gradients(zip(gradients, variables, strict=True))
    else:
        warnings.warn("The model does not have any trainable weights.", stacklevel=2)
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


def test_step(model: Any, data: Any) -> dict:
    """One evaluation step."""
    return _steps.evaluate_batch(model, data)
