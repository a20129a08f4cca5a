"""Driving the command line as a person would: in a real terminal (tmux) and in pipes.

The tmux terminal is 100 columns wide (or as asked) and read back with
``capture-pane``. A terminal offers no event to wait on, so ``Terminal.wait``
polls the screen until the expected text shows, bounded by a deadline; nothing
here times anything. The fixtures are registered in ``conftest.py``.
"""

from __future__ import annotations

import codecs
import fcntl
import itertools
import os
import re
import select
import shlex
import shutil
import struct
import subprocess
import sys
import sysconfig
import termios
import time
import venv
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from .gui import REQUIRED

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "ollama_stream_sync"]
TIMEOUT = 60  # bounds a hung command; it measures nothing
SCREEN_WAIT = 30.0  # bounds each wait for the screen; generous for a busy machine
WIDTH, HEIGHT = 100, 40
EXIT_STATUS = re.compile(r"^\[exit status (\d+)\]$", re.MULTILINE)


def cli_env(**changes: str | None) -> dict[str, str]:
    """The test's environment without colour or proxy surprises, plus ``changes``."""
    drop = ("NO_COLOR", "COLUMNS", "OLLAMA_HOST", "TMUX", "TMUX_PANE")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run_cli(
    *args: str, stdin: str = "", env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=ROOT,
        env=dict(env) if env is not None else cli_env(),
        check=False,
    )


def assert_one_line_failure(done: subprocess.CompletedProcess[str]) -> str:
    """Exit status 1, one line on stderr, no traceback; returns the line."""
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("ollama-stream-sync: error: ")
    return lines[0]


@pytest.fixture
def long_python(tmp_path: Path) -> str:
    """A python whose ``sys.executable`` is a long path, seeing this one's packages.

    A venv (no pip: quick) deep in a temporary folder, as an unpacked sdist's is.
    """
    home = tmp_path / ("a-long-folder-name-" * 6) / "venv"
    venv.create(home, symlinks=True)
    purelib = sysconfig.get_path("purelib", vars={"base": str(home)})
    (Path(purelib) / "outer.pth").write_text(
        f"import site; site.addsitedir({sysconfig.get_path('purelib')!r})\n"
    )
    python = str(home / "bin" / "python")
    assert len(python) > WIDTH
    return python


# -- a real terminal ------------------------------------------------------------------

_sessions = itertools.count()


class Terminal:
    """One command running in its own tmux server, 100x40, read with capture-pane."""

    def __init__(self, tmp: Path) -> None:
        self.socket = str(tmp / f"tmux-{next(_sessions)}.sock")
        config = tmp / "tmux.conf"
        # remain-on-exit keeps the pane after the command ends, to read its status.
        config.write_text("set -g remain-on-exit on\nset -g status off\n")
        self.config = str(config)

    def tmux(self, *args: str, env: Mapping[str, str] | None = None) -> str:
        done = subprocess.run(
            ["tmux", "-S", self.socket, "-f", self.config, *args],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env=dict(env) if env is not None else None,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def start(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        width: int = WIDTH,
        python: str = sys.executable,
    ) -> None:
        """Run ``python -m ollama_stream_sync ARGS`` in a terminal ``width`` wide.

        bash runs it and then prints its exit status on the screen: tmux's own
        ``pane_dead_status`` can stay empty when the terminal closes before tmux
        reaps the process. bash, waiting on a command, lets Ctrl-C reach it
        alone, and goes on when the command handles it and exits.
        """
        command = shlex.join([python, *CLI[1:], *args])
        self.tmux(
            "new-session", "-d", "-x", str(width), "-y", str(HEIGHT),
            "-c", str(ROOT), "bash", "--norc", "--noprofile", "-c",
            command + '; echo "[exit status $?]"',
            env=env if env is not None else cli_env(),
        )  # fmt: skip

    def keys(self, *keys: str) -> None:
        """Type: text is sent literally, ``Enter``, ``C-c``, ``C-d`` as keys."""
        for key in keys:
            if key in ("Enter", "C-c", "C-d"):
                self.tmux("send-keys", key)
            else:
                self.tmux("send-keys", "-l", key)

    def screen(self, *, escapes: bool = False) -> str:
        """What the terminal shows now; wrapped lines joined, colours optional."""
        flags = ["-p", "-J", "-S", "-", "-E", "-"] + (["-e"] if escapes else [])
        return self.tmux("capture-pane", *flags)

    def wait(self, expect: str | Callable[[str], bool], what: str = "") -> str:
        """Poll the screen until ``expect`` shows; if it never does, fail with it."""
        check = expect if callable(expect) else (lambda s: expect in s)
        deadline = time.monotonic() + SCREEN_WAIT
        while True:
            screen = self.screen()
            if check(screen):
                return screen
            if time.monotonic() > deadline:
                pytest.fail(f"the screen never showed {what or expect!r}:\n{screen}")
            time.sleep(0.05)  # a terminal has no event to wait on: poll, bounded

    def exit_status(self) -> int:
        """Wait for the command to end; its exit status."""
        screen = self.wait(EXIT_STATUS.search, "the command exiting")
        found = EXIT_STATUS.search(screen)
        assert found is not None
        return int(found.group(1))

    def close(self) -> None:
        subprocess.run(
            ["tmux", "-S", self.socket, "kill-server"],
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
        )


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Terminal]:
    if shutil.which("tmux") is None:
        reason = "tmux is not installed (apt-get install tmux)"
        if REQUIRED:
            pytest.fail(f"terminal tests are required here, but {reason}")
        pytest.skip(reason)
    term = Terminal(tmp_path)
    yield term
    term.close()


def run_in_pty(args: list[str], env: Mapping[str, str]) -> str:
    """Run the CLI with stdout on a pseudo-terminal; what it wrote there."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", HEIGHT, WIDTH, 0, 0))
    child = subprocess.Popen(
        [*CLI, *args],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=dict(env),
    )
    os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + TIMEOUT
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not data:
                break
            out += data
        assert child.wait(timeout=TIMEOUT) == 0
    finally:
        os.close(master)
        if child.poll() is None:
            child.kill()
            child.wait()
        assert child.stderr is not None
        child.stderr.close()
    return codecs.decode(bytes(out), "utf-8", "replace")
