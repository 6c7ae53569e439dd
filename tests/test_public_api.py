"""Every public object is registered, exported, documented and round-trips its config."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import keras
import pytest

import keras_extras
from tests.harness import assert_config_roundtrip

PUBLIC = [getattr(keras_extras, name) for name in keras_extras.__all__]
CLASSES = sorted({obj for obj in PUBLIC if inspect.isclass(obj)}, key=lambda c: c.__name__)

# Constructor arguments for the objects that cannot be built without any.
REQUIRED_ARGS: dict[str, dict] = {
    "ScheduledDropout": {"rate": 0.5},
    "TrainingPlotter": {"directory": "plots"},
}


def _functional_custom_model():
    inputs = keras.Input(shape=(3,))
    return keras_extras.CustomModel(inputs, keras.layers.Dense(2)(inputs))


# Objects whose arguments must be built fresh for each use (a model's graph).
FACTORIES: dict[str, Callable[[], Any]] = {"CustomModel": _functional_custom_model}


def test_all_lists_every_public_object():
    """`__all__` is what the registry, docs and round-trip tests below go through: a
    public object missing from it would escape them all."""
    public = {
        name
        for name, value in vars(keras_extras).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert public == set(keras_extras.__all__)
    assert len(set(keras_extras.__all__)) == len(keras_extras.__all__)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_registered_under_package(cls):
    name = f"keras_extras>{cls.__name__}"
    assert keras.saving.get_registered_name(cls) == name
    assert keras.saving.get_registered_object(name) is cls


def test_every_registered_object_is_exported():
    registered = {
        key.split(">", 1)[1]
        for key in keras.saving.get_custom_objects()
        if key.startswith("keras_extras>")
    }
    assert registered == {c.__name__ for c in CLASSES}


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_docstring_has_google_sections(cls):
    doc = inspect.getdoc(cls) or ""
    for section in ("Args:", "Example"):
        assert section in doc, f"{cls.__name__} docstring lacks {section!r}"


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_config_roundtrip(cls):
    if cls.__name__ in FACTORIES:
        obj = FACTORIES[cls.__name__]()
    else:
        obj = cls(**REQUIRED_ARGS.get(cls.__name__, {}))
    assert_config_roundtrip(obj)


def test_rmse_builds_and_saves_the_same_metric_as_rootmeansquarederror():
    """docs/api.rst: an alias, "the same class", so both names load from a `.keras` file.
    Catches an alias made a subclass, which would be saved under a name of its own."""
    for build in (keras_extras.RMSE, keras_extras.RootMeanSquaredError):
        config = keras.saving.serialize_keras_object(build(name="m"))
        assert config["registered_name"] == "keras_extras>RootMeanSquaredError"
        restored = keras.saving.deserialize_keras_object(config)
        assert type(restored) is keras_extras.RootMeanSquaredError
