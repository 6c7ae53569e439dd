"""The one door to what Keras does not promise: private names and version differences.

Every function here relies on something that a Keras release may change. Each says
what it relies on and the Keras versions it was checked on; everything else in
keras_extras uses public `keras.*` API only (tests/test_keras_internals.py checks it).
When a new Keras breaks one of these, it is fixed here, once.

Checked on: Keras 3.10.0 (the floor in pyproject.toml, `make test-oldest`) and 3.15.1
(constraints.txt).
"""

from __future__ import annotations

import re
from typing import Any

import keras


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


KERAS_VERSION = _version(keras.version())


def batch_end(batch: int, model: Any) -> int:
    """How many training steps of the epoch are done when `on_train_batch_end(batch)` runs.

    Relies on: Keras 3.11 and later pass `on_train_batch_end` the 0-based index of the
    last step of an execution of `steps_per_execution` steps; Keras 3.10 passed the
    first (`EpochIterator` yielded the begin step only). The last execution of an
    epoch may be shorter, so the result may overshoot the epoch's step count.
    Checked on 3.10.0 and 3.15.1.

    Args:
        batch: The index Keras passed.
        model: The model being trained (for its `steps_per_execution`).

    Returns:
        The number of steps done, as Keras would count them after the execution.
    """
    if KERAS_VERSION >= (3, 11):
        return batch + 1
    return batch + (getattr(model, "steps_per_execution", None) or 1)
