"""ScheduledDropout and its schedules, against closed forms in NumPy float64."""

from __future__ import annotations

import json
import math

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import keras_extras
from keras_extras import (
    ConstantSchedule,
    DropoutSchedule,
    ExponentialRampSchedule,
    LinearWarmupSchedule,
    ScheduledDropout,
)
from tests.harness import (
    BACKEND,
    OLD_KERAS_TORCH_JIT,
    assert_config_roundtrip,
    run_in_fresh_process,
    run_layer_test,
)

# A binomial count is this many standard deviations from its mean with probability
# below 2e-9: a fixed seed makes each test deterministic, and this bound makes it
# independent of which seed (and which backend's generator) it got.
SIGMAS = 6.0


def counter(layer: ScheduledDropout) -> int:
    return int(keras.ops.convert_to_numpy(layer.iterations.value))


def numpy(x) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x))


def reference_rate(rate: float, schedule: str, param: float, step: int) -> float:
    """The closed forms, in float64."""
    if schedule == "exponential":
        return rate * -math.expm1(-param * step)
    if schedule == "linear":
        return rate * (min(step / param, 1.0) if param else 1.0)
    return rate


def make_schedule(schedule: str, param: float) -> DropoutSchedule:
    if schedule == "exponential":
        return ExponentialRampSchedule(gamma=param)
    if schedule == "linear":
        return LinearWarmupSchedule(warmup_steps=int(param))
    return ConstantSchedule()


@keras.saving.register_keras_serializable(package="tests")
class Cosine(DropoutSchedule):
    """A user's schedule: half a cosine wave from 0 to 1 over `steps` batches."""

    def __init__(self, steps: int = 10) -> None:
        self.steps = steps

    def __call__(self, step):
        t = keras.ops.minimum(keras.ops.cast(step, "float32") / self.steps, 1.0)
        return 0.5 - 0.5 * keras.ops.cos(np.pi * t)

    def get_config(self):
        return {"steps": self.steps}


@keras.saving.register_keras_serializable(package="tests")
class Overshoot(DropoutSchedule):
    """A user's schedule that leaves [0, 1]: `scale * step - shift`."""

    def __init__(self, scale: float = 1.0, shift: float = 0.0) -> None:
        self.scale, self.shift = scale, shift

    def __call__(self, step):
        return self.scale * keras.ops.cast(step, "float32") - self.shift

    def get_config(self):
        return {"scale": self.scale, "shift": self.shift}


