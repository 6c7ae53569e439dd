"""Every code example in the docs, the README and the docstrings runs, on each backend.

Code blocks (`.. code-block:: python` or `pycon` in reStructuredText, ```python or
```pycon fences in Markdown) run in page order, in one namespace per page, with the
page's own temporary folder as the working directory. `python` blocks are executed;
`pycon` blocks are doctests, so their printed output is checked too. Other languages
(console, bash, toml, text) are shown, not run.

A block can be marked by comments on the lines right above it, in reStructuredText
`.. backend: tensorflow`, in Markdown `<!-- backend: tensorflow -->`:

* `backend: NAME[, NAME]`: runs only on these Keras backends;
* `requires: ITEM[, ITEM]`: runs only where each item exists: `keras_extras.NAME`
  (a component), `program:NAME` (an executable on PATH) or a module name;
* `skip: REASON`: never runs (code shown for comparison, such as tf.keras 2 code);
* `kernel: REASON`: runs in a Jupyter kernel, in tests/test_notebook.py, not here.

A block whose marks do not hold is reported as skipped, with the reason.
"""

from __future__ import annotations

import ast
import doctest
import importlib
import importlib.util
import inspect
import os
import pkgutil
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import keras
import pytest

import keras_extras

BACKEND = keras.backend.backend()
ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
DOCTEST_FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
RUN_LANGUAGES = ("python", "pycon")
MARKS = ("backend", "requires", "skip", "kernel")


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the block's first code line
    language: str
    code: str
    marks: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _marks_above(lines: list[str], index: int, pattern: re.Pattern) -> dict[str, str]:
    marks = {}
    i = index - 1
    while i >= 0 and (match := pattern.match(lines[i])):
        name, value = match.group(1), match.group(2).strip()
        if name not in MARKS:
            raise ValueError(f"unknown mark {name!r} above a code block, line {i + 1}")
        marks[name] = value
        i -= 1
    return marks


_RST_DIRECTIVE = re.compile(r"^(\s*)\.\. code-block::\s*(\S+)\s*$")
_RST_MARK = re.compile(r"^\s*\.\. (\w+): (.+)$")
_MD_FENCE = re.compile(r"^(\s*)```\s*(\w+)\s*$")
_MD_MARK = re.compile(r"^\s*<!-- (\w+): (.+) -->\s*$")


def rst_blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        match = _RST_DIRECTIVE.match(lines[i])
        if not match:
            i += 1
            continue
        indent = len(match.group(1))
        j = i + 1
        while j < len(lines) and lines[j].strip().startswith(":"):  # options
            j += 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        start = j
        while j < len(lines) and (
            not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > indent
        ):
            j += 1
        blocks.append(
            Block(
                path,
                start + 1,
                match.group(2),
                textwrap.dedent("\n".join(lines[start:j])).strip() + "\n",
                _marks_above(lines, i, _RST_MARK),
            )
        )
        i = j  # a directive inside this block's body is text, not a block
    return blocks


def markdown_blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        match = _MD_FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        end = next(k for k in range(i + 1, len(lines)) if lines[k].strip() == "```")
        blocks.append(
            Block(
                path,
                i + 2,
                match.group(2),
                textwrap.dedent("\n".join(lines[i + 1 : end])).strip() + "\n",
                _marks_above(lines, i, _MD_MARK),
            )
        )
        i = end + 1
    return blocks


def page_blocks(path: Path) -> list[Block]:
    blocks = rst_blocks(path) if path.suffix == ".rst" else markdown_blocks(path)
    return [b for b in blocks if b.language in RUN_LANGUAGES]


PAGES = sorted(
    p for p in DOCS.rglob("*") if p.suffix in (".rst", ".md") and "_build" not in p.parts
)
PAGES.append(ROOT / "README.md")
BLOCKS = [block for page in PAGES for block in page_blocks(page)]


