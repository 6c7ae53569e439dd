"""Models: a `keras.Model` whose own training step is correct on every backend."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_extras import _keras_internals, _steps
from keras_extras._export import export


def _functional_arguments(args: tuple, kwargs: dict) -> bool:
    """Whether a model is being built as `Model(inputs, outputs)` (Keras's own test)."""
    return (
        len(args) == 2
        or (len(args) == 1 and "outputs" in kwargs)
        or ("inputs" in kwargs and "outputs" in kwargs)
    )


def _loss_scale(optimizer: Any) -> Any | None:
    """The factor the optimizer multiplies the loss by (mixed precision), or None."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer) or (
        optimizer.loss_scale_factor is not None
    ):
        return optimizer.scale_loss(ops.ones((), dtype="float32"))
    return None


class _CompiledMetrics:
    """What Keras 2's `model.compiled_metrics` was, for the classic step."""

    def __init__(self, model: CustomModel) -> None:
        self._owner = model

    def update_state(self, y: Any, y_pred: Any, sample_weight: Any = None) -> None:
        """Updates the metrics given to `compile()` (not the loss tracker).

        Args:
            y: Targets.
            y_pred: Predictions.
            sample_weight: Optional sample weights, used by `weighted_metrics`.
        """
        compile_metrics = _keras_internals.compiled_metrics_object(self._owner)
        if compile_metrics is not None:
            compile_metrics.update_state(y, y_pred, sample_weight)


_FUNCTIONAL_VARIANTS: dict[type, type] = {}


def _functional_variant(cls: type) -> type:
    """`cls` with Keras's functional class among its bases, made once per class.

    Keras builds `SubclassOfModel(inputs, outputs)` by rewriting the `__bases__` of
    the subclass and of all its parents, for good: after one functional `CustomModel`,
    every later `class M(CustomModel)` with its own `__init__` would fail. The instance
    gets this separate class instead, which carries the name of `cls`, so that
    summaries, `get_config`, `.keras` files and pickles show `cls`, and loading gives
    `cls` back.
    """
    if cls not in _FUNCTIONAL_VARIANTS:
        unpickle = _keras_internals.unpickler(cls)

        def __reduce__(self: Any) -> tuple:
            # Pickle finds a class by its name, which is `cls`'s: unpickle through `cls`.
            return unpickle, keras.Model.__reduce__(self)[1]

        variant = type(
            cls.__name__,
            (cls, _keras_internals.functional_class()),
            {"__module__": cls.__module__, "__reduce__": __reduce__},
        )
        variant.__qualname__ = cls.__qualname__
        registered = keras.saving.get_registered_name(cls)
        if ">" in registered:
            # Saving looks up the variant's name; registering it takes over the name,
            # which loading must map back to `cls`.
            package, name = registered.split(">", 1)
            register = keras.saving.register_keras_serializable(package=package, name=name)
            register(variant)
            register(cls)
        _FUNCTIONAL_VARIANTS[cls] = variant
    return _FUNCTIONAL_VARIANTS[cls]


@export
class CustomModel(keras.Model):
    """A `keras.Model` with its own training step, correct on every backend.

    Its `train_step` and `test_step` do what `keras.Model`'s do, on the
    TensorFlow, JAX and PyTorch backends: the same weights and the same
    History for the same seed, data and optimizer. What they add is a step
    that can be changed without writing backend code, and a Keras 2
    `compiled_loss`/`compiled_metrics` that report the true loss.

    Build it in any of three ways:

    * functional: `CustomModel(inputs, outputs)`;
    * subclassed: `class Net(CustomModel)` with `__init__` and `call()`;
    * as the parent of a model that changes parts of the step, through
      the hooks below or by overriding `train_step` itself.

    **Hooks.** Override any of these; each runs on every backend, with
    `jit_compile` on or off. On JAX they run inside the step's stateless
    scope, so they read the current values of the model's variables and
    may update metrics and seed generators.

    * `compute_loss(x, y, y_pred, sample_weight, training)`: the loss, for
      self-supervised or generative models whose targets come from `x`
      (then `fit(x)` needs no `y`).
    * `transform_gradients(gradients, variables)`: gradient clipping, noise
      and the like, before the optimizer applies them.
    * `compute_metrics(x, y, y_pred, sample_weight)`: the step's logs; add
      values to them here.

    **What the step records.** The loss tracker ("loss" in the logs) gets
    once per batch the value that `compute_loss` returns, which is the
    value that is minimised, weighted by the batch size. Under
    `tf.distribute` the reported loss is the global-batch loss, not 1/N of
    it, and regularisation losses are scaled like the compiled loss, so
    the replicas' gradients add up to the single-device gradient. With
    `mixed_float16` the optimizer is wrapped in a `LossScaleOptimizer` by
    `compile()`, as usual; the step scales the loss and the hooks see
    unscaled gradients.

    **The classic Keras 2 step.** A subclass may override `train_step`
    in the old style: `self.compiled_loss(y, y_pred)` returns the total
    loss and records it in the loss tracker, and
    `self.compiled_metrics.update_state(y, y_pred)` updates the compiled
    metrics, without deprecation warnings. `keras.Model` has this idiom on
    TensorFlow only, where it warns and reports the mean prediction as the
    loss.

    Args:
        *args: As for `keras.Model`: `inputs` and `outputs` for a functional
            model, nothing for a subclass.
        **kwargs: As for `keras.Model`, e.g. `name`.

    Raises:
        ValueError: from `fit`/`evaluate` when the model is not compiled,
            when a batch has no targets but the compiled loss needs them,
            or when there is no loss at all.

    Example:
    >>> import keras
    >>> import numpy as np
    >>> import keras_extras
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(64, 4)).astype("float32")
    >>> y = (x[:, 0] > 0).astype("int32")
    >>> keras.utils.set_random_seed(0)
    >>> inputs = keras.Input(shape=(4,))
    >>> outputs = keras.layers.Dense(2, activation="softmax")(inputs)
    >>> model = keras_extras.CustomModel(inputs, outputs)
    >>> model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
    ...               metrics=["accuracy"])
    >>> history = model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    >>> sorted(history.history)
    ['accuracy', 'loss']

    The reported loss is the true loss:

    >>> logs = model.evaluate(x, y, verbose=0, return_dict=True)
    >>> probs = model.predict(x, verbose=0).astype("float64")
    >>> bool(abs(logs["loss"] - -np.log(probs[np.arange(64), y]).mean()) < 1e-5)
    True

    The classic Keras 2 step (the TensorFlow form; on PyTorch use
    `loss.backward()` and `self.optimizer.apply`):

    ```python
    import tensorflow as tf

    import keras_extras


    class Classic(keras_extras.CustomModel):
        def train_step(self, data):
            x, y = data
            with tf.GradientTape() as tape:
                y_pred = self(x, training=True)
                loss = self.compiled_loss(y, y_pred)
            grads = tape.gradient(loss, self.trainable_weights)
            self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
            self.compiled_metrics.update_state(y, y_pred)
            return {m.name: m.result() for m in self.metrics}
    ```
    """

    # True while the step runs `compute_loss`; the step records the loss itself.
    _step_records_loss = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        functional = _keras_internals.functional_class()
        if _functional_arguments(args, kwargs) and not isinstance(self, functional):
            # Where keras.Model would rewrite the bases of this class and its
            # parents, only this instance becomes functional.
            self.__class__ = _functional_variant(type(self))
            functional.__init__(self, *args, **kwargs)
        else:
            super().__init__(*args, **kwargs)

    def train_step(self, *args: Any) -> Any:
        """Runs one training step on the current backend.

        Override it to write the whole step yourself; the hooks cover most
        needs without backend code.

        Args:
            *args: `(data,)` on TensorFlow and PyTorch, `(state, data)` on
                JAX, where `data` is `(x, y, sample_weight)` or a shorter tuple.

        Returns:
            The logs dict; on JAX, `(logs, new_state)`.
        """
        return _steps.backend_steps().train_step(self, *args)

    def test_step(self, *args: Any) -> Any:
        """Runs one evaluation step on the current backend.

        Args:
            *args: `(data,)` on TensorFlow and PyTorch, `(state, data)` on JAX.

        Returns:
            The logs dict; on JAX, `(logs, new_state)`.
        """
        return _steps.backend_steps().test_step(self, *args)

    def compute_loss(
        self,
        x: Any = None,
        y: Any = None,
        y_pred: Any = None,
        sample_weight: Any = None,
        training: bool = True,
    ) -> Any:
        """The loss hook: the total loss of one batch, which the step minimises.

        The default is the compiled loss plus the model's regularisation and
        `add_loss` losses. It does not touch the loss tracker; the step
        records what this method returns.

        Override it when the targets are not given as `y`. Under
        `tf.distribute` a custom loss should be scaled as Keras losses are
        (divided by the number of replicas); calling `super().compute_loss`
        or `self.compiled_loss` does this.

        Args:
            x: The inputs of the batch.
            y: The targets, or None.
            y_pred: The model's outputs for `x`.
            sample_weight: Optional sample weights.
            training: Whether the step is a training step.

        Returns:
            A scalar tensor.

        Raises:
            ValueError: if `y` is None but the model was compiled with a
                loss, which needs targets; or if there is no loss at all.

        Example: an autoencoder trained with `fit(x)`, its inputs as targets.

        >>> import keras
        >>> import numpy as np
        >>> import keras_extras
        >>> class AutoEncoder(keras_extras.CustomModel):
        ...     def compute_loss(self, x=None, y=None, y_pred=None,
        ...                      sample_weight=None, training=True):
        ...         return super().compute_loss(x, x, y_pred, sample_weight, training)
        >>> keras.utils.set_random_seed(0)
        >>> inputs = keras.Input(shape=(8,))
        >>> code = keras.layers.Dense(3)(inputs)
        >>> autoencoder = AutoEncoder(inputs, keras.layers.Dense(8)(code))
        >>> autoencoder.compile(optimizer="adam", loss="mse")
        >>> x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
        >>> losses = autoencoder.fit(x, epochs=5, verbose=0).history["loss"]
        >>> losses[-1] < losses[0]
        True
        """
        del x, training  # The compiled loss needs neither.
        return self._total_loss(y, y_pred, sample_weight, regularization_losses=None)

    def transform_gradients(self, gradients: list, variables: list) -> list:
        """The gradient hook: changes the gradients before they are applied.

        `gradients[i]` is the gradient of the loss for `variables[i]`, one of
        `self.trainable_variables`. With loss scaling (mixed precision) the
        gradients here are unscaled, so thresholds mean the same as in
        float32. Under `tf.distribute` each replica sees the gradients of its
        own part of the batch; they are summed after this hook.

        Args:
            gradients: One tensor (or None) per trainable variable.
            variables: The trainable variables, in the same order.

        Returns:
            A list with one gradient per variable, in the same order.

        Example: clip the global norm of the gradients to 0.5, then add
        Gaussian noise drawn from a seed generator of the model (its state
        is part of the model, so every step draws new noise, under `jit`
        too).

        >>> import keras
        >>> import numpy as np
        >>> import keras_extras
        >>> from keras import ops
        >>> class ClippedNoisy(keras_extras.CustomModel):
        ...     def __init__(self, *args, **kwargs):
        ...         super().__init__(*args, **kwargs)
        ...         self.noise = keras.random.SeedGenerator(1)
        ...     def transform_gradients(self, gradients, variables):
        ...         norm = ops.sqrt(sum(ops.sum(ops.square(g)) for g in gradients))
        ...         factor = ops.minimum(1.0, 0.5 / norm)
        ...         return [g * factor + keras.random.normal(ops.shape(g), stddev=1e-3,
        ...                                                  seed=self.noise)
        ...                 for g in gradients]
        >>> keras.utils.set_random_seed(0)
        >>> inputs = keras.Input(shape=(4,))
        >>> model = ClippedNoisy(inputs, keras.layers.Dense(1)(inputs))
        >>> model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
        >>> before = model.get_weights()
        >>> x = np.full((8, 4), 10.0, dtype="float32")
        >>> _ = model.fit(x, np.zeros((8, 1)), epochs=1, verbose=0)
        >>> step = np.sqrt(sum(((a - b) ** 2).sum()
        ...                    for a, b in zip(model.get_weights(), before)))
        >>> bool(0.49 < step < 0.51)  # the plain gradient's norm is over 100
        True
        """
        del variables  # The default changes nothing.
        return gradients

    def compute_metrics(self, x: Any, y: Any, y_pred: Any, sample_weight: Any = None) -> dict:
        """The logs hook: updates the metrics and returns the step's logs.

        The default updates the compiled metrics and returns the result of
        every metric in `self.metrics`. Add values by updating a metric of
        your own here (a `keras.metrics.Mean` made in `__init__` is part of
        `self.metrics`, so it is averaged over the epoch and reset like the
        loss), or by adding an entry to the returned dict, which `fit` then
        reports as it is: its last batch's value at the end of an epoch.

        Args:
            x: The inputs of the batch.
            y: The targets, or None.
            y_pred: The model's outputs for `x`.
            sample_weight: Optional sample weights.

        Returns:
            A dict of metric names to scalar tensors.

        Example: log the mean confidence of a classifier.

        >>> import keras
        >>> import numpy as np
        >>> import keras_extras
        >>> class Confident(keras_extras.CustomModel):
        ...     def __init__(self, *args, **kwargs):
        ...         super().__init__(*args, **kwargs)
        ...         self.confidence = keras.metrics.Mean(name="confidence")
        ...     def compute_metrics(self, x, y, y_pred, sample_weight=None):
        ...         self.confidence.update_state(keras.ops.max(y_pred, axis=-1))
        ...         return super().compute_metrics(x, y, y_pred, sample_weight)
        >>> keras.utils.set_random_seed(0)
        >>> inputs = keras.Input(shape=(4,))
        >>> model = Confident(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
        >>> model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        >>> x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
        >>> y = np.arange(32) % 3
        >>> sorted(model.fit(x, y, epochs=1, verbose=0).history)
        ['confidence', 'loss']
        >>> logs = model.evaluate(x, y, verbose=0, return_dict=True)
        >>> expected = model.predict(x, verbose=0).max(axis=-1).mean()
        >>> bool(abs(logs["confidence"] - expected) < 1e-6)
        True
        """
        if _keras_internals.compiled_metrics_object(self) is not None:
            self._require_targets(y)
        return super().compute_metrics(x, y, y_pred, sample_weight)

    def compiled_loss(
        self,
        y: Any,
        y_pred: Any,
        sample_weight: Any = None,
        regularization_losses: list | None = None,
    ) -> Any:
        """Keras 2's `model.compiled_loss`: the total loss, recorded once.

        It returns the compiled loss plus the regularisation losses and
        records that total in the loss tracker, so that a classic custom
        `train_step` reports the true loss. Inside this class's own step,
        which records what `compute_loss` returns, it records nothing, so a
        batch is never counted twice.

        Args:
            y: Targets.
            y_pred: Predictions.
            sample_weight: Optional sample weights.
            regularization_losses: The losses to add to the compiled loss.
                None (the default) adds the model's own `self.losses`, so the
                total is the loss that `fit` minimises and `evaluate` reports;
                Keras 2 added none unless they were passed. Pass `[]` to
                leave them out.

        Returns:
            A scalar tensor. It is not scaled for mixed precision: with a
            `LossScaleOptimizer`, scale it with `self.optimizer.scale_loss`
            before taking gradients.

        Raises:
            ValueError: if the model is not compiled, if `y` is None while a
                loss is compiled, or if there is no loss at all.
        """
        loss = self._total_loss(y, y_pred, sample_weight, regularization_losses)
        if not self._step_records_loss:
            _steps.record_loss(self, loss, _steps.batch_size(y_pred))
        return loss

    @property
    def compiled_metrics(self) -> _CompiledMetrics:
        """Keras 2's `model.compiled_metrics`, for a classic custom step.

        Its `update_state(y, y_pred, sample_weight=None)` updates the metrics
        given to `compile()`; unlike `keras.Model`'s deprecated shim it
        leaves the loss tracker alone and does not warn.
        """
        return _CompiledMetrics(self)

    def _transforms_gradients(self) -> bool:
        """Whether `transform_gradients` is overridden, so that the step must call it."""
        return type(self).transform_gradients is not CustomModel.transform_gradients

    def _overrides_train_step(self) -> bool:
        """Whether a subclass has its own `train_step`, which may not call this class's."""
        return type(self).train_step is not CustomModel.train_step

    def _unrecorded_loss(
        self, x: Any, y: Any, y_pred: Any, sample_weight: Any, training: bool
    ) -> Any:
        """`compute_loss`, for a step that records the loss itself.

        A `compute_loss` override may call `compiled_loss`, which records its own
        value outside a step; the flag keeps that from counting the batch twice.
        """
        self._step_records_loss = True
        try:
            return _keras_internals.compute_loss(self, x, y, y_pred, sample_weight, training)
        finally:
            self._step_records_loss = False

    def _hooked_gradients(self, gradients: list, variables: list) -> list:
        """Runs `transform_gradients` on the gradients of the true loss.

        The optimizer gets the gradients of the scaled loss when it scales
        losses (mixed precision) and unscales them itself. The hook sees them
        unscaled, so that a clip threshold or a noise level means the same
        as in float32, and they are scaled back afterwards.
        """
        if not self._transforms_gradients():
            # Not overridden: the gradients stay bit for bit what Keras's step has.
            return gradients
        scale = _loss_scale(self.optimizer)
        if scale is not None:
            gradients = [None if g is None else g / ops.cast(scale, g.dtype) for g in gradients]
        new = list(self.transform_gradients(list(gradients), list(variables)))
        if len(new) != len(variables):
            raise ValueError(
                "`transform_gradients` must return one gradient per trainable variable "
                f"({len(variables)}), but it returned {len(new)}."
            )
        if scale is not None:
            new = [None if g is None else g * ops.cast(scale, g.dtype) for g in new]
        return new

    def _require_targets(self, y: Any) -> None:
        if y is not None:
            return
        has_loss = _keras_internals.compiled_loss_object(self) is not None
        compiled = f"loss={self.loss!r}" if has_loss else "metrics"
        raise ValueError(
            f"Model {self.name!r} was compiled with {compiled}, which compares "
            "predictions with targets, but this batch has no targets (y is None). "
            "Pass `y` to fit()/evaluate(), give a dataset of (x, y) pairs, or "
            "override `compute_loss` (and `compute_metrics`) to take the targets "
            "from `x`."
        )

    def _total_loss(
        self,
        y: Any,
        y_pred: Any,
        sample_weight: Any,
        regularization_losses: list | None,
    ) -> Any:
        if not self.compiled:
            raise ValueError(
                f"Model {self.name!r} is not compiled: call "
                "`model.compile(optimizer=..., loss=...)` before training or "
                "computing its loss."
            )
        losses = []
        compile_loss = _keras_internals.compiled_loss_object(self)
        if compile_loss is not None:
            self._require_targets(y)
            loss = compile_loss(y, y_pred, sample_weight)
            if loss is not None:
                losses.append(loss)
        if regularization_losses is None:
            regularization_losses = self.losses
        for loss in regularization_losses:
            # Keras's own: a sum, divided by the replicas under tf.distribute as
            # Keras losses are, so that the summed gradients count it once.
            losses.append(
                _keras_internals.aggregate_additional_loss(self, ops.convert_to_tensor(loss))
            )
        if not losses:
            raise ValueError(
                f"Model {self.name!r} has no loss to compute: pass `loss` to "
                "`compile()`, or add losses with `add_loss()`."
            )
        if len(losses) == 1:
            return losses[0]
        return ops.sum(losses)
