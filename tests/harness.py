"""The one test harness every component's tests call.

It checks what every public object promises: a complete `get_config`, a round trip
through `from_config` and through a `.keras` file loaded in a fresh process and, for
layers, the standard battery of `run_layer_test`. Docstring examples are run for every
module at once by tests/test_docs.py.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import inspect
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import keras
import numpy as np
import pytest

BACKEND = keras.backend.backend()
KERAS_VERSION = tuple(int(part) for part in re.findall(r"\d+", keras.version())[:3])

# Keras 3.10 and 3.11 cannot compile a training step with torch 2.13: fit with
# jit_compile=True fails inside torch.compile even for a plain keras.Model, with
# "AssertionError: exception table entry start instruction has no offset" (from Keras's
# compile_utils.py, in dynamo). Checked on 3.10.0, 3.11.0 and 3.11.3; 3.12.0, 3.12.4 and
# 3.15.1 pass. `make test-oldest` runs the tests so marked on 3.10.
OLD_KERAS_TORCH_JIT = pytest.mark.skipif(
    BACKEND == "torch" and KERAS_VERSION < (3, 12),
    reason="Keras before 3.12 with torch 2.13 cannot jit-compile any model's training step",
)


# A functional model's `inputs` and `outputs` are in its config as its graph's ends.
FUNCTIONAL_CONFIG_KEYS = {"inputs": "input_layers", "outputs": "output_layers"}


def constructor_arguments(cls: type) -> list[str]:
    """The named parameters of `cls.__init__`, without self, *args and **kwargs."""
    params = inspect.signature(cls.__init__).parameters.values()
    return [
        p.name
        for p in params
        if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]


def assert_config_roundtrip(obj: Any) -> Any:
    """Every constructor argument is in `get_config`, and `from_config` rebuilds it.

    Returns:
        The rebuilt object.
    """
    config = obj.get_config()
    missing = [
        name
        for name in constructor_arguments(type(obj))
        if name not in config and FUNCTIONAL_CONFIG_KEYS.get(name) not in config
    ]
    assert not missing, f"{type(obj).__name__}.get_config() lacks {missing}"
    json.dumps(keras.saving.serialize_keras_object(obj))  # must be JSON-able
    # Keras's Model.from_config empties the dict it is given.
    clone = type(obj).from_config(copy.deepcopy(config))
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(obj))
    assert type(restored) is type(obj)
    assert restored.get_config() == config
    return clone


def run_in_fresh_process(
    code: str, timeout: float = 300, env: dict[str, str | None] | None = None
) -> str:
    """Runs `code` in a new Python process on the current backend; returns its stdout.

    The process does not inherit this one's imports or registrations, so it shows what
    a user gets after a plain `import keras_extras`. `env` overrides environment
    variables; a value of None removes the variable.
    """
    overrides = env or {}
    env = dict(os.environ, KERAS_BACKEND=BACKEND, TF_CPP_MIN_LOG_LEVEL="3")
    env.update({k: v for k, v in overrides.items() if v is not None})
    for name in [k for k, v in overrides.items() if v is None]:
        env.pop(name, None)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    assert proc.returncode == 0, f"fresh process failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name: str) -> ModuleType:
    """Imports `examples/<name>.py`, so that tests reuse the examples' code.

    Only examples whose module level imports nothing but the standard library,
    Keras and keras_extras may be loaded this way; the others are run with
    `run_example`.
    """
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    return importlib.import_module(name)


def run_example(name: str, *args: str, timeout: float = 300) -> str:
    """Runs `examples/<name>.py` in a new process on the current backend; returns its stdout.

    Fails with the script's output if it exits with an error or runs past
    `timeout` seconds.
    """
    env = dict(os.environ, KERAS_BACKEND=BACKEND, TF_CPP_MIN_LOG_LEVEL="3")
    try:
        proc = subprocess.run(
            [sys.executable, str(EXAMPLES / f"{name}.py"), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired as error:
        raise AssertionError(f"examples/{name}.py ran past {timeout} s:\n{error.stdout}") from None
    assert proc.returncode == 0, (
        f"examples/{name}.py exited with {proc.returncode}:\n{proc.stdout}\n{proc.stderr[-5000:]}"
    )
    return proc.stdout


def jit(fn: Any) -> Any:
    """`fn` compiled the way the current backend compiles a training step.

    TensorFlow: `tf.function(jit_compile=True)` (XLA); JAX: `jax.jit`; torch:
    `torch.compile`, which is what `jit_compile=True` means on Keras's torch trainer.
    """
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True)
    if BACKEND == "jax":
        import jax

        return jax.jit(fn)
    import torch

    return torch.compile(fn)


def _numpy(x: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x))


def _variable_values(layer: keras.layers.Layer) -> list[np.ndarray]:
    return [_numpy(v.value) for v in layer.variables]


def run_layer_test(
    layer_cls: type,
    init_kwargs: dict[str, Any],
    input_data: np.ndarray,
    *,
    call_kwargs: dict[str, Any] | None = None,
    expected_output: np.ndarray | None = None,
    expected_num_trainable_weights: int | None = None,
    expected_num_non_trainable_weights: int | None = None,
    expected_num_seed_generators: int | None = None,
    supports_masking: bool | None = None,
    run_training_check: bool = True,
    run_mixed_precision_check: bool = True,
) -> dict[str, keras.layers.Layer]:
    """The standard battery for a layer, after Keras's own `run_layer_test`.

    In one call it checks, each time on a fresh `layer_cls(**init_kwargs)`:

    * serialisation: `assert_config_roundtrip`, and the rebuilt layer has the
      same attributes;
    * `build` and the numbers of trainable weights, non-trainable weights and
      seed generators;
    * a symbolic call on a `keras.Input`, whose shape and dtype must match an
      eager call's;
    * an eager call, its dtype (the layer's compute dtype for float inputs)
      and, when given, its values (`expected_output`);
    * a `.keras` round trip of a functional model around the layer: the same
      variables and the same inference output after loading;
    * a training step: `fit` for one batch with the backend's default
      compilation; trainable weights, if any, must change;
    * mixed precision (`dtype="mixed_float16"`): float outputs are float16,
      as `compute_output_spec` says, and float variables stay float32. When
      `call` takes `training`, this runs with `training=True` as well.

    Args:
        layer_cls: The layer class.
        init_kwargs: Constructor arguments.
        input_data: A batch of inputs, a NumPy array.
        call_kwargs: Extra arguments for the eager and symbolic calls.
        expected_output: The eager call's expected output.
        expected_num_trainable_weights: Expected `len(layer.trainable_weights)`.
        expected_num_non_trainable_weights: Expected
            `len(layer.non_trainable_weights)`.
        expected_num_seed_generators: Expected number of `SeedGenerator`s (the
            non-trainable variables that are not weights).
        supports_masking: Expected `layer.supports_masking`.
        run_training_check: Whether to run the training step.
        run_mixed_precision_check: Whether to run the mixed precision check.

    Returns:
        The layers it built, by check: `"eager"`, `"trained"`, `"mixed"`.
    """
    call_kwargs = dict(call_kwargs or {})
    input_data = np.asarray(input_data)
    float_input = np.issubdtype(input_data.dtype, np.floating)
    layers: dict[str, keras.layers.Layer] = {}

    # Serialisation.
    layer = layer_cls(**init_kwargs)
    clone = assert_config_roundtrip(layer)
    assert set(dir(clone)) == set(dir(layer)), "from_config rebuilt other attributes"
    if supports_masking is not None:
        assert layer.supports_masking == supports_masking

    def check_counts(layer: keras.layers.Layer) -> None:
        assert layer.built, f"{layer.name} is not built"
        if expected_num_trainable_weights is not None:
            assert len(layer.trainable_weights) == expected_num_trainable_weights
        if expected_num_non_trainable_weights is not None:
            assert len(layer.non_trainable_weights) == expected_num_non_trainable_weights
        if expected_num_seed_generators is not None:
            seed_states = len(layer.non_trainable_variables) - len(layer.non_trainable_weights)
            assert seed_states == expected_num_seed_generators

    # Build.
    layer = layer_cls(**init_kwargs)
    layer.build(input_data.shape)
    check_counts(layer)

    # Symbolic call.
    layer = layer_cls(**init_kwargs)
    symbolic_input = keras.Input(shape=input_data.shape[1:], dtype=str(input_data.dtype))
    symbolic_output = layer(symbolic_input, **call_kwargs)
    check_counts(layer)

    # Eager call.
    layer = layer_cls(**init_kwargs)
    output = layer(input_data, **call_kwargs)
    layers["eager"] = layer
    check_counts(layer)
    assert tuple(symbolic_output.shape[1:]) == tuple(output.shape[1:])
    assert keras.backend.standardize_dtype(output.dtype) == symbolic_output.dtype
    if float_input:
        assert keras.backend.standardize_dtype(output.dtype) == layer.compute_dtype
    if expected_output is not None:
        np.testing.assert_allclose(_numpy(output), expected_output, rtol=1e-6, atol=1e-6)

    # `.keras` round trip.
    inputs = keras.Input(shape=input_data.shape[1:], dtype=str(input_data.dtype))
    model = keras.Model(inputs, layer_cls(**init_kwargs)(inputs))
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "layer.keras")
        model.save(path)
        restored = keras.saving.load_model(path)
    for saved, loaded in zip(model.layers[1:], restored.layers[1:], strict=True):
        assert type(loaded) is type(saved)
        for a, b in zip(_variable_values(saved), _variable_values(loaded), strict=True):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(
        _numpy(restored(input_data)), _numpy(model(input_data)), rtol=1e-6, atol=1e-6
    )

    # Training step.
    if run_training_check:
        layer = layer_cls(**init_kwargs)
        model = _Wrapper(layer)
        model.compile(optimizer="sgd", loss=_SumLoss(), jit_compile="auto")
        target = _numpy(output)
        model(input_data)  # build, so that the weights exist before training
        before = [_numpy(w) for w in layer.trainable_weights]
        with warnings.catch_warnings():
            # A layer without weights trains nothing, and Keras says so.
            warnings.filterwarnings("ignore", "The model does not have any trainable weights")
            model.fit(input_data, target, batch_size=len(input_data), epochs=1, verbose=0)
        after = [_numpy(w) for w in layer.trainable_weights]
        if before:
            assert any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True)), (
                "one training step changed no trainable weight"
            )
        layers["trained"] = layer

    # Mixed precision.
    if run_mixed_precision_check:
        runs = [call_kwargs]
        if "training" in inspect.signature(layer_cls.call).parameters:
            runs.append({**call_kwargs, "training": True})
        for kwargs in runs:
            layer = layer_cls(**{**init_kwargs, "dtype": "mixed_float16"})
            spec_input = keras.KerasTensor(
                input_data.shape,
                dtype=layer.compute_dtype if float_input else str(input_data.dtype),
            )
            spec = layer.compute_output_spec(spec_input, **kwargs)
            output = layer(input_data, **kwargs)
            dtype = keras.backend.standardize_dtype(output.dtype)
            assert dtype == spec.dtype, f"output is {dtype}, compute_output_spec says {spec.dtype}"
            if float_input:
                assert dtype == "float16", f"mixed_float16 output is {dtype}"
            for weight in layer.weights:
                weight_dtype = keras.backend.standardize_dtype(weight.dtype)
                if "float" in weight_dtype:
                    assert weight_dtype == "float32", f"{weight.path} is {weight_dtype}"
            layers["mixed"] = layer
    return layers


class _Wrapper(keras.Model):
    """A subclassed model around one layer, passing `training` through."""

    def __init__(self, layer: keras.layers.Layer) -> None:
        # An explicit name: TensorFlow refuses a scope named after `_Wrapper`.
        super().__init__(name="layer_test_model")
        self.layer = layer

    def call(self, x: Any, training: bool = False) -> Any:
        return self.layer(x, training=training)


class _SumLoss(keras.losses.Loss):
    """One op, so that any layer output can be trained on."""

    def __init__(self) -> None:
        super().__init__(name="sum_loss")

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return keras.ops.sum(y_pred)


def digits(n_train: int = 192, n_val: int = 64) -> tuple:
    """Train and validation splits of scikit-learn's bundled digits: float32 in [0, 1]."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype("float32")
    y = data.target.astype("int32")
    train = slice(0, n_train)
    val = slice(n_train, n_train + n_val)
    return (x[train], y[train]), (x[val], y[val])


def png_files(folder: os.PathLike | str) -> list[str]:
    """The names in `folder` that are not hidden (a temporary file is hidden)."""
    return sorted(f for f in os.listdir(folder) if not f.startswith("."))


def assert_valid_png(path: os.PathLike | str, size: tuple[int, int] | None = None) -> None:
    """`path` is a whole PNG of `size` (width, height) pixels, with curves and text on it."""
    from PIL import Image

    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        if size is not None:
            assert image.size == size
        pixels = np.asarray(image.convert("L"), dtype=np.float64)
    # Not blank: curves, text and axes make the pixels vary and leave white.
    assert pixels.std() > 10.0
    assert 0.01 < (pixels < 200).mean() < 0.5


@contextlib.contextmanager
def warnings_as_errors() -> Iterator[None]:
    """Turns every warning into an error, but the one NumPy 2 gives for Keras's conversions.

    Keras converts tensors with `np.array(x)`, which NumPy 2 answers with a
    DeprecationWarning about `__array__` on some backends; that is Keras's, not
    the code under test.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings(
            "ignore", message="__array__ implementation", category=DeprecationWarning
        )
        yield


def weight_values(model: Any) -> list:
    """`model.get_weights()`, without the DeprecationWarning NumPy 2 gives for it.

    Keras converts tensors with `np.array(x)`, which warns under NumPy 2; tests
    that turn warnings into errors around `fit` read weights with this instead.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="__array__ implementation", category=DeprecationWarning
        )
        return model.get_weights()