class ZeroFraction(keras.layers.Layer):
    """Records, in training, the fraction of zeros in the last batch it saw."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.fraction = self.add_weight(shape=(), initializer="zeros", trainable=False)

    def call(self, x, training=False):
        if training:
            self.fraction.assign(keras.ops.mean(keras.ops.cast(x == 0, "float32")))
        return x


def dropout_model(layer: ScheduledDropout, features: int = 4) -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((features,)),
            keras.layers.Dense(8),
            layer,
            keras.layers.Dense(1),
        ]
    )


def regression_data(n: int = 70, features: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.random((n, features), dtype=np.float32)
    return x, x.sum(axis=1, keepdims=True)


# --- The standard harness and the docs --------------------------------------------


@pytest.mark.parametrize("noise_shape", [None, (None, 1)])
def test_standard_layer_harness(noise_shape):
    x = np.random.default_rng(0).normal(size=(4, 3)).astype("float32")
    layers = run_layer_test(
        ScheduledDropout,
        {
            "rate": 0.5,
            "schedule": LinearWarmupSchedule(warmup_steps=2),
            "seed": 1,
            "noise_shape": noise_shape,
        },
        input_data=x,
        expected_output=x,  # inference: the identity
        expected_num_trainable_weights=0,
        expected_num_non_trainable_weights=1,
        expected_num_seed_generators=1,
        supports_masking=True,
    )
    assert counter(layers["eager"]) == 0
    assert counter(layers["trained"]) == 1  # one batch in `fit`
    assert counter(layers["mixed"]) == 1  # its training=True call


# --- Inference -------------------------------------------------------------------


@pytest.mark.parametrize("training", ["unset", False, None])
@pytest.mark.parametrize(
    "dtype",
    [
        "float32",
        "mixed_float16",
        pytest.param(
            "float64",
            marks=pytest.mark.backends(
                "tensorflow", "torch", reason="JAX computes float64 as float32 without x64"
            ),
        ),
    ],
)
def test_identity_at_inference(training, dtype):
    layer = ScheduledDropout(0.9, schedule="constant", seed=3, dtype=dtype)
    layer.iterations.assign(10)
    seed_state = numpy(layer.seed_generator.state.value)
    x = np.random.default_rng(1).normal(size=(64, 32)).astype(layer.compute_dtype)
    y = layer(x) if training == "unset" else layer(x, training=training)
    assert keras.backend.standardize_dtype(y.dtype) == layer.compute_dtype
    np.testing.assert_array_equal(numpy(y), x)
    assert counter(layer) == 10
    np.testing.assert_array_equal(numpy(layer.seed_generator.state.value), seed_state)


# --- Training: drop fraction, scaling, mean ---------------------------------------


@pytest.mark.parametrize(
    "schedule, param, step",
    [
        ("exponential", 1e-3, 0),
        ("exponential", 1e-3, 300),
        ("exponential", 1e-3, 3000),
        ("linear", 100, 25),
        ("linear", 100, 70),
        ("linear", 100, 1000),
        ("constant", 0, 0),
    ],
)
def test_drop_fraction_matches_schedule(schedule, param, step):
    rate = 0.6
    layer = ScheduledDropout(rate, schedule=make_schedule(schedule, param), seed=7)
    layer.iterations.assign(step)
    x = np.ones((400, 500), dtype="float32")
    y = numpy(layer(x, training=True))
    assert counter(layer) == step + 1

    p = reference_rate(rate, schedule, param, step)
    n = x.size
    dropped = int((y == 0).sum())
    assert abs(dropped - n * p) <= SIGMAS * math.sqrt(n * p * (1 - p)), (dropped / n, p)
    if p == 0:
        assert dropped == 0
    np.testing.assert_allclose(y[y != 0], 1 / (1 - p), rtol=1e-6)


def test_mean_is_preserved_by_the_scaling():
    p = 0.7
    layer = ScheduledDropout(p, schedule="constant", seed=11)
    x = np.random.default_rng(2).normal(2.0, 1.0, size=(500, 400)).astype("float32")
    y = numpy(layer(x, training=True))
    kept = y != 0
    # Every kept element is scaled by exactly 1 / (1 - p).
    np.testing.assert_allclose(y[kept], x[kept] / (1 - p), rtol=1e-6)
    # E[y] = mean(x), Var(y_i) = x_i**2 * p / (1 - p).
    x64 = x.astype(np.float64)
    sd = math.sqrt((x64**2).sum() * p / (1 - p)) / x.size
    assert abs(y.astype(np.float64).mean() - x64.mean()) <= SIGMAS * sd
    # Without the scaling the mean would be (1 - p) * mean(x): far outside.
    assert abs((1 - p) * x64.mean() - x64.mean()) > 100 * sd


def test_seeds_reproduce_and_differ():
    x = np.ones((50, 40), dtype="float32")

    def mask(seed):
        layer = ScheduledDropout(0.5, schedule="constant", seed=seed)
        return [numpy(layer(x, training=True)) == 0 for _ in range(2)]

    first, again, other = mask(1), mask(1), mask(2)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], first[1])  # a new mask every batch
    assert not np.array_equal(first[0], other[0])
    assert (first[0] != other[0]).mean() > 0.3  # independent masks differ in ~half


def test_mixed_precision_training_call():
    layer = ScheduledDropout(0.5, schedule="constant", seed=5, dtype="mixed_float16")
    x = np.full((100, 100), 1.5, dtype="float32")
    y = layer(x, training=True)
    assert keras.backend.standardize_dtype(y.dtype) == "float16"
    assert keras.backend.standardize_dtype(layer.current_rate.dtype) == "float32"
    y = numpy(y)
    np.testing.assert_allclose(y[y != 0], 3.0, rtol=1e-3)
    assert counter(layer) == 1


# --- Schedules ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "schedule, param, steps",
    [
        # 1 - exp(-gamma) in float32 would be 6e-5 off at step 1; expm1 is exact.
        ("exponential", 1e-3, [0, 1, 10, 693, 1000, 4605, 10**6]),
        ("exponential", 0.5, [0, 1, 2, 40]),
        ("linear", 100, [0, 1, 25, 99, 100, 101, 10**6]),
        ("linear", 0, [0, 1, 1000]),
        ("constant", 0, [0, 1, 10**6]),
    ],
)
def test_schedule_values_match_closed_form(schedule, param, steps):
    rate = 0.4
    layer = ScheduledDropout(rate, schedule=make_schedule(schedule, param))
    for step in steps:
        layer.iterations.assign(step)
        expected = reference_rate(rate, schedule, param, step)
        np.testing.assert_allclose(float(layer.current_rate), expected, rtol=1e-6, atol=1e-9)


def test_schedule_names_use_default_parameters():
    for name, cls in [
        ("exponential", ExponentialRampSchedule),
        ("linear", LinearWarmupSchedule),
        ("constant", ConstantSchedule),
    ]:
        layer = ScheduledDropout(0.5, schedule=name)
        assert type(layer.schedule) is cls
        assert layer.schedule.get_config() == cls().get_config()
    assert ExponentialRampSchedule().gamma == 1e-3
    assert LinearWarmupSchedule().warmup_steps == 1000
    layer = ScheduledDropout(0.5)
    layer.iterations.assign(1000)
    np.testing.assert_allclose(float(layer.current_rate), 0.5 * -math.expm1(-1.0), rtol=1e-6)


@given(
    schedule=st.sampled_from(["exponential", "linear"]),
    param=st.sampled_from([1e-4, 1e-2, 1.0, 7, 1000]),
    steps=st.tuples(st.integers(0, 10**7), st.integers(0, 10**7)).map(sorted),
)
def test_schedules_rise_monotonically_within_target(schedule, param, steps):
    if schedule == "linear":
        param = int(param) if param >= 1 else 1
    rate = 0.3
    layer = ScheduledDropout(rate, schedule=make_schedule(schedule, param))
    rates = []
    for step in steps:
        layer.iterations.assign(step)
        rates.append(float(layer.current_rate))
    assert 0.0 <= rates[0] <= rates[1] <= np.float32(rate)


def test_custom_registered_schedule():
    layer = ScheduledDropout(0.8, schedule=Cosine(steps=10), seed=2)
    layer.iterations.assign(5)
    np.testing.assert_allclose(float(layer.current_rate), 0.4, rtol=1e-6)
    clone = assert_config_roundtrip(layer)
    assert isinstance(clone.schedule, Cosine) and clone.schedule.steps == 10


@pytest.mark.parametrize("step, fraction", [(0, 0.0), (3, 1.0)])
def test_a_schedule_outside_0_1_is_clipped(step, fraction):
    """DropoutSchedule's promise: the layer drops `rate * clip(schedule(step), 0, 1)`, so
    the rate never leaves [0, rate]. The schedule gives -0.5 at step 0 and 2.5 at step 3:
    no drop at all, then exactly `rate`."""
    rate = 0.6
    layer = ScheduledDropout(rate, schedule=Overshoot(scale=1.0, shift=0.5), seed=5)
    layer.iterations.assign(step)
    assert float(layer.current_rate) == pytest.approx(rate * fraction)
    x = np.ones((400, 500), dtype="float32")
    y = numpy(layer(x, training=True))
    p, n = rate * fraction, x.size
    dropped = int((y == 0).sum())
    if p == 0:
        np.testing.assert_array_equal(y, x)
    else:
        assert abs(dropped - n * p) <= SIGMAS * math.sqrt(n * p * (1 - p)), (dropped / n, p)
        np.testing.assert_allclose(y[y != 0], 1 / (1 - p), rtol=1e-6)


# --- The counter ------------------------------------------------------------------


def test_counter_moves_only_in_training_calls():
    layer = ScheduledDropout(0.5, seed=1)
    x = np.ones((3, 4), dtype="float32")
    assert layer.iterations in layer.non_trainable_weights
    assert not layer.iterations.trainable
    for _ in range(3):
        layer(x)
        layer(x, training=False)
    assert counter(layer) == 0
    for _ in range(4):
        layer(x, training=True)
    assert counter(layer) == 4
    layer(x, training=False)
    assert counter(layer) == 4


def test_stateless_call_returns_the_new_count():
    # The form JAX's trainer uses: state in, new state out, the layer untouched.
    layer = ScheduledDropout(0.5, schedule="constant", seed=1)
    x = np.ones((20, 30), dtype="float32")
    state = [v.value for v in layer.non_trainable_variables]
    index = [v.path for v in layer.non_trainable_variables].index(layer.iterations.path)

    out, new_state = layer.stateless_call([], state, x, training=True)
    assert int(numpy(new_state[index])) == 1
    assert 0 < float((numpy(out) == 0).mean()) < 1
    out, again = layer.stateless_call([], new_state, x, training=True)
    assert int(numpy(again[index])) == 2
    out, same = layer.stateless_call([], again, x, training=False)
    assert int(numpy(same[index])) == 2
    np.testing.assert_array_equal(numpy(out), x)
    assert counter(layer) == 0


def test_counter_is_exact_past_float32_integers():
    layer = ScheduledDropout(0.5, schedule="linear")
    layer.iterations.assign(2**24)
    layer(np.ones((2, 2), dtype="float32"), training=True)
    assert counter(layer) == 2**24 + 1  # a float32 counter would stay at 2**24


def fit_and_count(jit_compile, steps_per_execution: int) -> None:
    layer = ScheduledDropout(0.5, seed=1)
    model = dropout_model(layer)
    model.compile(
        optimizer="sgd",
        loss="mse",
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )
    x, y = regression_data(70)  # 7 batches of 10: not a multiple of 3
    model.fit(x, y, batch_size=10, epochs=2, validation_data=(x[:20], y[:20]), verbose=0)
    assert counter(layer) == 14
    assert int(numpy(model.optimizer.iterations.value)) == 14
    model.evaluate(x, y, batch_size=10, verbose=0)
    model.predict(x, batch_size=10, verbose=0)
    model(x)
    assert counter(layer) == 14


def test_counter_counts_batches_in_fit():
    fit_and_count(jit_compile="auto", steps_per_execution=1)


@pytest.mark.backends(
    "tensorflow",
    "jax",
    reason="torch: Keras refuses steps_per_execution > 1 (torch.compile is checked "
    "by test_torch_compile_counts_steps_and_drops_at_the_scheduled_rate)",
)
@pytest.mark.parametrize("jit_compile", [False, True])
def test_counter_counts_batches_in_compiled_fit_with_steps_per_execution(jit_compile):
    fit_and_count(jit_compile=jit_compile, steps_per_execution=3)


def test_compiled_step_sees_the_current_count():
    # The fraction of zeros in the last batch shows the rate the compiled step
    # used: rate(13) after 14 batches, not rate(0) or a stale count.
    rate, warmup = 0.9, 14
    layer = ScheduledDropout(rate, schedule=LinearWarmupSchedule(warmup), seed=4)
    probe = ZeroFraction()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4000,)), layer, probe, keras.layers.Dense(1)])
    spe = 1 if BACKEND == "torch" else 3
    model.compile(optimizer="sgd", loss="mse", steps_per_execution=spe)
    x = np.ones((70, 4000), dtype="float32")
    model.fit(x, np.zeros((70, 1), "float32"), batch_size=10, epochs=2, verbose=0)
    assert counter(layer) == 14
    p = reference_rate(rate, "linear", warmup, 13)
    n = 10 * 4000
    tolerance = SIGMAS * math.sqrt(p * (1 - p) / n)
    assert abs(float(numpy(probe.fraction.value)) - p) <= tolerance
    assert abs(reference_rate(rate, "linear", warmup, 12) - p) > tolerance


# --- Once per training step, however many calls ------------------------------------


def shared_by_two_inputs(layer: ScheduledDropout, model_cls: type) -> tuple:
    """The layer applied to two inputs of one functional model: two calls per pass."""
    a, b = keras.Input((6,)), keras.Input((6,))
    joined = keras.layers.Concatenate()([layer(a), layer(b)])
    model = model_cls([a, b], keras.layers.Dense(1)(joined))
    x = np.random.default_rng(3).normal(size=(40, 6)).astype("float32")
    return model, [x, x], 2


def time_distributed(layer: ScheduledDropout, model_cls: type) -> tuple:
    """The layer wrapped in TimeDistributed over 5 time steps: five calls per pass."""
    inputs = keras.Input((5, 6))
    spread = keras.layers.TimeDistributed(layer)(inputs)
    model = model_cls(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(spread)))
    return model, np.random.default_rng(3).normal(size=(40, 5, 6)).astype("float32"), 5


def three_calls_in_call(layer: ScheduledDropout, model_cls: type) -> tuple:
    """A subclassed model whose `call` calls the layer three times."""

    class ThreeCalls(model_cls):
        def __init__(self):
            super().__init__()
            self.dropout = layer
            self.head = keras.layers.Dense(1)

        def call(self, x, training=False):
            dropped = [self.dropout(x, training=training) for _ in range(3)]
            return self.head(keras.ops.concatenate(dropped, axis=-1))

    return ThreeCalls(), np.random.default_rng(3).normal(size=(40, 6)).astype("float32"), 3


CONSTRUCTIONS = [shared_by_two_inputs, time_distributed, three_calls_in_call]
MODEL_CLASSES = [keras.Model, keras_extras.CustomModel]


@pytest.mark.parametrize("construction", CONSTRUCTIONS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("model_cls", MODEL_CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    "jit_compile",
    [
        False,
        pytest.param(
            True,
            marks=pytest.mark.backends(
                "tensorflow",
                "jax",
                reason="torch.compile takes minutes here; "
                "test_torch_compile_counts_steps_and_drops_at_the_scheduled_rate covers it",
            ),
        ),
    ],
)
def test_counter_advances_once_per_training_step(construction, model_cls, jit_compile):
    """Catches a counter that counts calls: 8, 20 or 12 after 4 steps instead of 4."""
    keras.utils.set_random_seed(0)
    layer = ScheduledDropout(0.5, schedule=LinearWarmupSchedule(100), seed=1)
    model, x, calls = construction(layer, model_cls)
    model.compile(optimizer="sgd", loss="mse", jit_compile=jit_compile)
    y = np.zeros((40, 1), dtype="float32")
    model.fit(x, y, batch_size=10, epochs=2, verbose=0)
    assert counter(layer) == 8, f"{calls} calls per step"
    np.testing.assert_allclose(float(layer.current_rate), 0.5 * 8 / 100, rtol=1e-6)
    model.evaluate(x, y, batch_size=10, verbose=0)
    model.predict(x, batch_size=10, verbose=0)
    assert counter(layer) == 8


@pytest.mark.parametrize("construction", CONSTRUCTIONS, ids=lambda f: f.__name__)
def test_every_call_in_one_pass_uses_the_pass_rate(construction):
    """Catches a later call of the pass reading the counter its earlier call advanced.

    With a warm-up of one step the first pass has rate 0: every call in it must
    return its input, although the counter is 1 after the first call.
    """
    layer = ScheduledDropout(0.9, schedule=LinearWarmupSchedule(1), seed=2)
    model, x, calls = construction(layer, keras.Model)
    model(x)  # build
    reference = numpy(model(x))  # inference: no dropout
    first = numpy(model(x, training=True))
    assert counter(layer) == 1, f"{calls} calls in one pass"
    np.testing.assert_allclose(first, reference, rtol=1e-6, atol=1e-6)
    second = numpy(model(x, training=True))
    assert counter(layer) == 2
    assert np.abs(second - reference).max() > 0.1  # rate 0.9 in the second pass


def test_each_outermost_call_is_a_pass_of_its_own():
    """The documented count: two top-level training calls add two."""
    layer = ScheduledDropout(0.5, seed=1)
    model, x, _ = shared_by_two_inputs(layer, keras.Model)
    model(x, training=True)
    model(x, training=True)
    assert counter(layer) == 2
    layer(x[0], training=True)
    assert counter(layer) == 3


class CallsInALoop(keras.Model):
    """Calls the layer in a `fori_loop` body, optionally once before the loop."""

    def __init__(self, layer, call_before_loop):
        super().__init__()
        self.dropout = layer
        self.call_before_loop = call_before_loop
        self.head = keras.layers.Dense(1)

    def call(self, x, training=False):
        if self.call_before_loop:
            x = self.dropout(x, training=training)
        x = keras.ops.fori_loop(0, 3, lambda i, h: self.dropout(h, training=training), x)
        return self.head(x)


@pytest.mark.parametrize("call_before_loop", [False, True])
def test_loop_bodies_count_as_documented(call_before_loop):
    """The docstring's exception for loop bodies compiled once, per backend."""
    x = np.ones((40, 4), dtype="float32")
    layer = ScheduledDropout(0.5, schedule="constant", seed=1)
    if BACKEND == "jax":
        import jax

        for stateful in (layer, keras.layers.Dropout(0.5, seed=1)):
            looping = CallsInALoop(stateful, call_before_loop)
            looping.compile(optimizer="sgd", loss="mse")
            with pytest.raises(jax.errors.UnexpectedTracerError):
                looping.fit(x, x[:, :1], verbose=0)
        return
    model = CallsInALoop(layer, call_before_loop)
    model.compile(optimizer="sgd", loss="mse")
    model.fit(x, np.zeros((40, 1), "float32"), batch_size=10, verbose=0)
    per_step = 3 if BACKEND == "tensorflow" and not call_before_loop else 1
    assert counter(layer) == 4 * per_step
    model(x, training=True)  # eagerly the loop runs in Python: one pass
    assert counter(layer) == 4 * per_step + 1


