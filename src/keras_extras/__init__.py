"""keras_extras: registered, exact and backend-neutral Keras 3 components."""

from keras_extras.callbacks import LossHistory, TrainingPlotter
from keras_extras.layers import (
    ConstantSchedule,
    DropoutSchedule,
    ExponentialRampSchedule,
    LinearWarmupSchedule,
    ScheduledDropout,
)
from keras_extras.metrics import RMSE, RootMeanSquaredError

__version__ = "0.1.0.dev0"

__all__ = [
    "ConstantSchedule",
    "DropoutSchedule",
    "ExponentialRampSchedule",
    "LinearWarmupSchedule",
    "LossHistory",
    "RMSE",
    "RootMeanSquaredError",
    "ScheduledDropout",
    "TrainingPlotter",
]
