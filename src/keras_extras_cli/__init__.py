"""The `keras-extras` command, also run as `python -m keras_extras_cli`.

Keras reads its backend once, when it is first imported, and `import keras_extras`
imports Keras. So the command lives outside the `keras_extras` package: it reads
its arguments, checks the data and the output folder, and picks the backend with
nothing heavier than NumPy imported; only then does it import Keras. `--help` and
every bad argument return before any backend is imported.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

# keras_extras._steps.SUPPORTED_BACKENDS, which imports Keras; a test keeps the two equal.
BACKENDS = ("tensorflow", "jax", "torch")


class UsageError(Exception):
    """A bad argument: reported on one line, with exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, no usage block: the message names the bad argument.
        self.exit(2, f"{self.prog}: error: {message}\n")


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def _positive_int(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seed(text: str) -> int:
    value = _integer(text)
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be in [0, 2**32), got {value}")
    return value


def _parser() -> _Parser:
    parser = _Parser(prog="keras-extras", description="keras_extras command line.")
    commands = parser.add_subparsers(title="commands", required=True, dest="command")
    demo = commands.add_parser(
        "demo",
        help="train a digits classifier with keras_extras' components",
        description="Trains a small digits classifier with keras_extras' components "
        "(CustomModel, ScheduledDropout, RMSE, TrainingPlotter), prints train, "
        "validation and test results, and checks the reloaded checkpoint. Everything "
        "it writes goes under --out.",
    )
    demo.add_argument(
        "--backend",
        choices=BACKENDS,
        help="Keras backend (default: $KERAS_BACKEND, else the one in Keras's "
        "keras.json if installed, else the first installed of " + ", ".join(BACKENDS) + ")",
    )
    demo.add_argument(
        "--epochs",
        type=_positive_int,
        default=15,
        metavar="N",
        help="most epochs to train (default: 15)",
    )
    demo.add_argument(
        "--data",
        type=Path,
        metavar="PATH",
        help="an mnist.npz as keras.datasets.mnist saves it (default: scikit-learn's digits)",
    )
    demo.add_argument("--seed", type=_seed, default=0, metavar="N", help="random seed (default: 0)")
    demo.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        default=Path("keras-extras-demo"),
        help="folder for everything the demo writes (default: ./keras-extras-demo/)",
    )
    return parser


def keras_config_path() -> Path:
    """Where Keras reads its `keras.json`: `$KERAS_HOME`, else `~/.keras` (or `/tmp/.keras`).

    Returns:
        The path, as `keras/src/backend/config.py` computes it (Keras 3.10 to 3.15).
    """
    if "KERAS_HOME" in os.environ:
        return Path(os.environ["KERAS_HOME"]).expanduser() / "keras.json"
    home = os.path.expanduser("~")
    base = home if os.access(home, os.W_OK) else "/tmp"
    return Path(base) / ".keras" / "keras.json"


def _installed(backend: str) -> bool:
    # Finds the package without importing it: importing TensorFlow takes seconds.
    return importlib.util.find_spec(backend) is not None


def _configured_backend(path: Path) -> str | None:
    try:
        backend = json.loads(path.read_text(encoding="utf-8")).get("backend")
    except (OSError, ValueError, AttributeError):
        return None  # Keras itself falls back to its default on a missing or bad file.
    return backend if isinstance(backend, str) else None