@pytest.mark.backends("torch", reason="jit_compile=True means torch.compile only on torch")
@OLD_KERAS_TORCH_JIT
@pytest.mark.parametrize("model_cls", MODEL_CLASSES, ids=lambda c: c.__name__)
def test_torch_compile_counts_steps_and_drops_at_the_scheduled_rate(model_cls):
    """`fit(jit_compile=True)` on torch: counter, drop fraction, identity at inference.

    The layer is shared by two inputs, and the probe sits behind its second call:
    a counter that counts calls ends at 8, and a second call that reads the
    advanced counter drops at rate(4) = 0.9 instead of rate(3) = 0.675.
    """
    rate, warmup = 0.9, 4
    keras.utils.set_random_seed(0)
    layer = ScheduledDropout(rate, schedule=LinearWarmupSchedule(warmup), seed=4)
    probe = ZeroFraction()
    a, b = keras.Input((500,)), keras.Input((500,))
    head = keras.layers.Dense(1)
    model = model_cls([a, b], head(keras.layers.Concatenate()([layer(a), probe(layer(b))])))
    model.compile(optimizer=keras.optimizers.SGD(1e-4), loss="mse", jit_compile=True)
    x = np.ones((40, 500), dtype="float32")
    model.fit([x, x], np.zeros((40, 1), "float32"), batch_size=10, epochs=1, verbose=0)
    assert counter(layer) == 4

    p = reference_rate(rate, "linear", warmup, 3)
    tolerance = SIGMAS * math.sqrt(p * (1 - p) / x[:10].size)
    assert abs(float(numpy(probe.fraction.value)) - p) <= tolerance
    assert abs(reference_rate(rate, "linear", warmup, 4) - p) > tolerance

    kernel, bias = (numpy(w).astype(np.float64) for w in head.weights)
    expected = np.concatenate([x, x], axis=1).astype(np.float64) @ kernel + bias
    np.testing.assert_allclose(model.predict([x, x], verbose=0), expected, rtol=1e-5)
    assert counter(layer) == 4


