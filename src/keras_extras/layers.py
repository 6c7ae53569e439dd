"""Layers: registered, backend-neutral and training-aware."""

from __future__ import annotations

import math
import numbers
from typing import Any

import keras
from keras import ops

from keras_extras._export import export


@export
class DropoutSchedule:
    """Base class of the schedules that `ScheduledDropout` follows.

    A schedule maps the number of training batches a layer has seen, `step`,
    to the fraction of the layer's target `rate` that is dropped at that step.
    The layer drops `rate * clip(schedule(step), 0, 1)`, so a schedule
    describes only the shape of the ramp, and the rate never leaves
    `[0, rate]`.

    To write your own, subclass this class, implement `__call__` with
    `keras.ops` (it runs inside compiled training steps on every backend) and
    `get_config`, and register the class for serialisation so that `.keras`
    files can rebuild it. Plain functions and lambdas are refused, since a
    saved model could not be loaded again.

    Args:
        None. Subclasses take their own parameters, each returned by
        `get_config`.

    Example:
    >>> import keras
    >>> import keras_extras
    >>> @keras.saving.register_keras_serializable(package="my_schedules")
    ... class StepAt(keras_extras.DropoutSchedule):
    ...     '''No dropout for `steps` batches, then the full rate.'''
    ...     def __init__(self, steps=100):
    ...         self.steps = steps
    ...     def __call__(self, step):
    ...         step = keras.ops.cast(step, "float32")
    ...         return keras.ops.cast(step >= self.steps, "float32")
    ...     def get_config(self):
    ...         return {"steps": self.steps}
    >>> layer = keras_extras.ScheduledDropout(0.3, schedule=StepAt(steps=10))
    >>> round(float(layer.current_rate), 4)
    0.0
    >>> _ = layer.iterations.assign(10)
    >>> round(float(layer.current_rate), 4)
    0.3
    """

    def __call__(self, step: Any) -> Any:
        """The fraction of the target rate to drop after `step` training batches.

        Args:
            step: The number of training batches seen, a float32 scalar tensor.

        Returns:
            A float scalar tensor, clipped to [0, 1] by the layer.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement `__call__(step)`.")

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments, for `from_config`.

        Returns:
            A dict; empty for the base class.
        """
        return {}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DropoutSchedule:
        """Rebuilds a schedule from `get_config`'s output.

        Args:
            config: The dict that `get_config` returned.

        Returns:
            A new schedule.
        """
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@export
class ExponentialRampSchedule(DropoutSchedule):
    """The curriculum-dropout ramp of Morerio et al. (ICCV 2017).

    Formula, for the number of training batches seen `step`:

    ```
    fraction(step) = 1 - exp(-gamma * step)
    ```

    so the dropout rate is `rate * (1 - exp(-gamma * step))`: 0 on the first
    batch, rising towards `rate` and never reaching it. `gamma` is the speed
    of the ramp: the rate reaches 63% of its target after `1 / gamma` batches,
    95% after `3 / gamma` and 99% after `4.6 / gamma`. The paper picks
    `gamma` so that the ramp ends well within training; `gamma = 10 / T` for
    `T` training batches reaches 99.99% of the target by the end. The
    fraction is computed as `-expm1(-gamma * step)`, exact in float32 even for
    tiny `gamma * step`.

    Args:
        gamma: The speed of the ramp, per training batch; finite and > 0.

    Raises:
        ValueError: if `gamma` is not a finite number > 0.

    Example:
    >>> import keras_extras
    >>> schedule = keras_extras.ExponentialRampSchedule(gamma=0.01)
    >>> round(float(schedule(0)), 4)
    0.0
    >>> round(float(schedule(100)), 4)
    0.6321
    """

    def __init__(self, gamma: float = 1e-3) -> None:
        if (
            isinstance(gamma, bool)
            or not isinstance(gamma, numbers.Real)
            or not math.isfinite(gamma)
            or gamma <= 0
        ):
            raise ValueError(
                f"`gamma` must be a finite number > 0 (the speed of the ramp per "
                f"training batch), but got gamma={gamma!r}."
            )
        self.gamma = float(gamma)

    def __call__(self, step: Any) -> Any:
        """Returns `1 - exp(-gamma * step)` as a float32 tensor."""
        step = ops.cast(step, "float32")
        return -ops.expm1(-self.gamma * step)

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments, for `from_config`.

        Returns:
            A dict with `gamma`.
        """
        return {"gamma": self.gamma}


@export
class LinearWarmupSchedule(DropoutSchedule):
    """A linear warm-up from no dropout to the full rate over `warmup_steps`.

    Formula, for the number of training batches seen `step`:

    ```
    fraction(step) = min(step / warmup_steps, 1)
    ```

    With `warmup_steps=0` the full rate applies from the first batch.

    Args:
        warmup_steps: The number of training batches until the full rate, an
            integer >= 0.

    Raises:
        ValueError: if `warmup_steps` is negative or not an integer.

    Example:
    >>> import keras_extras
    >>> schedule = keras_extras.LinearWarmupSchedule(warmup_steps=100)
    >>> [round(float(schedule(s)), 4) for s in (0, 25, 100, 500)]
    [0.0, 0.25, 1.0, 1.0]
    """

    def __init__(self, warmup_steps: int = 1000) -> None:
        if (
            isinstance(warmup_steps, bool)
            or not isinstance(warmup_steps, numbers.Integral)
            or warmup_steps < 0
        ):
            raise ValueError(
                f"`warmup_steps` must be an integer >= 0 (a number of training "
                f"batches), but got warmup_steps={warmup_steps!r}."
            )
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step: Any) -> Any:
        """Returns `min(step / warmup_steps, 1)` as a float32 tensor."""
        step = ops.cast(step, "float32")
        if self.warmup_steps == 0:
            return ops.ones_like(step)
        return ops.minimum(step / float(self.warmup_steps), 1.0)

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments, for `from_config`.

        Returns:
            A dict with `warmup_steps`.
        """
        return {"warmup_steps": self.warmup_steps}


