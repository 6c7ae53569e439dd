"""The package as users get it: built, checked, and installed with one backend.

`make test-install` runs this file (not `make test`: it builds the package and
creates one virtual environment per backend, minutes of work). The sdist and the
wheel are built as `python -m build` builds them; then, for each backend, a fresh
virtual environment runs the README's commands as written, with the local wheel in
place of the package name:

* the backend's install line, and nothing else, then the usage examples;
* the Quickstart: `pip install "keras-extras[demo]"` and `keras-extras demo`;
* `keras-extras --help`, a one-epoch demo whose files are checked, and bad
  arguments, each of which must get one line on stderr and exit code 2.

pip's cache is used as usual, and `constraints.txt` pins every version (through
`PIP_CONSTRAINT`, so that the README's command lines run unchanged); it pins
torch to its CPU wheel. `KERAS_EXTRAS_TEST_BACKENDS` limits the backends.
"""

from __future__ import annotations

import csv
import email.parser
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
ALL_BACKENDS = ("tensorflow", "jax", "torch")
BACKENDS = os.environ.get("KERAS_EXTRAS_TEST_BACKENDS", " ".join(ALL_BACKENDS)).split()
# An empty list would leave the per-backend tests with no parameters, skipped, and the
# run green; a misspelt name would build an environment for no backend.
if not BACKENDS or set(BACKENDS) - set(ALL_BACKENDS):
    raise pytest.UsageError(
        f"KERAS_EXTRAS_TEST_BACKENDS={os.environ.get('KERAS_EXTRAS_TEST_BACKENDS')!r}: "
        f"name one or more of {', '.join(ALL_BACKENDS)}"
    )
# What TensorFlow prints on import unless the command silences it.
TF_BANNER = re.compile(r"oneDNN|absl::InitializeLog|cpu_feature_guard|cudart_stub|cuInit")


def readme_blocks() -> list[tuple[str, str, str]]:
    """The README's fenced blocks, as `(section, language, code)`."""
    blocks, section, lines = [], "", README.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("## "):
            section = lines[i][3:].strip()
        fence = re.match(r"^```(\w+)\s*$", lines[i])
        if fence:
            end = lines.index("```", i + 1)
            blocks.append((section, fence.group(1), "\n".join(lines[i + 1 : end]) + "\n"))
            i = end
        i += 1
    return blocks


def console_lines(section: str) -> list[str]:
    return [
        line
        for name, language, code in readme_blocks()
        if name == section and language == "console"
        for line in code.splitlines()
        if line.strip()
    ]


def run(command: list[str] | str, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("timeout", 900)
    proc = subprocess.run(command, capture_output=True, text=True, **kwargs)
    return proc


def check(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"{proc.args}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def file_digests(wheel: Path) -> dict[str, str]:
    with zipfile.ZipFile(wheel) as archive:
        return {
            name: hashlib.sha256(archive.read(name)).hexdigest()
            for name in archive.namelist()
            if not name.endswith("/")
        }


@pytest.fixture(scope="session")
def dists(tmp_path_factory):
    # `python -m build` makes the sdist, then builds the wheel from the unpacked sdist.
    out = tmp_path_factory.mktemp("dist")
    check(run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)]))
    # The wheel straight from the checkout, to compare with the one from the sdist.
    tree = tmp_path_factory.mktemp("tree")
    check(run([sys.executable, "-m", "build", "--wheel", "--outdir", str(tree), str(ROOT)]))
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    (tree_wheel,) = tree.glob("*.whl")
    return SimpleNamespace(wheel=wheel, sdist=sdist, tree_wheel=tree_wheel)


def test_twine_check_passes(dists):
    proc = check(
        run(
            [sys.executable, "-m", "twine", "check", "--strict", str(dists.wheel), str(dists.sdist)]
        )
    )
    assert proc.stdout.count("PASSED") == 2, proc.stdout