# --- Rate 1.0 ----------------------------------------------------------------------


class Zeros(keras.layers.Layer):
    """What dropout at rate 1 is: zeros, through which no gradient flows."""

    def call(self, x):
        return keras.ops.zeros_like(x)


def test_rate_one_trains_like_a_layer_of_zeros():
    """Catches a NaN gradient from 1 / (1 - rate) at rate 1, and any non-zero output.

    The reference is a layer of zeros, not `keras.layers.Dropout(1.0)`: on Keras
    3.10 that one trains its weights into NaN.
    """
    x, y = regression_data(40)

    def train(middle):
        model = dropout_model(middle)
        model.compile(optimizer="sgd", loss="mse")
        history = model.fit(x, y, batch_size=10, epochs=2, verbose=0)
        return model, history

    layer = ScheduledDropout(1.0, schedule="constant", seed=1)
    model, history = train(layer)
    reference, reference_history = train(Zeros())
    np.testing.assert_allclose(
        history.history["loss"], reference_history.history["loss"], rtol=1e-6
    )
    for w, r in zip(model.trainable_weights, reference.trainable_weights, strict=True):
        np.testing.assert_allclose(numpy(w), numpy(r), rtol=1e-6, atol=1e-7)
    assert counter(layer) == 8
    np.testing.assert_array_equal(numpy(layer(x, training=True)), np.zeros_like(x))
    np.testing.assert_array_equal(numpy(layer(x)), x)