def skip_reason(block: Block) -> str | None:
    """Why `block` cannot run here, or None when it runs."""
    for mark in ("skip", "kernel"):
        if mark in block.marks:
            return block.marks[mark]
    if "backend" in block.marks:
        backends = [b.strip() for b in block.marks["backend"].split(",")]
        if BACKEND not in backends:
            return f"{', '.join(backends)} only (running {BACKEND})"
    for item in block.marks.get("requires", "").split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("keras_extras."):
            if not hasattr(keras_extras, item.split(".", 1)[1]):
                return f"needs {item}, which this build of keras_extras lacks"
        elif item.startswith("program:"):
            if shutil.which(item.split(":", 1)[1]) is None:
                return f"needs the {item.split(':', 1)[1]!r} program on PATH"
        elif importlib.util.find_spec(item) is None:
            return f"needs the {item!r} package"
    return None


def run_block(block: Block, namespace: dict) -> None:
    if block.language == "python":
        exec(compile(block.code, block.where, "exec"), namespace)
        return
    test = doctest.DocTestParser().get_doctest(
        block.code, namespace, block.where, str(block.path), block.line - 1
    )
    # The page's namespace is shared on purpose: later blocks use what earlier ones made.
    test.globs = namespace
    runner = doctest.DocTestRunner(optionflags=DOCTEST_FLAGS)
    output: list[str] = []
    runner.run(test, out=output.append, clear_globs=False)
    if runner.failures:
        pytest.fail("".join(output), pytrace=False)


