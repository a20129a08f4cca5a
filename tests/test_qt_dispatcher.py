"""QtDispatcher over many wake-ups: nothing it calls may corrupt the interpreter."""

from __future__ import annotations

import gc
import sys
from typing import Any

from ollama_stream_sync import QtDispatcher

from .gui import qt_run_until


def test_wake_ups_leave_the_refcount_of_true_alone(qt_app: Any) -> None:
    """PySide6 6.12's ``Signal.emit()`` drops a reference to ``True`` it never
    took: a dispatcher that woke the Qt thread that way freed ``True`` after
    enough wake-ups, and the process aborted ("bool_dealloc")."""
    dispatcher = QtDispatcher()
    ran: list[int] = []
    gc.collect()
    before = sys.getrefcount(True)
    for i in range(500):
        dispatcher.dispatch(lambda i=i: ran.append(i))
        assert qt_run_until(qt_app, lambda i=i: len(ran) > i)
    gc.collect()
    assert sys.getrefcount(True) > before - 100  # the emit-based wake: -500
    assert ran == list(range(500))
    dispatcher.close()
