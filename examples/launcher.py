"""Starting worker processes safely: free ports, a hard timeout, no orphans.

Every multi-process example here (`tf_multiworker.py`, `jax_multiprocess.py`,
`torch_distributed_evaluation.py`) starts its processes with `Workers`. A
collective (an all-reduce, a barrier) waits forever for a peer that died, so a
script that only waits on its processes can hang; `Workers.wait` instead
reports the first process that exits with an error, as soon as it does, stops
the others, and gives up after a hard timeout. Each process runs in a process
group of its own, which is killed whole, children included.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any


class WorkerFailed(RuntimeError):
    """A worker exited with an error, or the group ran past its timeout."""


def free_ports(count: int) -> list[int]:
    """`count` distinct free TCP ports on 127.0.0.1, as the OS hands them out."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def loopback_env(**overrides: str) -> dict[str, str]:
    """This process's environment with `overrides`, for processes joined on loopback.

    torch.distributed's gloo backend binds to the address that the host name
    resolves to, which on many hosts is not on the loopback interface where
    the ranks meet, and may pick an interface the ranks cannot reach each
    other through. `GLOO_SOCKET_IFNAME`, which torch reads, names the
    interface: it is set to the loopback one unless the caller set it already.
    (JAX's gloo collectives, in jax 0.10.2, do not read it.)
    """
    env = dict(os.environ, **overrides)
    env.setdefault("GLOO_SOCKET_IFNAME", "lo0" if sys.platform == "darwin" else "lo")
    return env


def read_results(folder: str, names: list[str]) -> dict[str, Any]:
    """Each process's `<name>.json` in `folder`, by name."""
    results = {}
    for name in names:
        with open(os.path.join(folder, f"{name}.json")) as f:
            results[name] = json.load(f)
    return results


def run_all(launch: Callable[[str], Workers], timeout: float) -> dict[str, Any]:
    """Starts processes into a temporary folder, waits for them, and reads their results.

    Args:
        launch: Starts the processes, given the folder they write `<name>.json` to.
        timeout: Seconds to wait for every process to exit (see `Workers.wait`).

    Returns:
        Each process's `<name>.json`, by name.
    """
    with tempfile.TemporaryDirectory() as folder:
        with launch(folder) as workers:
            workers.wait(timeout)
        return read_results(folder, workers.names)


def _describe(returncode: int) -> str:
    if returncode < 0:
        return f"was killed by {signal.Signals(-returncode).name}"
    return f"exited with status {returncode}"


class Workers:
    """Processes started together, each in its own process group.

    Use it as a context manager: leaving the block kills every process group
    that is still alive, whatever happened inside.

    Args:
        commands: One argv list per process.
        envs: One environment per process.
        folder: Where each process's output goes (`<name>.log`).
        names: A name per process, for logs and messages.
    """

    def __init__(
        self, commands: list[list[str]], envs: list[dict], folder: str, names: list[str]
    ) -> None:
        self.names = names
        self.logs = [os.path.join(folder, f"{name}.log") for name in names]
        self.processes: list[subprocess.Popen] = []
        try:
            for command, env, log in zip(commands, envs, self.logs):
                with open(log, "wb") as out:
                    # A session of its own, so that stop() reaches its children too.
                    self.processes.append(
                        subprocess.Popen(
                            command,
                            env=env,
                            stdout=out,
                            stderr=subprocess.STDOUT,
                            start_new_session=True,
                        )
                    )
        except BaseException:
            self.stop()
            raise

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def log_tail(self, index: int, lines: int = 15) -> str:
        """The last `lines` lines of a process's output."""
        with open(self.logs[index], errors="replace") as f:
            return "".join(f.readlines()[-lines:])

    def wait(self, timeout: float) -> None:
        """Returns when every process has exited with status 0.

        Raises:
            WorkerFailed: as soon as one process exits otherwise (naming it,
                its status and the end of its output), or when `timeout`
                seconds pass first. The other processes are killed.
        """
        deadline = time.monotonic() + timeout
        while True:
            codes = [p.poll() for p in self.processes]
            failed = [i for i, code in enumerate(codes) if code not in (None, 0)]
            if failed:
                self.stop()
                raise WorkerFailed(
                    "; ".join(f"{self.names[i]} {_describe(codes[i])}" for i in failed)
                    + ", so the others were stopped. Last output of "
                    + f"{self.names[failed[0]]}:\n{self.log_tail(failed[0])}"
                )
            if all(code == 0 for code in codes):
                return
            if time.monotonic() > deadline:
                running = [self.names[i] for i, code in enumerate(codes) if code is None]
                self.stop()
                raise WorkerFailed(
                    f"{', '.join(running)} still running after {timeout:.0f} s; stopped. "
                    f"Last output of {running[0]}:\n{self.log_tail(codes.index(None))}"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        """Kills every process group still alive and reaps the processes."""
        for process in self.processes:
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for process in self.processes:
            process.wait()
