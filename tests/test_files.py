"""`keras_extras_core.files.atomic_write`: old or new file, never half of one, open()'s mode."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from keras_extras_core import files
from keras_extras_core.files import atomic_write

ROOT = Path(__file__).resolve().parent.parent
OLD = b"the previous, complete file\n"
NEW = b"the new content, " * 1000


@pytest.fixture
def umask():
    def set_umask(mask):
        os.umask(mask)

    previous = os.umask(0o022)
    os.umask(previous)
    yield set_umask
    os.umask(previous)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_writes_bytes_and_text_and_leaves_nothing_else(tmp_path):
    atomic_write(tmp_path / "a.bin", NEW)
    atomic_write(str(tmp_path / "b.txt"), "é\n")
    assert (tmp_path / "a.bin").read_bytes() == NEW
    assert (tmp_path / "b.txt").read_bytes() == "é\n".encode()
    assert sorted(os.listdir(tmp_path)) == ["a.bin", "b.txt"]


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002], ids=oct)
def test_a_new_file_gets_the_mode_open_gives(tmp_path, umask, mask):
    umask(mask)
    atomic_write(tmp_path / "ours", NEW)
    with open(tmp_path / "plain", "wb") as f:
        f.write(NEW)
    assert mode(tmp_path / "ours") == mode(tmp_path / "plain") == 0o666 & ~mask


@pytest.mark.parametrize("kept", [0o600, 0o644, 0o664], ids=oct)
def test_rewriting_a_file_keeps_its_mode_as_open_does(tmp_path, umask, kept):
    umask(0o022)
    for name in ("ours", "plain"):
        (tmp_path / name).write_bytes(OLD)
        os.chmod(tmp_path / name, kept)
    atomic_write(tmp_path / "ours", NEW)
    with open(tmp_path / "plain", "wb") as f:
        f.write(NEW)
    assert mode(tmp_path / "ours") == mode(tmp_path / "plain") == kept
    assert (tmp_path / "ours").read_bytes() == NEW


class HalfWriter:
    """A file whose write stores half the bytes, then raises `error` (a full disk, ^C)."""

    def __init__(self, f, error):
        self.f, self.error = f, error

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def fileno(self):
        return self.f.fileno()

    def write(self, data):
        self.f.write(data[: len(data) // 2])
        self.f.flush()
        raise self.error


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()])
@pytest.mark.parametrize("where", ["write", "fsync", "rename"])
def test_a_failure_leaves_the_old_file_and_no_temporary_file(tmp_path, monkeypatch, where, error):
    target = tmp_path / "plot.png"
    target.write_bytes(OLD)
    opened = []
    if where == "write":

        def half_open(path, mode="r"):
            opened.append(path)
            return HalfWriter(open(path, mode), error)

        monkeypatch.setattr(files, "open", half_open, raising=False)
    else:

        def fail(*args, **kwargs):
            raise error

        monkeypatch.setattr(files.os, {"fsync": "fsync", "rename": "replace"}[where], fail)
    with pytest.raises(type(error)):
        atomic_write(target, NEW)
    monkeypatch.undo()
    assert target.read_bytes() == OLD
    assert os.listdir(tmp_path) == ["plot.png"]
    if opened:
        # The temporary file was in the target's folder, hidden and named after it.
        assert os.path.dirname(opened[0]) == str(tmp_path)
        assert re.fullmatch(r"\.plot\.png\.[0-9a-f]{12}\.tmp", os.path.basename(opened[0]))


# A process killed halfway through writing the temporary file (no cleanup can run).
KILLED = """\
import os, sys
from keras_extras_core import files
real_open = open

class Dying:
    def __init__(self, f):
        self.f = f
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        pass
    def write(self, data):
        self.f.write(data[: len(data) // 2])
        self.f.flush()
        os._exit(17)

files.open = lambda path, mode: Dying(real_open(path, mode))
files.atomic_write(sys.argv[1], b"x" * 1000)
"""


def test_a_killed_writer_leaves_the_old_file_and_a_hidden_partial_one(tmp_path):
    target = tmp_path / "history.json"
    target.write_bytes(OLD)
    proc = subprocess.run([sys.executable, "-c", KILLED, str(target)])
    assert proc.returncode == 17
    assert target.read_bytes() == OLD
    leftovers = [name for name in os.listdir(tmp_path) if name != "history.json"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".history.json.")
    assert (tmp_path / leftovers[0]).stat().st_size == 500


def test_files_are_written_atomically_only_through_the_helper():
    # Any other temp-and-rename would be a seventh variant with its own guarantees.
    pattern = re.compile(r"os\.replace\(|os\.rename\(|mkstemp\(|NamedTemporaryFile\(")
    paths = [
        *(ROOT / "src").rglob("*.py"),
        *(ROOT / "benchmarks").rglob("*.py"),
        *(ROOT / "examples").rglob("*.py"),
        ROOT / "docs" / "conf.py",
    ]
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in paths
        if path != ROOT / "src" / "keras_extras_core" / "files.py"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert not offenders, f"write files with keras_extras_core.files.atomic_write: {offenders}"
