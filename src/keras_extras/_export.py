"""The one decorator that makes an object public: registered for `.keras` files."""

from __future__ import annotations

from typing import TypeVar

import keras

PACKAGE = "keras_extras"

T = TypeVar("T", bound=type)


def export(cls: T) -> T:
    """Registers `cls` as `keras_extras>ClassName` for Keras serialisation.

    Every public class goes through this decorator and is listed in
    `keras_extras.__all__`; `tests/test_public_api.py` checks that the two
    never drift apart.

    Args:
        cls: The class to register.

    Returns:
        The same class, registered.
    """
    return keras.saving.register_keras_serializable(package=PACKAGE)(cls)
