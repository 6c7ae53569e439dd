"""keras_extras: registered, exact and backend-neutral Keras 3 components."""

from keras_extras.callbacks import LossHistory
from keras_extras.layers import ScheduledDropout
from keras_extras.metrics import RMSE, RootMeanSquaredError
from keras_extras.models import CustomModel
from keras_extras.plotter import TrainingPlotter
from keras_extras.schedules import (
    ConstantSchedule,
    DropoutSchedule,
    ExponentialRampSchedule,
    LinearWarmupSchedule,
)

__version__ = "0.1.0.dev0"

__all__ = [
    "ConstantSchedule",
    "CustomModel",
    "DropoutSchedule",
    "ExponentialRampSchedule",
    "LinearWarmupSchedule",
    "LossHistory",
    "RMSE",
    "RootMeanSquaredError",
    "ScheduledDropout",
    "TrainingPlotter",
]
