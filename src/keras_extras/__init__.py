"""keras_extras: registered, exact and backend-neutral Keras 3 components."""

from keras_extras.metrics import RMSE, RootMeanSquaredError
from keras_extras.models import CustomModel

__version__ = "0.1.0.dev0"

__all__ = [
    "CustomModel",
    "RMSE",
    "RootMeanSquaredError",
]
