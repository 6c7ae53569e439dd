"""Sphinx configuration for the keras_extras documentation.

The build must pass `sphinx-build -W` offline (CI has no network but PyPI), so the
intersphinx inventories for Python and NumPy are written here from `INVENTORIES`
instead of being downloaded: they hold the objects this documentation refers to,
with their real addresses on docs.python.org and numpy.org.
"""

from __future__ import annotations

import inspect
import os
import re
import sys
import zlib
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent / "src"))

from keras_extras_cli import UsageError, choose_backend  # noqa: E402


def keras_backend() -> str:
    """The Keras backend to build with, chosen as `keras-extras demo` chooses it.

    `KERAS_BACKEND`, else the backend in Keras's `keras.json` if it is installed, else
    the first installed; a note says so in the last case.

    If no backend is installed, or `KERAS_BACKEND` names one that is not, it ends
    the build with one line on stderr (the CLI's message) and exit code 2: Sphinx
    would report an exception raised here with a page of context and a traceback.
    """
    try:
        backend, note = choose_backend(None)
    except UsageError as error:
        print(f"docs/conf.py: cannot build the docs: {error}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(2)
    if note:
        print(
            f"docs/conf.py: building with {backend}, the first installed backend "
            "(KERAS_BACKEND is unset and keras.json names none installed)",
            file=sys.stderr,
        )
    return backend


# Keras reads its backend once, when it is first imported: chosen before that.
os.environ["KERAS_BACKEND"] = keras_backend()

import keras_extras  # noqa: E402
from keras_extras_core.files import atomic_write  # noqa: E402

project = "keras_extras"
author = "keras_extras developers"
copyright = "keras_extras developers"
release = keras_extras.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "sphinx_copybutton",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
# Docstrings follow Keras's convention: `x` is code, as in Markdown.
default_role = "code"

html_theme = "furo"
html_title = f"keras_extras {release}"
html_static_path = []

# docs/api.rst lists each class's members: what a user calls, not Keras's hooks. (No
# default "members": Sphinx 9 lets a default of True override a directive's list.)
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_default_options = {"show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_include_init_with_doc = False
# A layer's call arguments, as Keras's docstrings give them.
napoleon_custom_sections = [("Call arguments", "params_style")]

# Strip the prompts when copying: a copied block pastes into a Python shell.
copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True

myst_heading_anchors = 3

# --- Intersphinx, offline -------------------------------------------------------------
# name -> (role, path on the site), where "$" in the path stands for the name.
INVENTORIES = {
    "python": (
        "https://docs.python.org/3/",
        {
            "bool": ("py:class", "library/functions.html#bool"),
            "bytes": ("py:class", "library/stdtypes.html#bytes"),
            "dict": ("py:class", "library/stdtypes.html#dict"),
            "float": ("py:class", "library/functions.html#float"),
            "int": ("py:class", "library/functions.html#int"),
            "list": ("py:class", "library/stdtypes.html#list"),
            "object": ("py:class", "library/functions.html#object"),
            "str": ("py:class", "library/stdtypes.html#str"),
            "tuple": ("py:class", "library/stdtypes.html#tuple"),
            "ImportError": ("py:exception", "library/exceptions.html#$"),
            "KeyError": ("py:exception", "library/exceptions.html#$"),
            "OSError": ("py:exception", "library/exceptions.html#$"),
            "RuntimeError": ("py:exception", "library/exceptions.html#$"),
            "TypeError": ("py:exception", "library/exceptions.html#$"),
            "ValueError": ("py:exception", "library/exceptions.html#$"),
            "doctest": ("py:module", "library/doctest.html#module-doctest"),
            "os.replace": ("py:function", "library/os.html#$"),
            "pathlib.Path": ("py:class", "library/pathlib.html#$"),
            "typing.Any": ("py:data", "library/typing.html#$"),
        },
    ),
    "numpy": (
        "https://numpy.org/doc/stable/",
        {
            "numpy.ndarray": ("py:class", "reference/generated/$.html#$"),
            "numpy.float32": ("py:class", "reference/arrays.scalars.html#$"),
            "numpy.float64": ("py:class", "reference/arrays.scalars.html#$"),
            "numpy.load": ("py:function", "reference/generated/$.html#$"),
            "numpy.savez_compressed": ("py:function", "reference/generated/$.html#$"),
            "numpy.testing.assert_allclose": ("py:function", "reference/generated/$.html#$"),
        },
    ),
}


def _write_inventory(path: Path, project_name: str, objects: dict) -> None:
    """Writes a Sphinx version 2 inventory (the `objects.inv` format)."""
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project_name}\n"
        "# Version: \n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    body = "".join(
        f"{name} {role} 1 {uri.replace('$', name)} -\n"
        for name, (role, uri) in sorted(objects.items())
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, header.encode() + zlib.compress(body.encode()))