def choose_backend(requested: str | None) -> tuple[str, str | None]:
    """The Keras backend to run on, and a note to print when the user did not choose it.

    The order: `requested` (from `--backend`), else `$KERAS_BACKEND`, else the
    backend in Keras's `keras.json` if it is installed, else the first installed of
    tensorflow, jax and torch.

    Args:
        requested: The `--backend` argument, or None.

    Returns:
        `(backend, note)`; `note` is None when `--backend`, `KERAS_BACKEND` or
        `keras.json` chose the backend, else it says which one was picked and why.

    Raises:
        UsageError: if the chosen backend is not installed (the message names the
            extra to install), if `KERAS_BACKEND` names no backend the demo runs on,
            or if no backend is installed.
    """
    source = "--backend"
    if requested is None and os.environ.get("KERAS_BACKEND"):
        requested, source = os.environ["KERAS_BACKEND"], "KERAS_BACKEND"
    if requested is not None:
        if requested not in BACKENDS:
            raise UsageError(
                f"{source}={requested!r} is not a backend the demo trains on; "
                f"choose one of {', '.join(BACKENDS)}"
            )
        if not _installed(requested):
            raise UsageError(
                f"the {requested} backend ({source}) is not installed: "
                f'pip install "keras-extras[{requested}]"'
            )
        return requested, None
    config = keras_config_path()
    configured = _configured_backend(config)
    if configured in BACKENDS and _installed(configured):
        return configured, None
    first = next((backend for backend in BACKENDS if _installed(backend)), None)
    if first is None:
        raise UsageError(
            'no Keras backend is installed: pip install "keras-extras[jax]" '
            "(or [tensorflow], or [torch])"
        )
    why = (
        f"{config} names {configured!r}, which is not installed"
        if configured
        else ("neither --backend nor KERAS_BACKEND is set")
    )
    return first, (
        f"keras-extras: using {first}, the first installed of {', '.join(BACKENDS)} "
        f"({why}); choose with --backend or KERAS_BACKEND"
    )


# absl's log lines below ERROR, and the note that absl prints before the first of them.
_ABSL_NOTICE = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\)"
    rb"|[IW]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] )"
)


@contextlib.contextmanager
def quiet_tensorflow() -> Iterator[None]:
    """Silences TensorFlow's C++ logging, unless the user set `TF_CPP_MIN_LOG_LEVEL`.

    `TF_CPP_MIN_LOG_LEVEL=3` silences what TensorFlow logs once it runs. But when it
    is imported, TensorFlow 2.21 prints its oneDNN and CUDA notices through absl
    before it reads that level (twice, and whatever the level), and Keras imports it
    wherever it is installed, on any backend (`keras.utils.set_random_seed` seeds it
    too). So inside this context, what is written to stderr goes to a temporary file,
    and is written out at the end without absl's info and warning lines; errors and
    Python's warnings stay.
    """
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        yield
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    sys.stderr.flush()
    stderr = os.dup(2)
    try:
        with tempfile.TemporaryFile() as capture:
            os.dup2(capture.fileno(), 2)  # the file descriptor: C++ code writes there
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(stderr, 2)
                capture.seek(0)
                kept = b"".join(line for line in capture if not _ABSL_NOTICE.match(line))
                if kept:
                    os.write(2, kept)
    finally:
        os.close(stderr)


def main(argv: list[str] | None = None) -> int:
    """Runs the `keras-extras` command line.

    Args:
        argv: The arguments after the program name; `sys.argv[1:]` by default.

    Returns:
        The exit code: 0 on success, 1 if the demo's reloaded checkpoint disagrees
        with the trained model or a package it needs is missing, 2 for a bad
        argument (with a one-line message on stderr).
    """
    args = _parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    from keras_extras_cli.data import load_data, writable_folder  # NumPy: not for --help

    try:
        backend, note = choose_backend(args.backend)
        if importlib.util.find_spec("matplotlib") is None:
            raise ImportError(
                'the training plot needs matplotlib: pip install "keras-extras[demo]"'
            )
        data = load_data(args.data, args.seed)
        out = writable_folder(args.out)  # last: a bad argument leaves no folder behind
    except UsageError as error:
        _error(str(error))
        return 2
    except ImportError as error:
        _error(str(error))
        return 1
    if note:
        print(note, file=sys.stderr)
    os.environ["KERAS_BACKEND"] = backend
    with quiet_tensorflow():
        from keras_extras import demo  # imports Keras, which reads KERAS_BACKEND now

        return demo.run(data, out, epochs=args.epochs, seed=args.seed)


def _error(message: str) -> None:
    print(f"keras-extras demo: error: {message}", file=sys.stderr)
