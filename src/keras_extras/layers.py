"""Layers: registered, backend-neutral and training-aware."""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from keras_extras import _keras_internals
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


def _validate_noise_shape(noise_shape: Any) -> tuple[int | None, ...] | None:
    """`noise_shape` as a tuple, checked as `keras.layers.Dropout` checks it."""
    if noise_shape is None:
        return None
    if isinstance(noise_shape, str):
        raise ValueError(
            "Invalid value received for argument `noise_shape`. Expected a tuple or "
            f"list of integers. Received: noise_shape={noise_shape!r}"
        )
    try:
        noise_shape = tuple(noise_shape)
    except TypeError:
        raise ValueError(
            "Invalid value received for argument `noise_shape`. Expected an iterable "
            f"of integers (e.g., a tuple or list). Received: noise_shape={noise_shape!r}"
        ) from None
    for i, dim in enumerate(noise_shape):
        if dim is None:
            continue
        if not isinstance(dim, int):
            raise ValueError(
                "Invalid value received for argument `noise_shape`. Expected all "
                f"elements to be integers or None. Received element at index {i}: "
                f"{dim!r} (type: {type(dim).__name__}) in noise_shape={noise_shape}"
            )
        if dim <= 0:
            raise ValueError(
                "Invalid value received for argument `noise_shape`. Expected all "
                "dimensions to be positive integers or None. Received "
                f"{dim} at index {i} in noise_shape={noise_shape}"
            )
    return noise_shape


def _forward_pass_memo() -> dict | None:
    """A dict that lives exactly as long as the current forward pass, or None.

    `ScheduledDropout` keeps in it the step its counter had when the pass began,
    so that the layer advances once per pass however often it is called. The
    pass is the first of:

    * the outermost `keras.StatelessScope`. JAX's trainer runs a step through
      `Model.stateless_call`, which opens such a scope but calls `Model.call`
      directly, so there no layer call spans the pass;
    * the call context that the outermost `Layer.__call__` opens and clears when
      it returns.

    The dict is an attribute of that scope or context, so it is dropped with it.
    Returns None outside both: `call` was invoked directly, and that call is a
    pass of its own.
    """
    owner = _keras_internals.outermost_stateless_scope()
    if owner is None:
        owner = _keras_internals.current_call_context()
    if owner is None:
        return None
    memo = getattr(owner, "_keras_extras_memo", None)
    if memo is None:
        memo = {}
        owner._keras_extras_memo = memo
    return memo