@export
class ConstantSchedule(DropoutSchedule):
    """The full rate from the first batch: plain dropout.

    Formula: `fraction(step) = 1`.

    Args:
        None.

    Example:
    >>> import keras_extras
    >>> round(float(keras_extras.ConstantSchedule()(0)), 4)
    1.0
    """

    def __call__(self, step: Any) -> Any:
        """Returns 1 as a float32 tensor."""
        return ops.ones_like(ops.cast(step, "float32"))


_SCHEDULES = {
    "constant": ConstantSchedule,
    "exponential": ExponentialRampSchedule,
    "linear": LinearWarmupSchedule,
}


def _resolve_schedule(schedule: Any) -> DropoutSchedule:
    """A `DropoutSchedule` from a name or an instance; the one place that says no."""
    if isinstance(schedule, str):
        if schedule not in _SCHEDULES:
            raise ValueError(
                f"Unknown schedule {schedule!r}. Expected one of "
                f"{sorted(_SCHEDULES)} or a `keras_extras.DropoutSchedule` instance."
            )
        return _SCHEDULES[schedule]()
    if isinstance(schedule, DropoutSchedule):
        cls = type(schedule)
        if keras.saving.get_registered_object(keras.saving.get_registered_name(cls)) is not cls:
            raise ValueError(
                f"The schedule class {cls.__name__} is not registered for "
                "serialisation, so a saved model could not rebuild it. Decorate it "
                "with `@keras.saving.register_keras_serializable()`."
            )
        return schedule
    if callable(schedule):
        raise ValueError(
            f"`schedule` must be a name or a `keras_extras.DropoutSchedule`, but got "
            f"the function {schedule!r}. Functions and lambdas cannot be saved and "
            "loaded; subclass `keras_extras.DropoutSchedule` and register it."
        )
    raise ValueError(
        f"`schedule` must be one of {sorted(_SCHEDULES)} or a "
        f"`keras_extras.DropoutSchedule`, but got {schedule!r}."
    )