intersphinx_mapping = {}
for _name, (_url, _objects) in INVENTORIES.items():
    _path = DOCS / "_build" / "inventories" / f"{_name}.inv"
    _write_inventory(_path, _name, _objects)
    # Only the local file is listed, so intersphinx never goes to the network.
    intersphinx_mapping[_name] = (_url, str(_path))

# --- Keras-style docstrings -----------------------------------------------------------
# Docstrings here follow Keras's own style: `x` is code, and code that is not a doctest
# sits in Markdown ``` fences. reStructuredText needs a code-block directive for a
# fence. And napoleon splits "Returns:" and "Raises:" entries at their first colon
# unless it is inside ``double`` backticks, so single-backtick code is doubled.
_FENCE = re.compile(r"^(\s*)```\s*(\w*)\s*$")
_CODE = re.compile(r"(?<![`:\w])`([^`]+)`(?![`_])")


def keras_style_to_rst(lines: list[str]) -> list[str]:
    """Rewrites code fences as `code-block` directives and `code` as ``code``."""
    out: list[str] = []
    fence_indent = None
    in_doctest = False  # a doctest block runs from a ">>>" line to the next blank line
    for line in lines:
        match = _FENCE.match(line)
        in_doctest = bool(line.strip()) and (in_doctest or line.lstrip().startswith(">>>"))
        if fence_indent is None and match:
            fence_indent = match.group(1)
            out += [f"{fence_indent}.. code-block:: {match.group(2) or 'text'}", ""]
        elif fence_indent is not None and match and match.group(1) == fence_indent:
            fence_indent = None
            out.append("")
        elif fence_indent is not None:
            out.append(f"{fence_indent}   {line}" if line.strip() else "")
        elif in_doctest:
            out.append(line)
        else:
            out.append(_CODE.sub(r"``\1``", line))
    return out


def _process_docstring(app, what, name, obj, options, lines):
    lines[:] = keras_style_to_rst(lines)


def public_bases(bases: list[type]) -> list[type]:
    """`bases` with each private class (`_Name`) replaced by its own public bases."""
    public: list[type] = []
    for base in bases:
        found = public_bases(list(base.__bases__)) if base.__name__.startswith("_") else [base]
        public += [cls for cls in found if cls not in public]
    return public


def _process_bases(app, name, obj, options, bases):
    bases[:] = public_bases(bases)


def _process_signature(app, what, name, obj, options, signature, return_annotation):
    # Keras's Layer and Model define `__new__(cls, *args, **kwargs)`, which autodoc
    # would show as the class's signature: the constructor's is the one to read.
    if what == "class" and signature == "(*args, **kwargs)":
        init = inspect.signature(obj.__init__)
        parameters = [
            p.replace(annotation=inspect.Parameter.empty)
            for p in list(init.parameters.values())[1:]
        ]
        signature = str(init.replace(parameters=parameters, return_annotation=init.empty))
    return signature, return_annotation


def setup(app):
    # Before napoleon (priority 500), which would read a fence as prose.
    app.connect("autodoc-process-docstring", _process_docstring, priority=400)
    app.connect("autodoc-process-bases", _process_bases)
    app.connect("autodoc-process-signature", _process_signature)
