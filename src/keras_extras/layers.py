"""Layers: `ScheduledDropout`, a dropout whose rate follows a schedule."""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from keras_extras import _keras_internals, schedules
from keras_extras._export import export
from keras_extras.schedules import DropoutSchedule


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
    """Dropout whose rate rises from 0 to `rate` as training goes on: curriculum dropout.

    ```
    current_rate = rate * clip(schedule(step), 0, 1)
    output = where(u >= current_rate, inputs / (1 - current_rate), 0)
    ```

    `step` is the number of training steps the layer has run in, kept in its
    integer variable `iterations`; `u` is uniform on [0, 1), drawn for every
    element and call (with `noise_shape`, one mask broadcast over the input, as
    in `keras.layers.Dropout`). With `training=False` or unset the layer
    returns its input and changes nothing.

    `iterations` advances once per outermost training call, however many times
    the layer runs inside it, and is saved with the random state in `.keras`
    and `.weights.h5` files, so resumed training continues the schedule. The
    guide says what counts as a step, where that does not hold (a loop body
    compiled once) and what loading does: :ref:`scheduled-dropout`;
    :doc:`differences` lists every difference from `keras.layers.Dropout`.

    Args:
        rate: The target dropout rate, a float in [0, 1].
        schedule: `"exponential"` (the default, `ExponentialRampSchedule()`),
            `"linear"` (`LinearWarmupSchedule()`), `"constant"`
            (`ConstantSchedule()`, plain dropout) or a registered
            `keras_extras.DropoutSchedule` instance.
        seed: An integer seed for the dropout masks, for reproducible runs;
            `None` picks one at random.
        noise_shape: The shape of the dropout mask, broadcast over the input: a
            tuple or list with one positive integer or `None` (the input's size)
            per input axis. `None` (the default) draws one number per element.
        **kwargs: Base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: A tensor of any shape.
        training: Whether the call is a training step: drop and count it.

    Raises:
        ValueError: if `rate` is not a number in [0, 1]; if `noise_shape` is not
            a sequence of positive integers or `None`, or, at call time, does not
            broadcast to the input; if `schedule` is an unknown name, a function
            or an unregistered schedule class.

    Example:
    >>> import numpy as np
    >>> import keras_extras
    >>> layer = keras_extras.ScheduledDropout(
    ...     0.5, schedule=keras_extras.LinearWarmupSchedule(warmup_steps=4), seed=1
    ... )
    >>> x = np.ones((2, 3), dtype="float32")
    >>> bool(np.array_equal(layer(x), x))  # inference: the identity
    True
    >>> y = layer(x, training=True)  # first step: rate 0
    >>> bool(np.array_equal(y, x))
    True
    >>> _ = layer(x, training=True)
    >>> int(layer.iterations.numpy()), round(float(layer.current_rate), 4)
    (2, 0.25)
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
        self.rate: float = float(rate)
        self.schedule: DropoutSchedule = schedules.resolve(schedule)
        self.noise_shape: tuple[int | None, ...] | None = _validate_noise_shape(noise_shape)
        self.seed: int | None = seed
        self.seed_generator: Any = keras.random.SeedGenerator(seed)
        self.iterations: Any = self.add_weight(
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