def test_wheel_holds_the_packages_license_and_type_marker(dists):
    names = set(file_digests(dists.wheel))
    sources = {
        p.relative_to(ROOT / "src").as_posix()
        for p in (ROOT / "src").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    info = "keras_extras-0.1.0.dev0.dist-info"
    assert "keras_extras/py.typed" in sources
    assert names - sources == {
        f"{info}/{name}"
        for name in ("METADATA", "WHEEL", "entry_points.txt", "RECORD", "licenses/LICENSE")
    }
    assert sources <= names  # every source file, nothing else
    with zipfile.ZipFile(dists.wheel) as archive:
        license_text = archive.read(f"{info}/licenses/LICENSE").decode()
        metadata = email.parser.Parser().parsestr(archive.read(f"{info}/METADATA").decode())
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert license_text == (ROOT / "LICENSE").read_text()
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata["License-File"] == "LICENSE"
    unconditional = [r for r in metadata.get_all("Requires-Dist") if "extra ==" not in r]
    assert sorted(r.split(">")[0] for r in unconditional) == ["keras", "numpy"]
    assert "keras-extras = keras_extras_cli:main" in entry_points


def test_sdist_builds_the_same_wheel(dists):
    assert file_digests(dists.wheel) == file_digests(dists.tree_wheel)
    with tarfile.open(dists.sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {"pyproject.toml", "LICENSE", "README.md", "src/keras_extras/py.typed"} <= names


# One fresh virtual environment per backend, shared by that backend's tests.
@pytest.fixture(scope="session", params=BACKENDS)
def venv(request, dists, tmp_path_factory):
    backend = request.param
    home = tmp_path_factory.mktemp(f"venv-{backend}")
    check(run([sys.executable, "-m", "venv", str(home / "venv")]))
    keras_home = home / "keras-home"
    keras_home.mkdir()
    # What Keras writes on its first import, whatever the backend it then used.
    (keras_home / "keras.json").write_text(json.dumps({"backend": "tensorflow"}))
    drop = (
        "KERAS_BACKEND",
        "PYTHONPATH",
        "PYTHONHOME",
        "TF_CPP_MIN_LOG_LEVEL",
        "PIP_REQUIRE_VIRTUALENV",
    )
    environ = {k: v for k, v in os.environ.items() if k not in drop}
    environ.update(
        PATH=f"{home / 'venv' / 'bin'}{os.pathsep}{os.environ['PATH']}",
        VIRTUAL_ENV=str(home / "venv"),
        PIP_CONSTRAINT=str(ROOT / "constraints.txt"),
        KERAS_HOME=str(keras_home),
    )
    env = SimpleNamespace(
        backend=backend,
        home=home,
        environ=environ,
        python=str(home / "venv" / "bin" / "python"),
        wheel=dists.wheel,
    )
    (line,) = [line for line in console_lines("Install") if f"[{backend}]" in line]
    assert line == f'pip install "keras-extras[{backend}]"'
    check(shell(env, line))
    return env


def shell(env, line: str, cwd: Path | None = None, **environ) -> subprocess.CompletedProcess:
    """Runs a README command line in `env`, with the wheel for the package name."""
    line = line.replace('"keras-extras[', f'"{env.wheel}[')
    return run(
        ["bash", "-c", line], cwd=cwd or env.home, env={**env.environ, **environ}, timeout=900
    )


def installed(env) -> dict[str, str]:
    proc = check(run([env.python, "-m", "pip", "list", "--format=json"], env=env.environ))
    return {p["name"].lower(): p["version"] for p in json.loads(proc.stdout)}


def test_only_the_chosen_backend_is_installed(venv):
    packages = installed(venv)
    assert packages["keras-extras"] == "0.1.0.dev0"
    backends = {name for name in ALL_BACKENDS if name in packages}
    assert backends == {venv.backend}
    assert "tensorflow-cpu" not in packages
    if venv.backend == "torch":
        assert packages["torch"] == "2.13.0+cpu"
    probe = (
        "import importlib.util, json; "
        "print(json.dumps([m for m in ('tensorflow', 'jax', 'torch') "
        "if importlib.util.find_spec(m)]))"
    )
    proc = check(run([venv.python, "-c", probe], env=venv.environ))
    assert json.loads(proc.stdout) == [venv.backend]


DOCTEST_DRIVER = """
import doctest, sys
namespace = {"__name__": "__main__"}
for path in sys.argv[1:]:
    text = open(path, encoding="utf-8").read()
    if path.endswith(".py"):
        exec(compile(text, path, "exec"), namespace)
        continue
    test = doctest.DocTestParser().get_doctest(text, namespace, path, path, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    if runner.failures:
        sys.exit(1)
"""


def test_readme_usage_runs_as_written(venv, tmp_path):
    blocks = [(lang, code) for section, lang, code in readme_blocks() if section == "Usage"]
    assert [lang for lang, _ in blocks] == ["python", "pycon"]
    paths = []
    for i, (lang, code) in enumerate(blocks):
        path = tmp_path / f"block{i}.{'py' if lang == 'python' else 'txt'}"
        path.write_text(code)
        paths.append(str(path))
    proc = run(
        [venv.python, "-c", DOCTEST_DRIVER, *paths],
        cwd=tmp_path,
        env={**venv.environ, "KERAS_BACKEND": venv.backend},
    )
    check(proc)
    assert (tmp_path / "model.keras").is_file()


def test_help_imports_nothing_and_returns(venv):
    for args in (["--help"], ["demo", "--help"]):
        proc = check(run([str(Path(venv.python).parent / "keras-extras"), *args], env=venv.environ))
        assert proc.stderr == ""
        assert "usage: keras-extras" in proc.stdout


@pytest.fixture(scope="session")
def demo_venv(venv):
    quickstart = console_lines("Quickstart")
    assert quickstart[0] == 'pip install "keras-extras[demo]"'
    check(shell(venv, quickstart[0]))
    packages = installed(venv)
    assert {"scikit-learn", "matplotlib", "tensorboard"} <= set(packages)
    assert {name for name in ALL_BACKENDS if name in packages} == {venv.backend}
    return venv


def test_bad_arguments_get_one_line_and_exit_2(demo_venv, tmp_path):
    env = demo_venv
    others = [b for b in ALL_BACKENDS if b != env.backend]
    cases = [
        (["--nosuch"], {}, "the following arguments are required: command"),
        (["demo", "--nosuch"], {}, "unrecognized arguments: --nosuch"),
        (["demo", "--epochs", "0"], {}, "must be at least 1, got 0"),
        (["demo", "--backend", "theano"], {}, "invalid choice: 'theano'"),
        (["demo", "--data", "missing.npz"], {}, "--data 'missing.npz' cannot be read"),
        (["demo", "--backend", others[0]], {}, f'pip install "keras-extras[{others[0]}]"'),
        (["demo"], {"KERAS_BACKEND": others[1]}, f'pip install "keras-extras[{others[1]}]"'),
        (["demo"], {"KERAS_BACKEND": "numpy"}, "KERAS_BACKEND='numpy' is not a backend"),
    ]
    for args, extra_env, expected in cases:
        proc = run(
            [str(Path(env.python).parent / "keras-extras"), *args],
            cwd=tmp_path,
            env={**env.environ, **extra_env},
        )
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert proc.stdout == "", args
        assert proc.stderr.count("\n") == 1 and proc.stderr.endswith("\n"), (args, proc.stderr)
        assert expected in proc.stderr, (args, proc.stderr)
    assert list(tmp_path.iterdir()) == []  # no bad argument created --out


def test_quickstart_demo_runs_as_written(demo_venv, tmp_path):
    env = demo_venv
    (command,) = console_lines("Quickstart")[1:2]
    assert command == "keras-extras demo"
    proc = check(shell(env, command, cwd=tmp_path))
    report = json.loads((tmp_path / "keras-extras-demo" / "results.json").read_text())
    assert report["backend"] == env.backend
    assert report["checkpoint_predictions_match"] is True
    assert report["results"]["test"]["accuracy"] > 0.8
    # keras.json names tensorflow: used where installed, else the first installed, said.
    if env.backend == "tensorflow":
        assert proc.stderr.count("keras-extras: using") == 0
    else:
        assert f"keras-extras: using {env.backend}, the first installed" in proc.stderr
        assert "keras.json names 'tensorflow', which is not installed" in proc.stderr
    assert not TF_BANNER.search(proc.stderr), proc.stderr
    assert "tensorboard --logdir keras-extras-demo/logs\n" in proc.stdout


def _epoch_rows(history_csv: Path) -> list[dict[str, str]]:
    with open(history_csv, newline="") as f:
        return [row for row in csv.DictReader(f) if row["table"] == "epochs"]


READ_EVENTS = """
import json, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util.tensor_util import make_ndarray
values = {}
for run in ("train", "validation"):
    events = EventAccumulator(sys.argv[1] + "/" + run)
    events.Reload()
    values[run] = [
        (event.step, float(make_ndarray(event.tensor_proto)))
        for event in events.Tensors("epoch_loss")
    ]
print(json.dumps(values))
"""


def test_one_epoch_demo_writes_its_files(demo_venv, tmp_path):
    env = demo_venv
    out = tmp_path / "out"
    proc = check(
        run(
            [
                str(Path(env.python).parent / "keras-extras"),
                "demo",
                "--epochs",
                "1",
                "--out",
                str(out),
            ],
            cwd=tmp_path,
            env={**env.environ, "KERAS_BACKEND": env.backend},
        )
    )
    assert "keras-extras: using" not in proc.stderr
    assert not TF_BANNER.search(proc.stderr), proc.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint.keras",
        "history.csv",
        "logs",
        "results.json",
        "training.png",
    ]
    report = json.loads((out / "results.json").read_text())
    assert (report["backend"], report["epochs_run"]) == (env.backend, 1)
    assert report["checkpoint_predictions_match"] is True
    assert (out / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The TensorBoard logs hold the epoch's loss that LossHistory recorded.
    (epoch,) = _epoch_rows(out / "history.csv")
    events = json.loads(
        check(run([env.python, "-c", READ_EVENTS, str(out / "logs")], env=env.environ)).stdout
    )
    assert events["train"] == [[0, pytest.approx(float(epoch["loss"]), rel=1e-6)]]
    assert events["validation"] == [[0, pytest.approx(float(epoch["val_loss"]), rel=1e-6)]]

    # The printed command works (with --inspect, which reads the logs and exits).
    (command,) = re.findall(r"^TensorBoard logs: (tensorboard --logdir .*)$", proc.stdout, re.M)
    assert shlex.split(command)[2] == str(out / "logs")
    inspect = check(shell(env, command + " --inspect"))
    assert "epoch_loss" in inspect.stdout

    # The checkpoint loads after a plain `import keras_extras`.
    load = (
        "import sys, keras, keras_extras; "
        "m = keras.models.load_model(sys.argv[1]); print(type(m).__name__)"
    )
    loaded = check(
        run(
            [env.python, "-c", load, str(out / "checkpoint.keras")],
            env={**env.environ, "KERAS_BACKEND": env.backend},
        )
    )
    assert loaded.stdout.strip() == "CustomModel"


# The README's commands that the tests above run, as written.
RUN_HERE = {
    'pip install "keras-extras[tensorflow]"',
    'pip install "keras-extras[jax]"',
    'pip install "keras-extras[torch]"',
    'pip install "keras-extras[demo]"',
    "keras-extras demo",
}


def test_readme_commands_are_all_tested():
    # Every console line of the README runs here or in CI (.ci/run), exactly as written.
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    lines = [
        line
        for _, language, code in readme_blocks()
        if language == "console"
        for line in code.splitlines()
        if line.strip()
    ]
    assert RUN_HERE <= set(lines)
    for line in lines:
        assert line in RUN_HERE or (line.startswith("make ") and line in ci), (
            f"README's {line!r} is run neither by tests_install/ nor by .ci/run"
        )
    assert "make test-install" in ci
