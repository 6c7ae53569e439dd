"""The package's promises about itself: dependencies, layout and Keras 3 only."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import keras_extras

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "keras_extras"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_runtime_dependencies_are_keras_and_numpy_only():
    names = {
        re.split(r"[<>=!~\[ ;]", dep, maxsplit=1)[0] for dep in PYPROJECT["project"]["dependencies"]
    }
    assert names == {"keras", "numpy"}
    assert any(dep.startswith("keras>=3.") for dep in PYPROJECT["project"]["dependencies"])


def test_backend_and_tool_extras_exist():
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert {"tensorflow", "jax", "torch", "plot", "test", "docs", "dev"} <= set(extras)
    assert PYPROJECT["project"]["name"] == "keras-extras"
    assert PYPROJECT["build-system"]["build-backend"] == "hatchling.build"


def test_source_uses_keras_3_only():
    forbidden = re.compile(r"tf\.keras|tf_keras|from tensorflow import keras")
    module_level_backend = re.compile(r"^(import|from) (tensorflow|jax|torch)\b", re.M)
    steps = SRC / "_steps"
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        assert not forbidden.search(text), f"{path} reaches tf.keras"
        # The per-backend modules in _steps/ are the one place for backend code; the
        # dispatcher imports each only when that backend is in use.
        if path.parent != steps or path.name == "__init__.py":
            assert not module_level_backend.search(text), f"{path} imports a backend"
    for path in SRC.rglob("*.py"):
        if path.parent == steps:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in getattr(node, "names", [])] if isinstance(node, ast.Import) else []
            )
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            backends = [n for n in names if n.split(".")[0] in ("tensorflow", "jax", "torch")]
            assert not backends, f"{path.name}:{node.lineno} imports {backends} outside _steps/"


def test_steps_import_nothing_above_them():
    """`_steps/` is CustomModel's dispatch: the model is an argument, never an import.

    Catches an arrow back up, such as a step module importing `keras_extras.models`
    (at module level or inside a function) to compare a method with CustomModel's.
    """
    allowed = {"keras_extras._steps", "keras_extras._keras_internals"}
    for path in sorted((SRC / "_steps").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: `.` is keras_extras._steps, `..` keras_extras
                    package = ["keras_extras", "_steps"][: 3 - node.level]
                    base = ".".join(package + ([base] if base else []))
                modules = [
                    f"{base}.{a.name}" if base == "keras_extras" else base for a in node.names
                ]
            else:
                continue
            above = [m for m in modules if m.split(".")[0] == "keras_extras" and m not in allowed]
            assert not above, f"_steps/{path.name}:{node.lineno} imports {above}"


def test_version_matches_pyproject():
    assert keras_extras.__version__ == PYPROJECT["project"]["version"]


def test_constraints_pin_the_test_environment():
    pins = dict(
        line.split("==", 1)
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line
    )
    assert pins.get("torch") == "2.13.0"
    for name in ("keras", "numpy", "jax", "hypothesis", "pytest", "scikit-learn"):
        assert name in pins or name.replace("-", "_") in pins, name


def _pins(name: str) -> dict[str, str]:
    lines = (ROOT / name).read_text().splitlines()
    return dict(line.split("==", 1) for line in lines if "==" in line and not line.startswith("#"))


def test_oldest_constraints_pin_keras_at_the_floor_and_nothing_else_apart():
    newest, oldest = _pins("constraints.txt"), _pins("constraints-oldest.txt")
    floors = [d for d in PYPROJECT["project"]["dependencies"] if d.startswith("keras>=")]
    floor = floors[0].removeprefix("keras>=").split(",")[0]
    assert oldest["keras"] == (floor if floor.count(".") == 2 else f"{floor}.0")
    assert "tensorflow_cpu" not in oldest  # TensorFlow 2.21 needs keras>=3.12
    different = {k for k in oldest if k != "keras" and oldest[k] != newest.get(k)}
    assert not different, f"constraints-oldest.txt disagrees with constraints.txt on {different}"