class _Page:
    """What the blocks of one page have run so far, and where."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.namespace: dict = {"__name__": "__docs__"}
        self.done = 0
        self.failed: str | None = None


_pages: dict[Path, _Page] = {}


@pytest.mark.parametrize("block", BLOCKS, ids=[b.where for b in BLOCKS])
def test_doc_example_runs(block, tmp_path_factory, monkeypatch):
    reason = skip_reason(block)
    if reason:
        pytest.skip(f"{block.where}: {reason}")
    blocks = page_blocks(block.path)
    index = next(i for i, b in enumerate(blocks) if b.line == block.line)
    page = _pages.get(block.path)
    if page is None or page.done > index:
        page = _pages[block.path] = _Page(tmp_path_factory.mktemp(block.path.stem))
        keras.utils.clear_session()
    if page.failed:
        pytest.fail(f"an earlier block of this page, {page.failed}, failed", pytrace=False)
    monkeypatch.chdir(page.folder)
    # Blocks run in page order even when a test is selected alone or run out of order.
    for current in blocks[page.done : index + 1]:
        if skip_reason(current) is not None:  # never `block`: it was checked above
            continue
        page.failed = current.where
        run_block(current, page.namespace)
        page.failed = None
    page.done = index + 1


def test_examples_are_found():
    pages_with_code = {b.path.relative_to(ROOT).as_posix() for b in BLOCKS}
    assert "README.md" in pages_with_code
    assert {"docs/guide/training_loop.rst", "docs/migration.rst"} <= pages_with_code
    for block in BLOCKS:
        assert block.code.strip(), f"empty code block at {block.where}"
        if block.language == "pycon":
            assert block.code.lstrip().startswith(">>>"), f"pycon without >>> at {block.where}"


@pytest.mark.parametrize(
    "marks, expected",
    [
        ({"skip": "shown for comparison"}, "shown for comparison"),
        (
            {"requires": "keras_extras.NoSuchThing"},
            "needs keras_extras.NoSuchThing, which this build of keras_extras lacks",
        ),
        ({"requires": "numpy, program:no-such-tool"}, "needs the 'no-such-tool' program on PATH"),
        ({"requires": "no_such_module"}, "needs the 'no_such_module' package"),
        ({"requires": "numpy, keras_extras.RMSE"}, None),
        ({"backend": BACKEND}, None),
        ({"backend": "someother"}, f"someother only (running {BACKEND})"),
    ],
)
def test_marks_skip_with_a_reason(marks, expected):
    block = Block(ROOT / "README.md", 1, "python", "pass\n", marks)
    assert skip_reason(block) == expected


def test_rst_parser_reads_marks_and_lines(tmp_path):
    page = tmp_path / "page.rst"
    page.write_text(
        "Title\n=====\n\n.. backend: jax, torch\n.. requires: numpy\n"
        ".. code-block:: python\n   :caption: x\n\n   a = 1\n   b = a + 1\n\nText.\n\n"
        ".. code-block:: console\n\n   $ make docs\n\n"
        ".. code-block:: rst\n\n   .. code-block:: python\n\n      shown = True\n"
    )
    blocks = rst_blocks(page)
    assert [(b.language, b.line, b.code) for b in blocks] == [
        ("python", 9, "a = 1\nb = a + 1\n"),
        ("console", 16, "$ make docs\n"),
        ("rst", 20, ".. code-block:: python\n\n   shown = True\n"),
    ]
    assert blocks[0].marks == {"backend": "jax, torch", "requires": "numpy"}


# --- The API page lists every public name ---------------------------------------------

_API_DIRECTIVE = re.compile(r"^\.\. (?:auto\w+|py:\w+):: keras_extras\.(\w+)", re.M)


def test_api_page_lists_every_public_name():
    listed = _API_DIRECTIVE.findall((DOCS / "api.rst").read_text(encoding="utf-8"))
    missing = sorted(set(keras_extras.__all__) - set(listed))
    assert not missing, f"docs/api.rst does not document {missing}"
    unknown = sorted(set(listed) - set(keras_extras.__all__))
    assert not unknown, f"docs/api.rst documents {unknown}, which are not in __all__"
    assert len(listed) == len(set(listed)), "docs/api.rst documents a name twice"


# --- Docstrings -----------------------------------------------------------------------

# A module of keras_extras._steps or keras_extras._backends imports its backend; one
# whose backend is not installed (the oldest-Keras CI leg has no TensorFlow) is
# reported as skipped.
_STEPS = "keras_extras._steps."
_BACKENDS = "keras_extras._backends."
ALL_MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(keras_extras.__path__, "keras_extras.")
    if not info.name.endswith("__main__")
)
MISSING_BACKENDS = [
    name
    for name in ALL_MODULES
    if name.startswith((_STEPS, _BACKENDS))
    and importlib.util.find_spec(name.rpartition(".")[2]) is None
]
MODULES = [name for name in ALL_MODULES if name not in MISSING_BACKENDS]


def _functions_called_on_backend_steps() -> set[str]:
    """The names keras_extras calls on `backend_steps()`, the module of the backend."""
    names = set()
    for path in (ROOT / "src" / "keras_extras").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Call):
                function = node.value.func
                if getattr(function, "attr", getattr(function, "id", None)) == "backend_steps":
                    names.add(node.attr)
    return names


@pytest.mark.parametrize("name", [name for name in ALL_MODULES if name.startswith(_STEPS)])
def test_step_module_has_the_functions_the_dispatch_calls_and_no_others(name):
    """docs/contributing.rst: each backend's module has the same functions, and nothing
    else. Catches a module without one that keras_extras calls on it, which fails only
    once that backend trains, and a public function that no caller reaches."""
    if name in MISSING_BACKENDS:
        pytest.skip(f"{name} not imported: {name.rpartition('.')[2]} is not installed")
    module = importlib.import_module(name)
    public = {
        attribute
        for attribute, value in vars(module).items()
        if attribute[0] != "_"
        and callable(value)
        and not inspect.isclass(value)
        and getattr(value, "__module__", None) == name  # defined there, not imported
    }
    assert public == _functions_called_on_backend_steps()


def _docstring_tests():
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = []
    for name in MODULES:
        tests += [t for t in finder.find(importlib.import_module(name)) if t.examples]
    return sorted(tests, key=lambda t: t.name)


DOCSTRING_TESTS = _docstring_tests()


@pytest.mark.parametrize("test", DOCSTRING_TESTS, ids=[t.name for t in DOCSTRING_TESTS])
def test_docstring_examples_run(test, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    keras.utils.clear_session()
    runner = doctest.DocTestRunner(optionflags=DOCTEST_FLAGS)
    output: list[str] = []
    runner.run(test, out=output.append)
    assert not runner.failures, "".join(output)


def test_every_public_object_has_a_docstring_example():
    tested = {t.name.rsplit(".", 1)[-1] for t in DOCSTRING_TESTS}
    for name in keras_extras.__all__:
        obj = getattr(keras_extras, name)
        assert obj.__name__ in tested, f"keras_extras.{name} has no >>> example that runs"


_FENCE = re.compile(r"^(\s*)```\s*(\w*)\s*$\n(.*?)^\1```\s*$", re.M | re.S)


def _docstring_fences():
    found = []
    for name in MODULES:
        module = importlib.import_module(name)
        for qualname, obj in _documented_objects(module):
            for match in _FENCE.finditer(inspect.getdoc(obj) or ""):
                if match.group(2) == "python":
                    found.append((qualname, textwrap.dedent(match.group(3))))
    return found


def _documented_objects(module):
    yield module.__name__, module
    seen = set()
    for name, obj in vars(module).items():
        if getattr(obj, "__module__", None) != module.__name__ or id(obj) in seen:
            continue
        seen.add(id(obj))
        if inspect.isclass(obj) or inspect.isfunction(obj):
            yield f"{module.__name__}.{name}", obj
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    if inspect.isfunction(member):
                        yield f"{module.__name__}.{name}.{attr}", member


DOCSTRING_FENCES = _docstring_fences()


@pytest.mark.parametrize(
    "where, code", DOCSTRING_FENCES, ids=[w for w, _ in DOCSTRING_FENCES] or None
)
def test_docstring_code_fences_are_valid_python(where, code):
    # A ```python fence shows usage inside a larger program (a `model` it does not
    # build), so it cannot run alone; it must at least be valid Python.
    ast.parse(code, filename=where)


def test_conf_rewrites_keras_style_docstrings(monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", BACKEND)  # conf.py sets it
    spec = importlib.util.spec_from_file_location("docs_conf", DOCS / "conf.py")
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    lines = [
        "Uses `a: b` and :class:`Foo` and `a link <https://keras.io>`_.",
        "",
        '>>> print("`x`")',
        "`x`",
        "",
        "```python",
        "y = `kept`",
        "```",
        "Returns:",
        '    `{"loss": 0.5}`, a dict.',
    ]
    assert conf.keras_style_to_rst(lines) == [
        "Uses ``a: b`` and :class:`Foo` and `a link <https://keras.io>`_.",
        "",
        '>>> print("`x`")',
        "`x`",
        "",
        ".. code-block:: python",
        "",
        "   y = `kept`",
        "",
        "Returns:",
        '    ``{"loss": 0.5}``, a dict.',
    ]


# --- The API page, as Sphinx renders it -----------------------------------------------

# The tests that build with Sphinx itself skip where the [docs] extra is not installed.
needs_sphinx = pytest.mark.skipif(
    importlib.util.find_spec("sphinx") is None, reason="needs the [docs] extra (Sphinx)"
)

_PRIVATE_MEMBER = re.compile(r"^\s*(?:property |classmethod |static )?_(?!_)\w*", re.M)


@needs_sphinx
def test_api_page_shows_no_private_base_or_member(tmp_path, monkeypatch):
    """Renders docs/api.rst with docs/conf.py as text, and reads it as a user would.

    Catches a page that shows a private base class ("Bases: _ExactMean") or member,
    as autodoc does without conf.py's `autodoc-process-bases` hook and with every
    member listed, and a class signature read from Keras's `__new__(*args, **kwargs)`.
    """
    from sphinx.application import Sphinx

    monkeypatch.setenv("KERAS_BACKEND", BACKEND)  # conf.py sets it
    source = tmp_path / "source"
    source.mkdir()
    shutil.copy(DOCS / "api.rst", source / "index.rst")
    out = tmp_path / "out"
    app = Sphinx(
        str(source),
        str(DOCS),
        str(out),
        str(tmp_path / "doctrees"),
        "text",
        status=None,
        warning=None,  # the guide pages that the docstrings link to are not here
        freshenv=True,
    )
    app.build()
    text = (out / "index.txt").read_text(encoding="utf-8")
    bases = re.findall(r"Bases: (.+)", text)
    assert len(bases) == len({id(getattr(keras_extras, name)) for name in keras_extras.__all__})
    assert not [b for b in bases if re.search(r"(^|\W)_", b)], bases
    assert not _PRIVATE_MEMBER.findall(text), _PRIVATE_MEMBER.findall(text)
    assert "class keras_extras.ScheduledDropout(rate, schedule='exponential'" in text


# --- The docs build and the install page where only some backends are installed -------


def _fresh_python(code: str, tmp_path: Path, missing: tuple[str, ...], backend_variable=None):
    """Runs `code` in a new Python where the modules `missing` cannot be imported.

    `KERAS_BACKEND` is `backend_variable` (unset by default), and Keras's keras.json
    names TensorFlow, as in an environment where TensorFlow was installed once.
    """
    home = tmp_path / "home"
    (home / ".keras").mkdir(parents=True, exist_ok=True)
    (home / ".keras" / "keras.json").write_text('{"backend": "tensorflow"}', encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "KERAS_HOME")}
    env["HOME"] = str(home)
    if backend_variable:
        env["KERAS_BACKEND"] = backend_variable
    prelude = f"import sys\nfor name in {missing!r}:\n    sys.modules[name] = None\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + code],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _first_installed(*names: str) -> str:
    return next(name for name in names if importlib.util.find_spec(name) is not None)


@needs_sphinx
def test_docs_build_picks_an_installed_backend(tmp_path):
    """conf.py, read as `make docs` reads it, without TensorFlow: keras.json names it.

    Catches a conf.py that imports Keras without choosing an installed backend: it
    fails with "No module named 'tensorflow'".
    """
    code = (
        "from sphinx.config import Config\n"
        "from sphinx.util.tags import Tags\n"
        f"Config.read({str(DOCS)!r}, overrides={{}}, tags=Tags())\n"
        "import keras\n"
        "print('backend:', keras.backend.backend())\n"
    )
    proc = _fresh_python(code, tmp_path, missing=("tensorflow",))
    assert proc.returncode == 0, proc.stderr
    expected = _first_installed("jax", "torch")
    assert f"backend: {expected}" in proc.stdout
    assert f"docs/conf.py: building with {expected}, the first installed backend" in proc.stderr


@needs_sphinx
@pytest.mark.parametrize(
    "missing, variable, message",
    [
        (
            ("tensorflow", "jax", "torch"),
            None,
            "docs/conf.py: cannot build the docs: no Keras backend is installed: "
            'pip install "keras-extras[jax]" (or [tensorflow], or [torch])',
        ),
        (
            ("tensorflow",),
            "tensorflow",
            "docs/conf.py: cannot build the docs: the tensorflow backend (KERAS_BACKEND) "
            'is not installed: pip install "keras-extras[tensorflow]"',
        ),
    ],
    ids=["no backend", "KERAS_BACKEND not installed"],
)
def test_docs_build_without_a_backend_stops_with_one_line(tmp_path, missing, variable, message):
    """`make docs` with no usable backend: one line says why, and nothing else."""
    code = (
        "from sphinx.cmd.build import main\n"
        f"sys.exit(main(['-q', '-b', 'dummy', {str(DOCS)!r}, {str(tmp_path / 'out')!r}]))\n"
    )
    proc = _fresh_python(code, tmp_path, missing, variable)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [message]


def test_install_page_chooses_an_installed_backend(tmp_path):
    """docs/install.rst's Python, copied into an environment without TensorFlow.

    Catches a snippet that names a backend, `os.environ.setdefault("KERAS_BACKEND",
    "tensorflow")`: there it fails inside Keras with "No module named 'tensorflow'".
    """
    code = "".join(block.code for block in page_blocks(DOCS / "install.rst"))
    assert "import keras" in code
    proc = _fresh_python(code, tmp_path, missing=("tensorflow",))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith(f"on {_first_installed('jax', 'torch')}")
