"""The one way this project writes a file that someone may read at any moment.

Used by the package (history exports, plots, the demo's report), the benchmarks, the
examples and the docs build. It imports nothing but the standard library.
"""

from __future__ import annotations

import contextlib
import os
import stat
import uuid


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Writes `data` to `path` so that `path` is always either the old file or the new one.

    The bytes (a `str` is encoded as UTF-8) go to a hidden temporary file in the same
    folder, are flushed to disk with `fsync`, and the temporary file then replaces
    `path` in one `os.replace`. If anything fails, the temporary file is removed and
    `path` is untouched; only a hard crash (a killed process, a power cut) can leave a
    `.<name>.<random>.tmp` file beside it.

    The file gets the mode that a plain `open(path, "w")` would give it: that of the
    file it replaces, else 0666 less the umask.

    Args:
        path: The file to write; its folder must exist.
        data: The whole content.

    Raises:
        OSError: from creating, writing, syncing or renaming the file.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    path = os.path.abspath(os.fspath(path))
    folder, name = os.path.split(path)
    temp = os.path.join(folder, f".{name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        # Not `tempfile.mkstemp`: its 0600 mode would outlive the rename. `open` with
        # "x" creates the file as `open(path, "w")` would, 0666 less the umask.
        with open(temp, "xb") as f:
            with contextlib.suppress(FileNotFoundError):
                # Rewriting a file keeps its mode, as `open(path, "w")` does.
                os.chmod(temp, stat.S_IMODE(os.stat(path).st_mode))
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
