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
    """A `keras.Model` whose training and evaluation steps are correct on every backend.

    Its `train_step` and `test_step` give the weights and History of `keras.Model`'s
    on TensorFlow, JAX and PyTorch, for the same seed, data and optimizer. A subclass
    changes the step without backend code through three hooks: `compute_loss` (the
    loss to minimise, recorded as "loss"), `transform_gradients` (before the
    optimizer applies them) and `compute_metrics` (the logs). A classic Keras 2
    `train_step` that calls `self.compiled_loss` and `self.compiled_metrics` reports
    the true loss. Build it as a functional model, `CustomModel(inputs, outputs)`, or
    subclass it.

    The guide's :doc:`guide/custom_train_step` shows the hooks at work and what the
    step records; :doc:`migration` has the classic step, and :doc:`differences`
    lists where it differs from `keras.Model`.

    Args:
        *args: As for `keras.Model`: `inputs` and `outputs` for a functional
            model, nothing for a subclass.
        **kwargs: As for `keras.Model`, e.g. `name`.

    Raises:
        ValueError: from `fit`/`evaluate` when the model is not compiled,
            when a batch has no targets but the compiled loss needs them,
            or when there is no loss at all.
        TypeError: from `fit` on JAX, when a subclass overrides
            `compute_loss_and_updates` or `stateless_compute_loss` (parts of
            `keras.Model`'s JAX step) but keeps this class's step.

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
    >>> logs = model.evaluate(x, y, verbose=0, return_dict=True)
    >>> probs = model.predict(x, verbose=0).astype("float64")
    >>> bool(abs(logs["loss"] - -np.log(probs[np.arange(64), y]).mean()) < 1e-5)
    True
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
        `add_loss` losses. It does not touch the loss tracker: the step records
        what this method returns. Override it when the targets are not given as
        `y` (an autoencoder, a self-supervised model); see
        :doc:`guide/custom_train_step`.

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
        """
        del x, training  # The compiled loss needs neither.
        return self._total_loss(y, y_pred, sample_weight, regularization_losses=None)

    def transform_gradients(self, gradients: list, variables: list) -> list:
        """The gradient hook: changes the gradients before they are applied.

        For clipping, noise and the like, without backend code; see
        :doc:`guide/custom_train_step`. With loss scaling (mixed precision) the
        gradients here are unscaled, so thresholds mean the same as in float32.
        Under `tf.distribute` each replica sees the gradients of its own part of
        the batch; they are summed after this hook.

        Args:
            gradients: One tensor (or None) per trainable variable.
            variables: `self.trainable_variables`, in the same order.

        Returns:
            A list with one gradient per variable, in the same order.

        Raises:
            ValueError: from `fit`, if the list has another length.
        """
        del variables  # The default changes nothing.
        return gradients

    def compute_metrics(self, x: Any, y: Any, y_pred: Any, sample_weight: Any = None) -> dict:
        """The logs hook: updates the metrics and returns the step's logs.

        The default updates the compiled metrics and returns the result of
        every metric in `self.metrics`. An override may update a metric of its
        own (made in `__init__`, so averaged over the epoch and reset like the
        loss) or add an entry to the returned dict; see
        :doc:`guide/custom_train_step`.

        Args:
            x: The inputs of the batch.
            y: The targets, or None.
            y_pred: The model's outputs for `x`.
            sample_weight: Optional sample weights.

        Returns:
            A dict of metric names to scalar tensors.

        Raises:
            ValueError: if `y` is None but the model was compiled with metrics.
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

        It returns the compiled loss plus the regularisation losses and records
        that total in the loss tracker, so that a classic custom `train_step`
        reports the true loss (see :doc:`migration`). Inside this class's own
        step, which records what `compute_loss` returns, it records nothing.

        Args:
            y: Targets.
            y_pred: Predictions.
            sample_weight: Optional sample weights.
            regularization_losses: The losses to add to the compiled loss; None
                (the default) adds `self.losses`, as `fit` does (Keras 2 added
                none unless passed). `[]` leaves them out.

        Returns:
            A scalar tensor, not scaled for mixed precision; with a
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
