"""Where `keras_extras.TrainingPlotter`'s curves are drawn: one process for every plotter.

Drawing a figure with matplotlib takes tens of milliseconds of Python and C++ that hold
the GIL. In a thread of the training process, every training step would wait for the
GIL while a figure is drawn; a child process keeps the two apart. Starting one costs
about a second of CPU (importing matplotlib), so one child serves every plotter of a
Python process: `shared()` is started by the first `fit` that draws, and ends when
Python exits.

Both ends of the protocol live here. The parent (`PlotProcess`) starts `main` in a
child with `child_command()`, and a worker thread sends it one pickled
`keras_extras_core.plot_job.Job` per drawing on stdin and reads one pickled reply
(`{"error": ..., "png": ...}`) per job on stdout. Each job comes in a `Request`, which
says where its PNG and errors go.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import os
import pickle
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

from keras_extras_core.figure import TrainingFigure
from keras_extras_core.plot_job import Job, run_job

# The child gives way to training for the CPU it shares with it.
CHILD_NICENESS = 10

# After each drawing, a drawing that may be skipped waits this many times as long as
# that drawing took, unless `wait` is called: when epochs end faster than figures are
# drawn, the child draws a quarter of the time at most, on cores that training uses.
REST_PER_DRAWING = 3.0


def child_command() -> list[str]:
    """The command that starts a drawing process: this module, run with `-m`.

    `-P` keeps the current folder off the child's `sys.path`, so that a user's file
    named like a module (`matplotlib.py`) cannot shadow it.
    """
    return [sys.executable, "-P", "-m", __name__]


def _child_environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    # The child never selects a backend: a notebook's MPLBACKEND, which matplotlib
    # validates on import, is of no use to it. It finds this package where the parent
    # found it, also when that folder is on the parent's sys.path only.
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    return env


def main() -> None:
    """The child: serves drawing jobs from stdin until it closes; one reply per job."""
    if hasattr(os, "nice"):
        with contextlib.suppress(OSError):
            os.nice(CHILD_NICENESS)
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    # Whatever else prints must not corrupt the replies.
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    jobs = sys.stdin.buffer
    figure = None
    with contextlib.suppress(Exception):
        # Importing matplotlib here overlaps with the first epoch; if it fails, the
        # first job fails with the reason.
        figure = TrainingFigure()
    while True:
        try:
            job = pickle.load(jobs)
        except EOFError:
            return
        reply: dict[str, Any] = {"error": None, "png": None}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                figure = figure or TrainingFigure()
                reply["png"] = run_job(figure, job)
        except Exception as error:  # noqa: BLE001 - the parent reports it
            reply["error"] = _one_line(error)
        pickle.dump(reply, replies, protocol=pickle.HIGHEST_PROTOCOL)
        replies.flush()


def _one_line(error: BaseException) -> str:
    """`error` and where it was raised, in one line: a warning's worth."""
    where = traceback.extract_tb(error.__traceback__)[-1:]
    at = f" (at {where[0].filename}:{where[0].lineno}, in {where[0].name})" if where else ""
    return "".join(traceback.format_exception_only(error)).strip() + at


def _end_child(process: subprocess.Popen, stderr: Any) -> None:
    """Ends a child that is idle or finishing its job, and releases its pipes."""
    if process.stdin is not None:
        # Closing its stdin ends the child once its current job is written.
        with contextlib.suppress(OSError):
            process.stdin.close()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stdout is not None:
        with contextlib.suppress(OSError):
            process.stdout.close()
    stderr.close()


class Clock:
    """Real time, by which `PlotProcess` measures drawings and rests; tests pass their own."""

    def now(self) -> float:
        """Seconds on a monotonic clock."""
        return time.monotonic()

    def wait(self, condition: threading.Condition, seconds: float) -> None:
        """Waits on `condition`, held by the caller, until notified or `seconds` pass."""
        condition.wait(seconds)


@dataclasses.dataclass(eq=False)
class Request:
    """A queued job, with where its PNG and errors go.

    `on_png` and `on_error` are called in the worker thread, inside `context`: the
    context of the thread that queued the job, so that what they show (in a notebook,
    the cell's output) goes where that thread's output goes.
    """

    job: Job
    on_png: Callable[[bytes], None] | None
    on_error: Callable[[BaseException], None]
    context: contextvars.Context = dataclasses.field(default_factory=contextvars.copy_context)

    def skippable(self) -> bool:
        """Whether this drawing may wait, or be dropped for a later one: it writes no snapshot."""
        return not (self.job.snapshot and self.job.options.snapshot)

    def replaced_by(self, later: Request) -> bool:
        """Whether `later` redraws everything this request draws, with newer data."""
        return (
            self.skippable()
            and later.job.options.plot_file() == self.job.options.plot_file()
            and later.on_png == self.on_png
        )


