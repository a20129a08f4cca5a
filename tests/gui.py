"""A virtual screen for the Tk tests and the offscreen platform for Qt.

Locally a missing Xvfb skips the Tk tests; in CI (``REQUIRE_GUI_TESTS=1``, set by
``.ci/run``, which installs Xvfb) it fails them instead, so they cannot be lost.
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REQUIRED = os.environ.get("REQUIRE_GUI_TESTS") == "1"


def _unavailable(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"GUI tests are required here, but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def xvfb_display() -> Iterator[str]:
    """A running Xvfb display (``:N``); DISPLAY is set while the session runs."""
    if shutil.which("Xvfb") is None:
        _unavailable("Xvfb is not installed (apt-get install xvfb)")
    for number in range(90, 110):
        if (
            not Path(f"/tmp/.X11-unix/X{number}").exists()
            and not Path(f"/tmp/.X{number}-lock").exists()
        ):
            break
    display = f":{number}"
    proc = subprocess.Popen(
        ["Xvfb", display, "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    socket_path = Path(f"/tmp/.X11-unix/X{number}")
    deadline = time.monotonic() + 10
    # Xvfb offers no readiness signal but its socket appearing.
    while not socket_path.exists() and time.monotonic() < deadline:
        if proc.poll() is not None:
            _unavailable(f"Xvfb exited with {proc.returncode}")
        time.sleep(0.02)
    previous = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = display
    try:
        yield display
    finally:
        if previous is None:
            os.environ.pop("DISPLAY", None)
        else:
            os.environ["DISPLAY"] = previous
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def tk_root(xvfb_display: str) -> Iterator[Any]:
    """A Tk root window, destroyed and garbage-collected on this (Tk's) thread.

    Tk aborts the process if its objects are collected on another thread, and a
    later garbage collection could run on any thread.
    """
    import tkinter  # only the GUI tests need it

    root = tkinter.Tk()
    yield root
    with contextlib.suppress(tkinter.TclError):
        root.destroy()
    del root
    gc.collect()


@pytest.fixture(scope="session")
def qt_app() -> object:
    """The process's QApplication on the offscreen platform."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    try:
        from PySide6.QtWidgets import QApplication
    except ImportError:
        _unavailable("PySide6 is not installed (pip install '.[qt]')")
    return QApplication.instance() or QApplication([])
