"""The one test harness every component's tests call.

It checks what every public object promises: a complete `get_config`, a round trip
through `from_config` and through a `.keras` file loaded in a fresh process.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import keras

BACKEND = keras.backend.backend()


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
    missing = [name for name in constructor_arguments(type(obj)) if name not in config]
    assert not missing, f"{type(obj).__name__}.get_config() lacks {missing}"
    json.dumps(keras.saving.serialize_keras_object(obj))  # must be JSON-able
    clone = type(obj).from_config(config)
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