def assert_same_training(
    model: Any, history: Any, reference: Any, reference_history: Any, tol: float = 1e-5
) -> None:
    """Two training runs agree: every History series and every weight, to `tol`."""
    import numpy as np

    assert sorted(history.history) == sorted(reference_history.history)
    for key, values in history.history.items():
        np.testing.assert_allclose(
            values, reference_history.history[key], rtol=tol, atol=tol, err_msg=key
        )
    weights, reference_weights = weight_values(model), weight_values(reference)
    assert len(weights) == len(reference_weights)
    for i, (w, r) in enumerate(zip(weights, reference_weights, strict=True)):
        np.testing.assert_allclose(w, r, rtol=tol, atol=tol, err_msg=f"weight {i}")


# Scale-out runs (tests/test_distribution.py, tests/test_multiprocess.py): an example's
# distributed run against its one-device or one-process reference.

# A fault that drops or doubles one replica's or process's share must move the values
# by this many times the comparison's tolerance.
MARGIN = 100


def read_json(path: os.PathLike | str) -> Any:
    with open(path) as f:
        return json.load(f)


def launch_example(name: str, folder: os.PathLike, timeout: float = 300) -> tuple[ModuleType, dict]:
    """Runs the processes of `examples/<name>.py`'s `launch` into `folder`, and waits.

    Returns:
        The example module, and each process's `<name>.json` by name.
    """
    example = load_example(name)
    with example.launch(str(folder)) as processes:
        processes.wait(timeout=timeout)
    return example, load_example("launcher").read_results(str(folder), processes.names)