class PlotProcess:
    """The parent side: a child process fed, one job at a time, by a worker thread.

    Requests are run in order. One that a later request replaces (same plot file,
    same PNG receiver, no snapshot) is dropped. When every queued request may be
    skipped, the next waits until the child has rested `REST_PER_DRAWING` times as
    long as its last drawing took. `wait` ends the rest and returns once every
    request queued so far is written or dropped. Errors never propagate: each goes to
    its request's `on_error`. The child lives from `start` until Python exits, or
    until this object is garbage-collected.

    Args:
        clock: Measures drawings and times rests.
        command: Returns the command that starts a child.
    """

    def __init__(
        self, clock: Clock | None = None, command: Callable[[], list[str]] = child_command
    ) -> None:
        self._clock = clock or Clock()
        self._command = command
        self._job_lock = threading.Lock()
        # Notified when a request is queued or a `wait` begins; both end a rest.
        self._job_added = threading.Condition(self._job_lock)
        self._requests: deque[Request] = deque()
        self._worker: threading.Thread | None = None
        self._waiting = 0  # threads in `wait`: no rest while there are any
        self._rest_until = -float("inf")  # clock time before which skippable requests wait
        self._process: subprocess.Popen | None = None
        self._stderr: Any = None
        self._finalizer: weakref.finalize | None = None

    def start(self) -> subprocess.Popen:
        """Starts the child, unless it runs; an OSError if it cannot be started."""
        if self._process is not None and self._process.poll() is None:
            return self._process
        self._discard()
        # A file, not a pipe: nobody has to drain it, and a crash's message can
        # be read back.
        self._stderr = tempfile.TemporaryFile()
        self._process = subprocess.Popen(
            self._command(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=_child_environment(),
        )
        # Ends the child with this object, or at exit; never refers to `self`.
        self._finalizer = weakref.finalize(self, _end_child, self._process, self._stderr)
        return self._process

    def pid(self) -> int | None:
        """The child's process id while it runs, else None."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def submit(self, request: Request) -> None:
        """Queues `request` and returns at once."""
        with self._job_lock:
            self._requests.append(request)
            self._job_added.notify_all()
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._work, name="keras_extras.TrainingPlotter", daemon=True
                )
                self._worker.start()

    def wait(self) -> None:
        """Blocks until every request queued so far is written or dropped, without rests."""
        with self._job_lock:
            self._waiting += 1
            self._job_added.notify_all()
        try:
            while True:
                with self._job_lock:
                    worker = self._worker
                if worker is None:
                    return
                worker.join()
        finally:
            with self._job_lock:
                self._waiting -= 1

    def close(self) -> None:
        """Waits for the queued requests, then ends the child."""
        self.wait()
        finalizer, self._finalizer = self._finalizer, None
        self._process = self._stderr = None
        if finalizer is not None:
            finalizer()

    def _work(self) -> None:
        # This thread mostly waits on the child's pipe, without the GIL.
        while True:
            with self._job_lock:
                request = self._next_request()
                if request is None:
                    self._worker = None
                    return
            started = self._clock.now()
            try:
                png = self._run(request.job)
                if png is not None and request.on_png is not None:
                    request.context.run(request.on_png, png)
            except Exception as error:  # noqa: BLE001 - reported on the training thread
                request.context.run(request.on_error, error)
            ended = self._clock.now()
            self._rest_until = ended + REST_PER_DRAWING * (ended - started)

    def _next_request(self) -> Request | None:
        """The request to run next, or None when none is left; called holding the lock."""
        while self._requests:
            first = self._requests[0]
            if any(first.replaced_by(later) for later in list(self._requests)[1:]):
                self._requests.popleft()
                continue
            rest = self._rest_until - self._clock.now()
            if rest > 0 and not self._waiting and all(r.skippable() for r in self._requests):
                # Until the rest is over, a request is queued or a `wait` begins.
                self._clock.wait(self._job_added, rest)
                continue
            return self._requests.popleft()
        return None

    def _run(self, job: Job) -> bytes | None:
        process = self.start()
        # Both are pipes: never None.
        assert process.stdin is not None and process.stdout is not None
        try:
            pickle.dump(job, process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            process.stdin.flush()
            reply = pickle.load(process.stdout)
        except (OSError, EOFError, pickle.UnpicklingError) as error:
            process.kill()
            code = process.wait()
            self._stderr.seek(0)
            said = self._stderr.read().decode("utf-8", "replace").strip()[-2000:]
            self._discard()
            raise RuntimeError(
                f"the drawing process stopped (exit code {code}) while writing {job.files()}"
                + (f":\n{said}" if said else "")
            ) from error
        if reply["error"]:
            raise RuntimeError(reply["error"])
        return reply["png"]

    def _discard(self) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.kill()
            process.wait()
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


_shared: PlotProcess | None = None
_shared_lock = threading.Lock()


def shared() -> PlotProcess:
    """The drawing process of this Python process, made at the first call."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = PlotProcess()
        return _shared


if __name__ == "__main__":
    main()
