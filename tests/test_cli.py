"""The `keras-extras` command line: backend choice, and arguments read before any import."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import keras
import pytest

import keras_extras_cli
from keras_extras_cli import UsageError, choose_backend, main, quiet_tensorflow

BACKEND = keras.backend.backend()
SRC = Path(keras_extras_cli.__file__).resolve().parents[1]
HEAVY = ("keras", "keras_extras", "tensorflow", "jax", "torch", "sklearn", "matplotlib")


def python(code: str, **environ: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(SRC), **environ)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env
    )


def test_help_and_bad_arguments_import_no_backend(tmp_path):
    probe = f"""
import json, sys
from keras_extras_cli import main
codes = []
for argv in (
    ["--help"], ["demo", "--help"], ["--nosuch"], ["demo", "--epochs", "0"],
    ["demo", "--backend", "theano"], ["demo", "--data", "missing.npz"],
):
    try:
        codes.append(main(argv))
    except SystemExit as exit:
        codes.append(exit.code)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
print("RESULT", json.dumps([codes, loaded]))
"""
    proc = python(probe, KERAS_BACKEND=BACKEND)
    assert proc.returncode == 0, proc.stderr
    codes, loaded = json.loads(proc.stdout.split("RESULT ")[-1])
    assert codes == [0, 0, 2, 2, 2, 2]
    assert loaded == []
    assert proc.stderr.count("\n") == 4  # one line per bad argument


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    return tmp_path


def _configure(keras_home: Path, backend: str) -> None:
    (keras_home / "keras.json").write_text(json.dumps({"backend": backend, "floatx": "float32"}))


def _uninstall(monkeypatch, *modules: str) -> None:
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)  # find_spec then answers None


def _only_installed(monkeypatch, *backends: str) -> None:
    """Makes `find_spec` find these backends and no other, whichever are installed.

    The command line only looks for a backend's package and never imports it, so a
    stand-in module with a spec does; an installed backend is left as it is.
    """
    for backend in ("tensorflow", "jax", "torch"):
        if backend not in backends:
            _uninstall(monkeypatch, backend)
        elif importlib.util.find_spec(backend) is None:
            stand_in = types.ModuleType(backend)
            stand_in.__spec__ = importlib.machinery.ModuleSpec(backend, None)
            monkeypatch.setitem(sys.modules, backend, stand_in)


def test_the_command_line_offers_the_backends_custommodel_has_steps_for():
    # Two tuples, one list: the command line must not import Keras (its --help
    # imports no backend), and everything under keras_extras does.
    from keras_extras._steps import SUPPORTED_BACKENDS

    assert keras_extras_cli.BACKENDS == SUPPORTED_BACKENDS


def test_backend_flag_then_environment_then_config_file(keras_home, monkeypatch):
    _only_installed(monkeypatch, "jax", "torch")
    _configure(keras_home, "torch")
    assert choose_backend("jax") == ("jax", None)
    assert choose_backend(None) == ("torch", None)
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert choose_backend(None) == ("jax", None)
    _configure(keras_home, "jax")
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    assert choose_backend(None) == ("torch", None)
    assert choose_backend("jax") == ("jax", None)


def test_first_installed_backend_is_picked_and_named(keras_home, monkeypatch):
    _only_installed(monkeypatch, "tensorflow", "jax", "torch")
    # No keras.json: the first installed (TensorFlow, the default Keras itself picks).
    backend, note = choose_backend(None)
    assert backend == "tensorflow"
    assert note.startswith("keras-extras: using tensorflow, the first installed of ")
    assert "neither --backend nor KERAS_BACKEND is set" in note
    # keras.json names a backend that is not installed (as after Keras's first import).
    _configure(keras_home, "tensorflow")
    _uninstall(monkeypatch, "tensorflow")
    backend, note = choose_backend(None)
    assert backend == "jax"
    assert f"{keras_home / 'keras.json'} names 'tensorflow', which is not installed" in note
    _uninstall(monkeypatch, "jax")
    assert choose_backend(None)[0] == "torch"
    assert "\n" not in note


@pytest.mark.parametrize(
    "requested, environment, expected",
    [
        (
            "jax",
            None,
            'the jax backend (--backend) is not installed: pip install "keras-extras[jax]"',
        ),
        (
            None,
            "jax",
            'the jax backend (KERAS_BACKEND) is not installed: pip install "keras-extras[jax]"',
        ),
        (None, "numpy", "KERAS_BACKEND='numpy' is not a backend the demo trains on"),
    ],
)
def test_unusable_backend_is_a_usage_error(
    keras_home, monkeypatch, requested, environment, expected
):
    _uninstall(monkeypatch, "jax")
    if environment:
        monkeypatch.setenv("KERAS_BACKEND", environment)
    with pytest.raises(UsageError) as info:
        choose_backend(requested)
    assert expected in str(info.value)


def test_no_backend_installed(keras_home, monkeypatch):
    _uninstall(monkeypatch, "tensorflow", "jax", "torch")
    with pytest.raises(
        UsageError, match=r'no Keras backend is installed: pip install "keras-extras\[jax\]"'
    ):
        choose_backend(None)


def test_missing_backend_is_one_line_and_exit_2(keras_home, monkeypatch, capsys, tmp_path):
    _uninstall(monkeypatch, "torch")
    assert main(["demo", "--backend", "torch", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == (
        "keras-extras demo: error: the torch backend (--backend) is not installed: "
        'pip install "keras-extras[torch]"\n'
    )
    assert not (tmp_path / "out").exists()


# As TensorFlow 2.21 prints them on import, before it reads TF_CPP_MIN_LOG_LEVEL.
ABSL_LINES = (
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    b"I0000 00:00:1796408389.821060    9100 port.cc:153] oneDNN custom operations are on.\n"
    b"I0000 00:00:1796410490.067866    7703 cudart_stub.cc:31] Could not find cuda drivers\n"
    b"W1204 18:17:27.123456    7703 cpu_feature_guard.cc:227] some warning\n"
)
KEPT = b"E0000 00:00:1796410499.231725    7703 cuda_platform.cc:52] failed call\nfrom Python\n"


def test_tensorflow_logging_is_silenced_unless_the_user_set_it(monkeypatch, capfd):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    with quiet_tensorflow():
        os.write(2, ABSL_LINES + KEPT)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"
    assert capfd.readouterr().err.encode() == KEPT
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    with quiet_tensorflow():
        os.write(2, ABSL_LINES + KEPT)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"
    assert capfd.readouterr().err.encode() == ABSL_LINES + KEPT


def test_import_keras_extras_imports_nothing_beyond_keras():
    # Off TensorFlow, `import tensorflow` fails in the probe, as where it is not installed
    # (tests_install/ checks environments that really lack it).
    block = "sys.modules['tensorflow'] = None" if BACKEND != "tensorflow" else ""
    probe = f"""
import sys
{block}
import {{}}
print("\\n".join(sorted(name for name, module in sys.modules.items() if module)))
"""
    loaded = {}
    for module in ("keras", "keras_extras"):
        proc = python(probe.format(module), KERAS_BACKEND=BACKEND)
        assert proc.returncode == 0, proc.stderr[-3000:]
        loaded[module] = set(proc.stdout.split())
    extra = {
        m
        for m in loaded["keras_extras"] - loaded["keras"]
        if m.split(".")[0] not in ("keras_extras", "keras_extras_core")
    }
    assert extra == set()
    assert "keras_extras.metrics" in loaded["keras_extras"]  # the probe imported it
    if BACKEND != "tensorflow":
        assert "tensorflow" not in loaded["keras_extras"]
