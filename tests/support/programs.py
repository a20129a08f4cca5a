"""Start a real program for a test and always stop it: the machinery under
``network.py``.

``LoopbackProgram`` runs one program in the foreground, in its own process group
and temporary directory, and reads its output line by line on a thread: each
line is an event to wait on (readiness, a request, an error), never a sleep.
``reserved_port`` hands it a free port with no window for a race, and
``require`` skips a test whose program is missing, or fails it under
``REQUIRE_NET_TESTS=1`` (set by ``.ci/run``, which installs the programs).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType

import pytest
from typing_extensions import Self

from . import WAIT

START_WAIT = 30.0  # bounds a program's start on a busy machine; it measures nothing


def require(program: str, package: str = "") -> str:
    """The path of ``program``; if missing, skip the test (fail it in CI)."""
    path = shutil.which(program, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    if path is None:
        reason = f"{program} is not installed (apt-get install {package or program})"
        if os.environ.get("REQUIRE_NET_TESTS") == "1":
            pytest.fail(f"network tests are required here, but {reason}")
        pytest.skip(reason)
    return path


@contextlib.contextmanager
def reserved_port() -> Iterator[int]:
    """A free loopback port, held until the block ends: start the program inside.

    Our socket stays bound (not listening) with ``SO_REUSEADDR``. tinyproxy,
    nginx and microsocks set ``SO_REUSEADDR`` on their listening sockets, and
    Linux lets such sockets share a port while neither listens, so the program
    binds the same port while no other ``bind(0)`` on the machine can be given
    it: no window between choosing the port and the program listening on it.
    """
    holder = socket.socket()
    try:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", 0))
        yield int(holder.getsockname()[1])
    finally:
        holder.close()


class LoopbackProgram:
    """A program in the foreground, in its own session and temporary directory.

    Its stdout and stderr go to one pipe that a thread reads line by line into
    ``log``; each line is an event for ``wait_for``. The program is ready when a
    line holds ``ready`` (it listens by then), or, for a program that says
    nothing (``ready=None``), when a connection to its port succeeds.
    ``close()`` stops it and every process it forked, and removes the directory.
    """

    name = "program"

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
        self.port = 0
        self._secrets: list[str] = []
        self._cond = threading.Condition()
        self._log: list[str] = []
        self._ready = False
        self._ended = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The program's process id, also the id of its own process group."""
        assert self._proc is not None
        return self._proc.pid

    @property
    def log(self) -> list[str]:
        """Every line the program wrote so far (secrets replaced with ``***``)."""
        with self._cond:
            return list(self._log)

    def wait_for(
        self, predicate: Callable[[Self], bool], timeout: float = WAIT
    ) -> bool:
        """Wait until ``predicate(self)`` holds, re-checked on each new log line."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)

    def _start(self, argv: Sequence[str], ready: str | None) -> None:
        """Run ``argv`` and wait until it logs ``ready`` (RuntimeError with its log
        if it exits or stays silent first; the caller then calls ``close()``)."""
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=self.directory,
            start_new_session=True,  # its own process group: see _kill_group
        )
        self._reader = threading.Thread(
            target=self._read, args=(ready,), name=f"{self.name}-log", daemon=True
        )
        self._reader.start()
        if ready is None:
            ready_now = self._connects()
        else:
            with self._cond:
                self._cond.wait_for(lambda: self._ready or self._ended, START_WAIT)
                ready_now = self._ready
        if not ready_now:
            raise RuntimeError(f"{self.name} did not start:\n" + "\n".join(self.log))

    def _connects(self) -> bool:
        """Whether a connection to the port succeeds before the program exits.

        Only for a program that logs nothing when it listens: with no event to
        wait on, try to connect, and between refusals wait on the program's end
        for 10 ms (which also stops the loop at once if it fails), within
        ``START_WAIT``.
        """
        deadline = time.monotonic() + START_WAIT
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), WAIT).close()
            except ConnectionRefusedError:
                with self._cond:
                    if self._cond.wait_for(lambda: self._ended, 0.01):
                        return False
            else:
                return True
        return False

    def _read(self, ready: str | None) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        # Blocks on the pipe: each line is written by the program as it happens.
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            is_ready = ready is not None and ready in line
            for secret in self._secrets:
                line = line.replace(secret, "***")
            with self._cond:
                self._log.append(line)
                self._ready = self._ready or is_ready
                self._cond.notify_all()
        # End of file: every process holding the pipe (workers too) has exited.
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def close(self) -> None:
        """Stop the program (TERM, then KILL to its whole group), remove its files."""
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()  # all three stop at once on TERM
            try:
                proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                self._kill_group(proc)
            with self._cond:
                gone = self._cond.wait_for(lambda: self._ended, WAIT)
            if not gone:  # a forked process outlived its parent and holds the pipe
                self._kill_group(proc)
            if self._reader is not None:
                self._reader.join(WAIT)
            if proc.stdout is not None:
                proc.stdout.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    @staticmethod
    def _kill_group(proc: subprocess.Popen[bytes]) -> None:
        # The group was made by start_new_session for this program alone, and
        # still has a member (the pipe is open), so its id names only ours.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(WAIT)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def with_hosts_file(hosts: Path, argv: list[str]) -> list[str]:
    """``argv`` run in a private mount namespace with ``hosts`` bound over
    ``/etc/hosts``.

    ``unshare`` execs the shell, which execs the program: one process, one pid.
    Its mounts are private, so the machine's ``/etc/hosts`` is never touched. As
    root no user namespace is needed; otherwise ``--map-root-user`` makes one.
    """
    script = 'hosts=$1; shift; mount --bind "$hosts" /etc/hosts && exec "$@"'
    unshare = ["unshare", "--mount", *(["--map-root-user"] * (os.geteuid() != 0))]
    return [*unshare, "sh", "-c", script, "sh", str(hosts), *argv]