def assert_same_as_one_device(run: dict, reference: dict, label: str = "distributed run") -> None:
    """Every logged value, `evaluate`, the weights and the dropout counter, to `common.RTOL`."""
    problems = load_example("common").compare(run, reference)
    assert not problems, f"{label} differs from one device:\n" + "\n".join(problems)


def assert_sensitive(sensitivity: dict) -> None:
    """A share dropped or doubled moves each value by more than `MARGIN` tolerances."""
    rtol = load_example("common").RTOL
    for key, change in sensitivity.items():
        assert change > MARGIN * rtol, f"a share dropped or doubled moves {key} by {change:.2e}"


def assert_resumed(run: dict, reference: dict, label: str = "distributed run") -> None:
    """ScheduledDropout resumed from a `.keras` file: its counter, then the same training.

    `run["resumed"]`, the epoch trained after loading the file, must equal
    `reference["resumed"]`, the one-device run that went on without stopping.
    """
    common = load_example("common")
    resumed = common.expected_resumed_iterations()
    assert resumed < common.WARMUP_STEPS, "the rate must still be rising after the reload"
    assert reference["resumed"]["dropout_iterations"] == resumed
    trained = common.expected_dropout_iterations()
    loaded = run["loaded_iterations"]
    assert loaded == trained, f"{label}: the file carried the counter {loaded}, not {trained}"
    counted = run["resumed"]["dropout_iterations"]
    assert counted == resumed, f"{label}: the counter read {counted} after resuming, not {resumed}"
    problems = common.compare(run["resumed"], reference["resumed"])
    assert not problems, f"{label} after the reload:\n" + "\n".join(problems)


def assert_plotted(folder: os.PathLike | str, run: dict, reference: dict) -> None:
    """TrainingPlotter's files in `folder`: whole images, one per epoch, of the one-device numbers.

    The plotter draws its history's table; that table must hold each epoch of
    the one-device run's History, so the curves are the one-device curves.
    """
    from matplotlib import image

    common = load_example("common")
    assert sorted(os.listdir(folder)) == common.PLOT_FILES  # no temporary file left
    for name in common.PLOT_FILES:
        pixels = image.imread(os.path.join(folder, name))  # fails on a truncated PNG
        assert pixels.ndim == 3 and min(pixels.shape[:2]) >= 300, (name, pixels.shape)
        assert float(np.ptp(pixels)) > 0, f"{name} is blank"
    epochs = run["plotted_epochs"]
    steps = common.expected_dropout_iterations() // common.EPOCHS
    assert epochs["epoch"] == list(range(common.EPOCHS))
    assert epochs["step"] == [steps * (e + 1) for e in range(common.EPOCHS)]
    for key, want in reference["history"].items():
        np.testing.assert_allclose(epochs[key], want, rtol=common.RTOL, err_msg=key)