@export
class ScheduledDropout(keras.layers.Layer):
    """Curriculum dropout: a dropout rate that rises as training goes on.

    Formula, for the `step`-th training batch this layer sees (from 0):

    ```
    current_rate = rate * clip(schedule(step), 0, 1)
    output = where(u >= current_rate, inputs / (1 - current_rate), 0)
    ```

    with `u` uniform on [0, 1), drawn afresh for every element and batch.

    * **Inference.** With `training=False` or unset, the layer is the
      identity: it returns its input (after Keras's usual cast of float inputs
      to the layer's compute dtype), draws no random numbers and changes no
      state.
    * **Training.** With `training=True` (as in `fit`), it drops each element
      with probability `current_rate` and scales the kept ones by
      `1 / (1 - current_rate)` (inverted dropout), which keeps the expected
      value of every element.
    * **Schedule.** `"exponential"` (the default) is the ramp of Morerio et
      al., "Curriculum Dropout" (ICCV 2017): `rate * (1 - exp(-gamma * step))`,
      see `ExponentialRampSchedule` for its speed `gamma`. `"linear"` is a
      linear warm-up (`LinearWarmupSchedule`) and `"constant"` is plain
      dropout (`ConstantSchedule`). A name uses the schedule's default
      parameters; pass an instance for others, or a registered subclass of
      `DropoutSchedule` for your own.
    * **Counter.** `iterations` is a non-trainable integer variable: the
      number of training batches this layer has seen. Only calls with
      `training=True` add one to it, once per batch, also inside compiled
      `fit` steps (`tf.function`, XLA, JAX's stateless steps, torch) and
      with `steps_per_execution > 1` where Keras allows it. Under
      `tf.distribute` it is updated from the first replica only, so it
      advances once per global batch. It is an integer so that it stays
      exact past 2**24 batches, where a float32 counter would stop moving.
    * **Saving.** The counter and the random generator's state are saved in
      `.keras` files, so training resumed from a file continues the schedule
      (and, with a `seed`, the same random stream) where it stopped.

    Args:
        rate: The target dropout rate, a float in [0, 1).
        schedule: `"exponential"`, `"linear"`, `"constant"` or a registered
            `keras_extras.DropoutSchedule` instance.
        seed: An integer seed for the dropout masks (Keras `SeedGenerator`),
            for reproducible runs; `None` picks one at random.
        **kwargs: Base layer arguments (`name`, `dtype`, ...).

    Raises:
        ValueError: if `rate` is outside [0, 1), if `schedule` is an unknown
            name, a function or lambda, or an unregistered schedule class, or
            (from the schedules) if a speed or number of steps is invalid.

    Example:
    >>> import numpy as np
    >>> import keras_extras
    >>> layer = keras_extras.ScheduledDropout(
    ...     0.5, schedule=keras_extras.LinearWarmupSchedule(warmup_steps=4), seed=1
    ... )
    >>> x = np.ones((2, 3), dtype="float32")
    >>> bool(np.array_equal(layer(x), x))  # inference: the identity
    True
    >>> y = layer(x, training=True)  # first batch: rate 0
    >>> bool(np.array_equal(y, x))
    True
    >>> _ = layer(x, training=True)
    >>> int(layer.iterations.numpy()), round(float(layer.current_rate), 4)
    (2, 0.25)

    Usage in a model:

    ```python
    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(128, activation="relu"),
        keras_extras.ScheduledDropout(
            0.5, schedule=keras_extras.ExponentialRampSchedule(gamma=1e-3)
        ),
        keras.layers.Dense(10, activation="softmax"),
    ])
    ```
    """

    def __init__(
        self,
        rate: float,
        schedule: str | DropoutSchedule = "exponential",
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0 <= rate < 1:
            raise ValueError(f"`rate` must be a float in [0, 1), but got rate={rate!r}.")
        self.rate = float(rate)
        self.schedule = _resolve_schedule(schedule)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.iterations = self.add_weight(
            shape=(),
            dtype="int",
            initializer="zeros",
            trainable=False,
            # Every replica adds one per global batch; keeping the first
            # replica's value counts each batch once.
            aggregation="only_first_replica",
            name="iterations",
        )
        self.supports_masking = True
        self._build_at_init()

    @property
    def current_rate(self) -> Any:
        """The dropout rate that the next training batch gets, a float32 tensor."""
        return self._rate_at(self.iterations.value)

    def _rate_at(self, step: Any) -> Any:
        fraction = ops.cast(self.schedule(ops.cast(step, "float32")), "float32")
        return self.rate * ops.clip(fraction, 0.0, 1.0)

    def call(self, inputs: Any, training: bool = False) -> Any:  # noqa: D102
        if not training:
            return inputs
        inputs = ops.convert_to_tensor(inputs)
        rate = self._rate_at(self.iterations.value)
        self.iterations.assign_add(ops.ones((), dtype=self.iterations.dtype))
        noise = keras.random.uniform(ops.shape(inputs), seed=self.seed_generator)
        kept = ops.divide(inputs, ops.cast(1.0 - rate, inputs.dtype))
        return ops.where(noise >= rate, kept, ops.zeros_like(inputs))

    def compute_output_shape(self, input_shape: tuple) -> tuple:  # noqa: D102
        return input_shape

    def save_own_variables(self, store: Any) -> None:
        """Saves the counter and, beyond Keras's default, the random state."""
        super().save_own_variables(store)
        store["seed_generator_state"] = self.seed_generator.state

    def load_own_variables(self, store: Any) -> None:
        """Restores what `save_own_variables` saved."""
        self.seed_generator.state.assign(store["seed_generator_state"])
        super().load_own_variables(
            {key: store[key] for key in store.keys() if key != "seed_generator_state"}
        )

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments, for `from_config`.

        Returns:
            A dict with `rate`, `schedule` (serialised), `seed` and the base
            layer's arguments.
        """
        return {
            **super().get_config(),
            "rate": self.rate,
            "schedule": keras.saving.serialize_keras_object(self.schedule),
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ScheduledDropout:
        """Rebuilds the layer, and its schedule, from `get_config`'s output.

        Args:
            config: The dict that `get_config` returned.

        Returns:
            A new layer, with a fresh counter.
        """
        config = dict(config)
        if isinstance(config.get("schedule"), dict):
            config["schedule"] = keras.saving.deserialize_keras_object(config["schedule"])
        return super().from_config(config)