@export
class ScheduledDropout(keras.layers.Layer):
    """Curriculum dropout: a dropout rate that rises as training goes on.

    Formula, for the `step`-th training step in which this layer runs (from 0):

    ```
    current_rate = rate * clip(schedule(step), 0, 1)
    output = where(u >= current_rate, inputs / (1 - current_rate), 0)
    ```

    with `u` uniform on [0, 1), drawn afresh for every element and call, of
    shape `noise_shape` (broadcast over the input) when one is given.

    * **Inference.** With `training=False` or unset, the layer is the
      identity: it returns its input (after Keras's usual cast of float inputs
      to the layer's compute dtype), draws no random numbers and changes no
      state.
    * **Training.** With `training=True` (as in `fit`), it drops each element
      with probability `current_rate` and scales the kept ones by
      `1 / (1 - current_rate)` (inverted dropout), which keeps the expected
      value of every element. At `current_rate == 1` (`rate=1.0`, or a
      schedule that reaches 1 with `rate=1.0`) every element is dropped: the
      output is all zeros and so is the gradient, as with
      `keras.layers.Dropout(1.0)`.
    * **Noise shape.** As in `keras.layers.Dropout`: with `noise_shape`, one
      mask of that shape is drawn and broadcast over the input, so elements
      along an axis of size 1 are dropped together (for inputs
      `(batch, timesteps, features)`, `noise_shape=(None, 1, None)` drops the
      same features at every time step). A `None` entry takes the input's
      size on that axis.
    * **Schedule.** `"exponential"` (the default) is the ramp of Morerio et
      al., "Curriculum Dropout" (ICCV 2017): `rate * (1 - exp(-gamma * step))`,
      see `ExponentialRampSchedule` for its speed `gamma`. `"linear"` is a
      linear warm-up (`LinearWarmupSchedule`) and `"constant"` is plain
      dropout (`ConstantSchedule`). A name uses the schedule's default
      parameters; pass an instance for others, or a registered subclass of
      `DropoutSchedule` for your own.
    * **Counter.** `iterations` is a non-trainable integer variable: the
      number of training forward passes this layer has run in, which in
      `fit` is the number of training steps. A forward pass is one
      outermost layer or model call (in JAX's trainer, one `stateless_call`):
      every call of the layer inside it, whether the layer is shared by
      several inputs, wrapped in `TimeDistributed` or called several times in
      a subclassed `call`, uses the same rate and adds one in all. This
      holds eagerly and inside compiled steps (`tf.function`, XLA,
      `jax.jit`, torch and `torch.compile`), and with
      `steps_per_execution > 1` where Keras allows it. Only training calls
      count. Separate outermost calls count separately: a custom
      `train_step` that calls the model twice adds two per step, and so does
      calling the layer itself twice. Under `tf.distribute` it is updated
      from the first replica only, so it advances once per global batch. It
      is an integer so that it stays exact past 2**24 steps, where a float32
      counter would stop moving.
    * **Loops.** A loop body that the backend compiles once
      (`keras.ops.fori_loop`, `while_loop`, `scan`, a `keras.layers.RNN`
      cell) is the exception. On JAX no stateful layer runs inside one: it
      fails with JAX's `UnexpectedTracerError`, as `keras.layers.Dropout`
      does. On TensorFlow, in a compiled step, a loop body that holds the
      pass's first call of this layer adds one per loop iteration; call the
      layer once before the loop, as Keras's RNN does with its first time
      step, and it adds one per pass. Torch runs these loops in Python and
      adds one per pass.
    * **Saving.** The counter and the random generator's state are saved in
      `.keras` and `.weights.h5` files, so training resumed from a file
      continues the schedule (and, with a `seed`, the same random stream)
      where it stopped. A file saved with a stateless layer such as
      `keras.layers.Dropout` in this place holds no state for it: loading it
      restarts the counter at 0, keeps the random state and warns with the
      layer's name.

    Args:
        rate: The target dropout rate, a float in [0, 1].
        schedule: `"exponential"`, `"linear"`, `"constant"` or a registered
            `keras_extras.DropoutSchedule` instance.
        seed: An integer seed for the dropout masks (Keras `SeedGenerator`),
            for reproducible runs; `None` picks one at random.
        noise_shape: The shape of the dropout mask, broadcast over the
            input: a tuple or list of positive integers or `None` (the
            input's size on that axis), one entry per input axis. `None`
            (the default) draws one number per element.
        **kwargs: Base layer arguments (`name`, `dtype`, ...).

    Raises:
        ValueError: if `rate` is not a number in [0, 1], if `noise_shape` is
            not a sequence of positive integers or `None` (or, at call time,
            does not broadcast to the input), if `schedule` is an unknown
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
        noise_shape: Sequence[int | None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0 <= rate <= 1:
            raise ValueError(
                "Invalid value received for argument `rate`. Expected a float value "
                f"between 0 and 1. Received: rate={rate!r}"
            )
        self.rate = float(rate)
        self.schedule = _resolve_schedule(schedule)
        self.noise_shape = _validate_noise_shape(noise_shape)
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
        _keras_internals.build_at_init(self)

    @property
    def current_rate(self) -> Any:
        """The dropout rate that the next training step gets, a float32 tensor."""
        return self._rate_at(self.iterations.value)

    def _rate_at(self, step: Any) -> Any:
        fraction = ops.cast(self.schedule(ops.cast(step, "float32")), "float32")
        return self.rate * ops.clip(fraction, 0.0, 1.0)

    def _rate_of_this_pass(self) -> Any:
        """The rate at the pass's first step; sets the counter to that step + 1.

        Every call in one forward pass assigns the same value, so k calls
        advance the counter once. Both tensors are computed before the first
        assignment: on torch, `iterations.value` is the variable's own storage.
        """
        memo = _forward_pass_memo()
        key = ("ScheduledDropout", id(self))
        if memo is None or key not in memo:
            step = self.iterations.value
            entry = (
                self._rate_at(step),
                ops.add(step, ops.ones((), dtype=self.iterations.dtype)),
            )
            if memo is not None:
                memo[key] = entry
        else:
            entry = memo[key]
        rate, next_step = entry
        self.iterations.assign(next_step)
        return rate

    def _mask_shape(self, inputs: Any) -> Any:
        shape = ops.shape(inputs)
        if self.noise_shape is None:
            return shape
        if len(self.noise_shape) != len(shape) or any(
            dim is not None and dim != 1 and isinstance(size, int) and dim != size
            for dim, size in zip(self.noise_shape, shape, strict=False)
        ):
            raise ValueError(
                f"Layer '{self.name}': noise_shape={self.noise_shape} does not "
                f"broadcast to the input shape {tuple(shape)}. Each entry must be "
                "None, 1 or the input's size on that axis."
            )
        return tuple(size if dim is None else dim for dim, size in zip(self.noise_shape, shape))

    def call(self, inputs: Any, training: bool = False) -> Any:  # noqa: D102
        if not training:
            return inputs
        inputs = ops.convert_to_tensor(inputs)
        rate = self._rate_of_this_pass()
        noise = keras.random.uniform(self._mask_shape(inputs), seed=self.seed_generator)
        # At rate 1 every element is dropped; dividing by 1 instead of 0 keeps
        # the unused branch, and so the gradient, finite.
        keep = ops.where(rate < 1.0, 1.0 - rate, 1.0)
        kept = ops.divide(inputs, ops.cast(keep, inputs.dtype))
        return ops.where(noise >= rate, kept, ops.zeros_like(inputs))

    def compute_output_shape(self, input_shape: tuple) -> tuple:  # noqa: D102
        return input_shape

    def save_own_variables(self, store: Any) -> None:
        """Saves the counter and, beyond Keras's default, the random state."""
        super().save_own_variables(store)
        store["seed_generator_state"] = self.seed_generator.state

    def load_own_variables(self, store: Any) -> None:
        """Restores what `save_own_variables` saved.

        A file saved with a layer that has no state in this place, such as
        `keras.layers.Dropout`, holds nothing for it: then the counter
        restarts at 0, the random state keeps its value, and a warning names
        the layer. Any other mismatch raises.

        Raises:
            ValueError: if the file holds state for this layer, but not the
                counter and random state that `save_own_variables` writes.
        """
        keys = list(store.keys())
        if not keys:
            warnings.warn(
                f"Layer '{self.name}' (ScheduledDropout): the weights file holds no "
                "state for this layer, as when it was saved from a model with a "
                "stateless layer such as keras.layers.Dropout in this place. Its "
                "step counter starts again at 0 and its random state is kept.",
                stacklevel=2,
            )
            self.iterations.assign(0)
            return
        if "seed_generator_state" not in keys or len(keys) != 2:
            raise ValueError(
                f"Layer '{self.name}' (ScheduledDropout) cannot load the weights "
                f"file's entries {sorted(keys)} for it: it expects its step counter "
                "and random state, ['0', 'seed_generator_state']. The file was saved "
                "from a model with a different layer in this place."
            )
        self.seed_generator.state.assign(store["seed_generator_state"])
        super().load_own_variables(
            {key: store[key] for key in keys if key != "seed_generator_state"}
        )

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments, for `from_config`.

        Returns:
            A dict with `rate`, `schedule` (serialised), `noise_shape`, `seed`
            and the base layer's arguments.
        """
        return {
            **super().get_config(),
            "rate": self.rate,
            "schedule": keras.saving.serialize_keras_object(self.schedule),
            "noise_shape": self.noise_shape,
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
