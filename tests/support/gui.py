"""A virtual screen for the Tk tests and the offscreen platform for Qt.

Locally a missing Xvfb skips the Tk tests; in CI (``REQUIRE_GUI_TESTS=1``, set by
``.ci/run``, which installs Xvfb) it fails them instead, so they cannot be lost.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from . import WAIT

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
    # Xvfb picks a free display itself and writes its number once it listens:
    # no race with another test process, and no polling for its socket.
    read_end, write_end = os.pipe()
    screen = ["-screen", "0", "1024x768x24"]
    proc = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_end), "-nolisten", "tcp", *screen],
        pass_fds=(write_end,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        number = pipe.readline().strip()
    if not number:
        _unavailable(f"Xvfb exited with {proc.wait()}")
    display = f":{number}"
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
    later garbage collection could run on any thread. An exception in a Tk
    callback, which Tk would only print, fails the test.
    """
    import tkinter  # only the GUI tests need it

    root = tkinter.Tk()
    errors: list[BaseException] = []
    root.report_callback_exception = lambda kind, exc, tb: errors.append(exc)
    yield root
    with contextlib.suppress(tkinter.TclError):
        root.destroy()
    del root
    gc.collect()
    if errors:
        pytest.fail(f"a Tk callback raised {errors[0]!r} ({len(errors)} in all)")


def no_noise(capfd: pytest.CaptureFixture[str]) -> None:
    """Nothing was printed: no traceback from a thread, no Tk complaint."""
    out, err = capfd.readouterr()
    for noise in ("Traceback", "main thread is not in main loop", "Exception"):
        assert noise not in err, err
        assert noise not in out, out


def tk_run_until(
    root: Any, condition: Callable[[], bool], timeout: float = WAIT
) -> bool:
    """Run Tk's event loop until ``condition()`` holds; return it.

    It blocks in Tk's own wait for events, checking after each; ``timeout`` only
    bounds a hang, it times nothing.
    """
    expired: list[bool] = []
    timer = root.after(int(timeout * 1000), lambda: expired.append(True))
    try:
        while not condition() and not expired:
            root.tk.dooneevent(0)
    finally:
        with contextlib.suppress(Exception):  # the root may be gone by now
            root.after_cancel(timer)
    return condition()


def tk_shows_whole(label: Any) -> bool:
    """Whether a Tk label shows all of its text: it needs no more room than it has."""
    label.update_idletasks()
    return bool(
        label.winfo_reqwidth() <= label.winfo_width()
        and label.winfo_reqheight() <= label.winfo_height()
    )


def too_long_for_a_line(label: Any) -> bool:
    """Whether a Tk label's text is wider than the label: it must wrap to be seen."""
    import tkinter.font

    text = str(label.cget("text"))
    width = tkinter.font.nametofont("TkDefaultFont").measure(text)
    return bool(width > label.winfo_width())


def qt_run_until(
    app: Any, condition: Callable[[], bool], timeout: float = WAIT
) -> bool:
    """Run Qt's event loop until ``condition()`` holds; return it (as above)."""
    from PySide6.QtCore import QEventLoop, QTimer

    expired: list[bool] = []
    timer = QTimer()
    timer.setSingleShot(True)
    timer.timeout.connect(lambda: expired.append(True))
    timer.start(int(timeout * 1000))
    try:
        while not condition() and not expired:
            app.processEvents(QEventLoop.ProcessEventsFlag.WaitForMoreEvents)
    finally:
        timer.stop()
    return condition()


@pytest.fixture(scope="session")
def qt_app() -> object:
    """The process's QApplication on the offscreen platform."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    try:
        from PySide6.QtWidgets import QApplication
    except ImportError:
        _unavailable("PySide6 is not installed (pip install '.[qt]')")
    return QApplication.instance() or QApplication([])


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def examples_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``examples/`` importable for one test; the example modules it imported
    are forgotten after it, so the next test loads them afresh."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        path = getattr(sys.modules[name], "__file__", None) or ""
        if Path(path).parent == EXAMPLES:
            del sys.modules[name]


def load(name: str) -> ModuleType:
    """Import an example module by name (under ``examples_path``)."""
    return importlib.import_module(name)