def test_schedule_reaching_one_drops_everything():
    layer = ScheduledDropout(1.0, schedule=LinearWarmupSchedule(2), seed=1)
    x = np.ones((200, 100), dtype="float32")
    np.testing.assert_array_equal(numpy(layer(x, training=True)), x)  # rate 0
    half = numpy(layer(x, training=True))  # rate 0.5
    assert set(np.unique(half)) == {0.0, 2.0}
    for _ in range(2):  # rate 1, and it stays there
        np.testing.assert_array_equal(numpy(layer(x, training=True)), np.zeros_like(x))
    assert float(layer.current_rate) == 1.0


# --- noise_shape -------------------------------------------------------------------


@pytest.mark.parametrize(
    "noise_shape, shared_axes",
    [
        ((None, 1, None), (1,)),
        ((60, 1, 40), (1,)),
        ([None, None, 1], (2,)),
        ((None, 1, 1), (1, 2)),
        ((None, None, None), ()),
    ],
)
def test_noise_shape_drops_together_along_size_one_axes(noise_shape, shared_axes):
    p = 0.4
    layer = ScheduledDropout(0.8, schedule=Cosine(steps=10), seed=6, noise_shape=noise_shape)
    layer.iterations.assign(5)  # rate 0.8 * 0.5
    x = np.random.default_rng(4).uniform(1, 2, size=(60, 7, 40)).astype("float32")
    y = numpy(layer(x, training=True))
    dropped = y == 0
    for axis in shared_axes:
        np.testing.assert_array_equal(
            dropped, np.take(dropped, [0], axis=axis).repeat(7 if axis == 1 else 40, axis=axis)
        )
    # One mask entry per element of the noise shape.
    mask = dropped
    for axis in shared_axes:
        mask = np.take(mask, [0], axis=axis)
    n = mask.size
    assert abs(int(mask.sum()) - n * p) <= SIGMAS * math.sqrt(n * p * (1 - p))
    if not shared_axes:
        assert not np.array_equal(dropped[:, 0], dropped[:, 1])
    np.testing.assert_allclose(y[~dropped], x[~dropped] / (1 - p), rtol=1e-6)


