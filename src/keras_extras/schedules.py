"""Dropout schedules: the fraction of its target rate that `ScheduledDropout` drops."""

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

    A schedule maps `step`, the number of training steps a layer has run in, to
    the fraction of the layer's target `rate` that it drops at that step. The
    layer drops `rate * clip(schedule(step), 0, 1)`.

    To write your own, subclass this class, implement `__call__` with
    `keras.ops` and `get_config`, and register the subclass for
    serialisation. The guide's "Curriculum dropout" section shows how:
    :ref:`dropout-schedules`.

    Args:
        None. A subclass takes its own arguments, each returned by `get_config`.

    Example:
    >>> import keras
    >>> import keras_extras
    >>> @keras.saving.register_keras_serializable(package="my_schedules")
    ... class StepAt(keras_extras.DropoutSchedule):
    ...     '''No dropout for `steps` steps, then the full rate.'''
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
        """The fraction of the target rate to drop after `step` training steps.

        Args:
            step: The number of training steps run, a float32 scalar tensor.

        Returns:
            A float scalar tensor; the layer clips it to [0, 1].
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

    ```
    fraction(step) = 1 - exp(-gamma * step)
    ```

    0 at the first step, rising towards 1 and never reaching it: 63% after
    `1 / gamma` steps, 99% after `4.6 / gamma`. The guide says how to pick
    `gamma`: :ref:`dropout-schedules`.

    Args:
        gamma: The speed of the ramp, per training step; finite and > 0.

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
        self.gamma: float = float(gamma)

    def __call__(self, step: Any) -> Any:  # noqa: D102
        step = ops.cast(step, "float32")
        # expm1 keeps float32 exact for a tiny gamma * step, where 1 - exp(...) is 0.
        return -ops.expm1(-self.gamma * step)

    def get_config(self) -> dict[str, Any]:  # noqa: D102
        return {"gamma": self.gamma}


@export
class LinearWarmupSchedule(DropoutSchedule):
    """A linear warm-up from no dropout to the full rate over `warmup_steps`.

    ```
    fraction(step) = min(step / warmup_steps, 1)
    ```

    With `warmup_steps=0`, the full rate applies from the first step.

    Args:
        warmup_steps: The number of training steps until the full rate, an
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
        self.warmup_steps: int = int(warmup_steps)

    def __call__(self, step: Any) -> Any:  # noqa: D102
        step = ops.cast(step, "float32")
        if self.warmup_steps == 0:
            return ops.ones_like(step)
        return ops.minimum(step / float(self.warmup_steps), 1.0)

    def get_config(self) -> dict[str, Any]:  # noqa: D102
        return {"warmup_steps": self.warmup_steps}


@export
class ConstantSchedule(DropoutSchedule):
    """The full rate from the first step: plain dropout, `fraction(step) = 1`.

    Args:
        None.

    Example:
    >>> import keras_extras
    >>> round(float(keras_extras.ConstantSchedule()(0)), 4)
    1.0
    """

    def __call__(self, step: Any) -> Any:  # noqa: D102
        return ops.ones_like(ops.cast(step, "float32"))


_BY_NAME = {
    "constant": ConstantSchedule,
    "exponential": ExponentialRampSchedule,
    "linear": LinearWarmupSchedule,
}


def resolve(schedule: Any) -> DropoutSchedule:
    """A `DropoutSchedule` from a name or an instance; the one place that says no.

    Args:
        schedule: `"constant"`, `"exponential"`, `"linear"` or a registered `DropoutSchedule`.

    Returns:
        The schedule: a new one with default parameters for a name.

    Raises:
        ValueError: for an unknown name, a function, an unregistered schedule
            class or anything else.
    """
    if isinstance(schedule, str):
        if schedule not in _BY_NAME:
            raise ValueError(
                f"Unknown schedule {schedule!r}. Expected one of "
                f"{sorted(_BY_NAME)} or a `keras_extras.DropoutSchedule` instance."
            )
        return _BY_NAME[schedule]()
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
        f"`schedule` must be one of {sorted(_BY_NAME)} or a "
        f"`keras_extras.DropoutSchedule`, but got {schedule!r}."
    )
