"""The package's promises about itself: dependencies, layout and Keras 3 only."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

import keras_extras

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "keras_extras"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DEPENDENCIES = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
EXTRAS = {
    extra: [Requirement(r) for r in requirements]
    for extra, requirements in PYPROJECT["project"]["optional-dependencies"].items()
}
# The import name of a distribution where it differs from the distribution's name.
IMPORT_NAMES = {"scikit-learn": "sklearn"}
# The packages with one module per backend, the only modules that import a backend.
BACKEND_PACKAGES = ("_steps", "_backends")


def _module_level_imports(path: Path) -> set[str]:
    """The top-level names of the modules that `path` imports when it is imported."""
    names = set()
    for node in ast.parse(path.read_text()).body:  # not inside functions
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add((node.module or "").split(".")[0])
    return names - {"__future__"}


def test_every_import_at_import_time_is_a_declared_dependency():
    """What `import keras_extras` imports is Keras, NumPy and the standard library: a
    module-level import of anything else (say scipy) would fail for users, whose pip
    installs only `dependencies`. A backend is imported only by its own step module,
    when that backend is in use, and comes with the backend's extra: a module of
    `_steps/` or `_backends/` named after it."""
    declared = {IMPORT_NAMES.get(r.name, r.name.replace("-", "_")) for r in DEPENDENCIES}
    own = {"keras_extras", "keras_extras_core", "keras_extras_cli"}
    files = [p for package in sorted(own) for p in sorted((SRC.parent / package).rglob("*.py"))]
    for path in files:
        allowed = declared | own | set(sys.stdlib_module_names)
        if path.parent.name in BACKEND_PACKAGES and path.stem in EXTRAS:
            allowed |= {r.name for r in EXTRAS[path.stem]}
        undeclared = _module_level_imports(path) - allowed
        assert not undeclared, f"{path.relative_to(ROOT)} imports {undeclared} when imported"


def test_every_extra_the_docs_and_messages_name_exists():
    """`pip install "keras-extras[NAME]"` in the README, the docs or an error message of
    the package: an extra that pyproject.toml does not declare installs nothing (pip
    only warns), so the user is left without what the line promised."""
    named = set()
    texts = [ROOT / "README.md", *(ROOT / "docs").rglob("*.rst"), *ROOT.glob("src/**/*.py")]
    for path in texts:
        for extras in re.findall(r"keras-extras\[([\w,\s-]+)\]", path.read_text()):
            named |= {(path.name, extra.strip()) for extra in extras.split(",")}
    assert {extra for _, extra in named} >= {"tensorflow", "jax", "torch", "demo"}
    missing = sorted((file, extra) for file, extra in named if extra not in EXTRAS)
    assert not missing, f"extras named but not declared in pyproject.toml: {missing}"


def test_source_uses_keras_3_only():
    forbidden = re.compile(r"tf\.keras|tf_keras|from tensorflow import keras")
    module_level_backend = re.compile(r"^(import|from) (tensorflow|jax|torch)\b", re.M)
    packages = [SRC / name for name in BACKEND_PACKAGES]
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        assert not forbidden.search(text), f"{path} reaches tf.keras"
        # The per-backend modules in _steps/ and _backends/ are the one place for
        # backend code; each dispatcher imports them only when that backend is in use.
        if path.parent not in packages or path.name == "__init__.py":
            assert not module_level_backend.search(text), f"{path} imports a backend"
    for path in SRC.rglob("*.py"):
        if path.parent in packages:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in getattr(node, "names", [])] if isinstance(node, ast.Import) else []
            )
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            backends = [n for n in names if n.split(".")[0] in ("tensorflow", "jax", "torch")]
            assert not backends, f"{path.name}:{node.lineno} imports {backends} outside {packages}"


def _imports_above(package: str, allowed: set[str]) -> list[str]:
    """The keras_extras modules that the modules of `package` import, outside `allowed`."""
    found = []
    for path in sorted((SRC / package).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: `.` is the package, `..` keras_extras
                    parts = ["keras_extras", package][: 3 - node.level]
                    base = ".".join(parts + ([base] if base else []))
                modules = [
                    f"{base}.{a.name}" if base == "keras_extras" else base for a in node.names
                ]
            else:
                continue
            above = [m for m in modules if m.split(".")[0] == "keras_extras" and m not in allowed]
            found += [f"{package}/{path.name}:{node.lineno} imports {m}" for m in above]
    return found


def test_steps_import_nothing_above_them():
    """`_steps/` is CustomModel's dispatch: the model is an argument, never an import.

    Catches an arrow back up, such as a step module importing `keras_extras.models`
    (at module level or inside a function) to compare a method with CustomModel's.
    """
    assert not _imports_above("_steps", {"keras_extras._steps", "keras_extras._keras_internals"})


def test_backend_utilities_import_nothing_above_them():
    """`_backends/` serves the metrics: it takes their functions as arguments.

    Catches a backend module importing `keras_extras.metrics` (say, to call the
    general arithmetic itself), an arrow back up into the family it serves.
    """
    assert not _imports_above("_backends", {"keras_extras._backends"})


def test_version_matches_pyproject():
    assert keras_extras.__version__ == PYPROJECT["project"]["version"]


def _pins(name: str) -> dict[str, str]:
    lines = (ROOT / name).read_text().splitlines()
    return dict(line.split("==", 1) for line in lines if "==" in line and not line.startswith("#"))


def test_constraints_pin_every_declared_requirement_within_its_range():
    """Each requirement of pyproject.toml (dependencies and every extra) is pinned, in
    both constraints files, to a version its range admits. Catches a requirement added
    without a pin (pip would take the newest: a multi-GB CUDA torch, an untested
    Keras) and a pin that a raised floor no longer admits."""
    requirements = DEPENDENCIES + [r for rs in EXTRAS.values() for r in rs]
    requirements = [r for r in requirements if canonicalize_name(r.name) != "keras-extras"]
    for name in ("constraints.txt", "constraints-oldest.txt"):
        pins = {canonicalize_name(k): v for k, v in _pins(name).items()}
        for requirement in requirements:
            if name == "constraints-oldest.txt" and requirement.name == "tensorflow":
                continue  # TensorFlow 2.21 needs keras>=3.12 (the next test)
            pin = pins.get(canonicalize_name(requirement.name))
            assert pin is not None, f"{name} does not pin {requirement.name}"
            assert requirement.specifier.contains(pin), f"{name}: {requirement.name}=={pin}"


def test_oldest_constraints_pin_keras_at_the_floor_and_nothing_else_apart():
    newest, oldest = _pins("constraints.txt"), _pins("constraints-oldest.txt")
    floors = [d for d in PYPROJECT["project"]["dependencies"] if d.startswith("keras>=")]
    floor = floors[0].removeprefix("keras>=").split(",")[0]
    assert oldest["keras"] == (floor if floor.count(".") == 2 else f"{floor}.0")
    assert "tensorflow_cpu" not in oldest  # TensorFlow 2.21 needs keras>=3.12
    different = {k for k in oldest if k != "keras" and oldest[k] != newest.get(k)}
    assert not different, f"constraints-oldest.txt disagrees with constraints.txt on {different}"


def test_every_minor_keras_release_is_tested_and_the_install_page_says_which():
    """The Makefile and .ci/run decide which Keras releases CI tests; docs/install.rst
    tells users. Catches a minor release left out between the floor and the newest, a
    release added to the matrix or dropped from it without the page, and a leg that
    .ci/run no longer runs."""
    makefile = (ROOT / "Makefile").read_text()
    releases = re.search(r"^KERAS_RELEASES := (.*)$", makefile, re.M).group(1).split()
    newest, oldest = _pins("constraints.txt")["keras"], _pins("constraints-oldest.txt")["keras"]
    tested = sorted({newest, oldest, *releases}, key=Version)
    assert tested[0] == oldest and tested[-1] == newest
    minors = [Version(v).minor for v in tested]
    assert minors == list(range(minors[0], minors[-1] + 1)), tested  # each minor, once
    page = (ROOT / "docs" / "install.rst").read_text()
    table = page[page.index("Supported versions") : page.index("Optional extras")]
    listed = re.findall(r"^(\d+\.\d+\.\d+|keras-nightly)\b", table, re.M)
    assert listed == [*reversed(tested), "keras-nightly"]
    commands = set((ROOT / ".ci" / "run").read_text().splitlines())
    assert {"make test", "make test-oldest", "make test-keras-matrix"} <= commands
    assert re.search(r"test-keras KERAS=nightly BACKENDS=\"jax torch\"", makefile)