def test_noise_shape_with_unknown_batch_size_in_fit():
    """A None entry takes the batch size of each batch, also the short last one."""
    layer = ScheduledDropout(0.5, schedule="constant", seed=2, noise_shape=(None, 1, None))
    probe = ZeroFraction()

    class SharedOverTime(keras.layers.Layer):
        """Records how far the zeros differ from those of the first time step."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.mismatch = self.add_weight(shape=(), initializer="ones", trainable=False)

        def call(self, x, training=False):
            if training:
                zeros = keras.ops.cast(x == 0, "float32")
                self.mismatch.assign(keras.ops.max(keras.ops.abs(zeros - zeros[:, :1])))
            return x

    shared = SharedOverTime()
    inputs = keras.Input((6, 300))
    hidden = shared(probe(layer(inputs)))
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(hidden)))
    model.compile(optimizer="sgd", loss="mse")
    x = np.ones((25, 6, 300), dtype="float32")  # batches of 10, 10 and 5
    model.fit(x, np.zeros((25, 1), "float32"), batch_size=10, verbose=0)
    assert counter(layer) == 3
    assert float(numpy(shared.mismatch.value)) == 0.0
    n = 5 * 300  # the last batch's mask entries
    assert abs(float(numpy(probe.fraction.value)) - 0.5) <= SIGMAS * math.sqrt(0.25 / n)


@pytest.mark.parametrize("noise_shape", [(None, 2, None), (None, 1), (4, 1, 5, 1)])
def test_noise_shape_that_does_not_fit_the_input_raises(noise_shape):
    layer = ScheduledDropout(0.5, noise_shape=noise_shape, name="my_dropout")
    with pytest.raises(ValueError, match=r"'my_dropout'.*noise_shape=.*input shape \(4, 3, 5\)"):
        layer(np.ones((4, 3, 5), "float32"), training=True)


# --- Loading weights saved with a plain Dropout ------------------------------------


@pytest.mark.parametrize("filename", ["model.weights.h5", "model.keras"])
def test_loading_weights_saved_with_keras_dropout(tmp_path, filename):
    """Catches the bare KeyError: 'seed_generator_state'."""
    x, y = regression_data(40)
    source = dropout_model(keras.layers.Dropout(0.5, seed=1))
    source.compile(optimizer="sgd", loss="mse")
    source.fit(x, y, batch_size=10, verbose=0)
    path = str(tmp_path / filename)
    if filename.endswith(".keras"):
        source.save(path)
    else:
        source.save_weights(path)

    layer = ScheduledDropout(0.5, seed=1, name="curriculum")
    target = dropout_model(layer)
    layer.iterations.assign(9)
    seed_state = numpy(layer.seed_generator.state.value)
    with pytest.warns(UserWarning, match=r"Layer 'curriculum'.*no state.*Dropout.*starts again"):
        target.load_weights(path)
    assert counter(layer) == 0
    np.testing.assert_array_equal(numpy(layer.seed_generator.state.value), seed_state)
    for loaded, saved in zip(target.trainable_weights, source.trainable_weights, strict=True):
        np.testing.assert_array_equal(numpy(loaded), numpy(saved))
    np.testing.assert_allclose(
        target.predict(x, verbose=0), source.predict(x, verbose=0), rtol=1e-6
    )


def test_loading_other_state_raises_naming_the_layer():
    layer = ScheduledDropout(0.5, name="curriculum")
    with pytest.raises(ValueError, match=r"Layer 'curriculum'.*\['0', 'moving_mean'\]"):
        layer.load_own_variables({"0": np.zeros(()), "moving_mean": np.zeros(3)})
    assert counter(layer) == 0


# --- Inside models ---------------------------------------------------------------


def digits_training(model_cls) -> None:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    keras.utils.set_random_seed(0)
    layer = ScheduledDropout(0.5, schedule=LinearWarmupSchedule(30), seed=0)
    inputs = keras.Input((64,))
    hidden = keras.layers.Dense(32, activation="relu")(inputs)
    outputs = keras.layers.Dense(10, activation="softmax")(layer(hidden))
    model = model_cls(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(0.02),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    history = model.fit(x, y, batch_size=128, epochs=3, verbose=0)
    steps = math.ceil(len(x) / 128)
    assert counter(layer) == 3 * steps
    losses = history.history["loss"]
    assert losses[0] > losses[1] > losses[2]
    loss, accuracy = model.evaluate(x, y, verbose=0)
    assert accuracy > 0.85
    assert counter(layer) == 3 * steps


def test_trains_inside_keras_model():
    digits_training(keras.Model)


def test_trains_inside_subclassed_keras_model():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.hidden = keras.layers.Dense(16)
            self.dropout = ScheduledDropout(0.3, schedule="constant", seed=0)
            self.out = keras.layers.Dense(1)

        def call(self, x, training=False):
            return self.out(self.dropout(self.hidden(x), training=training))

    keras.utils.set_random_seed(0)
    model = Net()
    model.compile(optimizer="sgd", loss="mse")
    x, y = regression_data(64)
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, batch_size=16, epochs=5, verbose=0)
    assert model.evaluate(x, y, verbose=0) < before
    assert counter(model.dropout) == 20


def test_trains_inside_custom_model():
    digits_training(keras_extras.CustomModel)


# --- Saving and resuming ----------------------------------------------------------


def test_save_load_restores_counter_and_random_state(tmp_path):
    layer = ScheduledDropout(0.5, schedule=Cosine(steps=8), seed=9)
    model = dropout_model(layer)
    x = np.ones((6, 4), dtype="float32")
    for _ in range(5):
        model(x, training=True)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    restored = loaded.layers[1]
    assert isinstance(restored.schedule, Cosine) and restored.schedule.steps == 8
    assert counter(restored) == 5
    np.testing.assert_allclose(float(restored.current_rate), float(layer.current_rate))
    # The same random stream continues: the next masks are the original's next masks.
    np.testing.assert_array_equal(numpy(restored(x, training=True)), numpy(layer(x, training=True)))


def test_resumed_training_continues_the_schedule(tmp_path):
    layer = ScheduledDropout(0.5, schedule=LinearWarmupSchedule(20), seed=3)
    model = dropout_model(layer)
    model.compile(optimizer="sgd", loss="mse")
    x, y = regression_data(70)
    model.fit(x, y, batch_size=10, epochs=1, shuffle=False, verbose=0)
    path = str(tmp_path / "half.keras")
    model.save(path)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)

    # Uninterrupted: the same model trains on in this process.
    model.fit(x, y, batch_size=10, epochs=1, shuffle=False, verbose=0)
    assert counter(layer) == 14

    out = run_in_fresh_process(
        f"""
        import json, numpy as np, keras, keras_extras
        folder = {str(tmp_path)!r}
        model = keras.saving.load_model(folder + "/half.keras")
        layer = model.layers[1]
        before = int(keras.ops.convert_to_numpy(layer.iterations.value))
        x, y = np.load(folder + "/x.npy"), np.load(folder + "/y.npy")
        model.fit(x, y, batch_size=10, epochs=1, shuffle=False, verbose=0)
        np.savez(folder + "/resumed.npz", *[keras.ops.convert_to_numpy(w) for w in model.weights])
        print(json.dumps({{
            "before": before,
            "after": int(keras.ops.convert_to_numpy(layer.iterations.value)),
            "rate": float(layer.current_rate),
        }}))
        """
    )
    result = json.loads(out.strip().splitlines()[-1])
    assert result["before"] == 7
    assert result["after"] == 14
    np.testing.assert_allclose(result["rate"], reference_rate(0.5, "linear", 20, 14), rtol=1e-6)
    resumed = np.load(tmp_path / "resumed.npz")
    for i, weight in enumerate(model.weights):
        np.testing.assert_allclose(resumed[f"arr_{i}"], numpy(weight), rtol=1e-5, atol=1e-6)


# --- Distribution -----------------------------------------------------------------


@pytest.mark.backends(
    "tensorflow",
    reason="tf.distribute.MirroredStrategy exists only on the TensorFlow backend",
)
def test_counter_advances_once_per_global_step_under_mirrored_strategy():
    # Logical devices must be configured before TensorFlow initialises: a fresh
    # process. steps_per_execution stays 1: Keras 3 fails with > 1 under
    # MirroredStrategy even without this layer (keras-team/keras#19246).
    out = run_in_fresh_process(
        """
        import numpy as np
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2
        )
        import keras, keras_extras
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            layer = keras_extras.ScheduledDropout(
                0.5, schedule=keras_extras.LinearWarmupSchedule(20), seed=1
            )
            model = keras.Sequential([
                keras.Input((4,)), keras.layers.Dense(8), layer, keras.layers.Dense(1)
            ])
            model.compile(optimizer="sgd", loss="mse")
        x = np.random.default_rng(0).random((80, 4), dtype=np.float32)
        model.fit(x, x.sum(1, keepdims=True), batch_size=16, epochs=2, verbose=0)
        model.evaluate(x, x.sum(1, keepdims=True), batch_size=16, verbose=0)
        replicas = [int(v.numpy()) for v in layer.iterations.value.values]
        print(strategy.num_replicas_in_sync, int(model.optimizer.iterations.numpy()),
              *replicas, float(layer.current_rate))
        """
    )
    n_replicas, optimizer_steps, *per_replica, rate = out.split()
    assert int(n_replicas) == 2
    assert int(optimizer_steps) == 10  # 80 / 16 global batches, 2 epochs
    assert [int(c) for c in per_replica] == [10, 10]
    np.testing.assert_allclose(float(rate), 0.25, rtol=1e-6)


# --- Bad arguments ----------------------------------------------------------------


@pytest.mark.parametrize("rate", [-0.1, 1.0001, 1.5, float("nan"), "0.5", True, None])
def test_rate_outside_range_raises(rate):
    with pytest.raises(
        ValueError,
        match=r"Invalid value received for argument `rate`. Expected a float value "
        r"between 0 and 1. Received: rate=",
    ):
        ScheduledDropout(rate)


def test_unknown_schedule_name_raises():
    with pytest.raises(ValueError, match=r"Unknown schedule 'cosine'.*'constant'"):
        ScheduledDropout(0.5, schedule="cosine")


def test_lambda_schedule_raises():
    with pytest.raises(ValueError, match="Functions and lambdas cannot be saved"):
        ScheduledDropout(0.5, schedule=lambda step: 1.0)
    with pytest.raises(ValueError, match=r"`schedule` must be one of"):
        ScheduledDropout(0.5, schedule=3)


def test_unregistered_schedule_class_raises():
    class Unregistered(DropoutSchedule):
        def __call__(self, step):
            return keras.ops.ones(())

    with pytest.raises(ValueError, match="Unregistered is not registered"):
        ScheduledDropout(0.5, schedule=Unregistered())


@pytest.mark.parametrize("steps", [-1, -100, 2.5, "10", True])
def test_bad_warmup_steps_raise(steps):
    with pytest.raises(ValueError, match=r"`warmup_steps` must be an integer >= 0.*warmup_steps="):
        LinearWarmupSchedule(warmup_steps=steps)


@pytest.mark.parametrize("gamma", [0, -0.5, float("inf"), float("nan"), "fast"])
def test_bad_gamma_raises(gamma):
    with pytest.raises(ValueError, match=r"`gamma` must be a finite number > 0.*gamma="):
        ExponentialRampSchedule(gamma=gamma)


def test_base_schedule_must_be_implemented():
    with pytest.raises(NotImplementedError, match="DropoutSchedule must implement"):
        DropoutSchedule()(0)
