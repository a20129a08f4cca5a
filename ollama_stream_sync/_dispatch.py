"""Where user callbacks run: on the worker, in a polling loop, or on a GUI thread.

GUI toolkits must only be touched from their own thread. A dispatcher takes each
callback as a ``fn()`` and runs it where the caller needs it, in order, one at a
time. The worker never waits for a dispatched callback to run.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Dispatcher(Protocol):
    """Decides on which thread a stream's callbacks run.

    ``dispatch(fn)`` must run ``fn()`` exactly once, and the calls it is given in
    the order it was given them, never two at once. It may be called from any
    thread and must not block for long.
    """

    def dispatch(self, fn: Callable[[], object]) -> None:
        """Arrange for ``fn()`` to run."""
        ...


@runtime_checkable
class Pumped(Protocol):
    """A dispatcher whose owner runs the callbacks by calling ``pump``."""

    def pump(self, timeout: float | None = 0) -> int:
        """Run pending callbacks on this thread; return how many ran."""
        ...


class InlineDispatcher:
    """Runs callbacks at once on the stream's worker thread (the default).

    The fastest choice, and right for scripts and servers. GUI code needs a
    dispatcher that runs callbacks on the GUI thread instead.

    Example::

        client = StreamingClient(dispatcher=InlineDispatcher())
    """

    def dispatch(self, fn: Callable[[], object]) -> None:
        """Run ``fn()`` now, on the calling (worker) thread."""
        fn()

    def __repr__(self) -> str:
        return "InlineDispatcher()"


class QueueDispatcher:
    """Callbacks wait in a queue until the owner calls ``pump()``.

    For legacy event loops, game loops and scripts that poll. A blocking
    ``chat()`` given this dispatcher pumps it while it waits, so the callbacks
    run on the caller's thread with no extra code.

    Example::

        callbacks = QueueDispatcher()
        handle = client.start_chat("qwen3", msgs, on_content=show, dispatcher=callbacks)
        while not handle.done():
            callbacks.pump(timeout=0.05)  # inside your own loop
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Callable[[], object]] = queue.SimpleQueue()
        # Guards nothing but pump(): two threads pumping at once would run two
        # callbacks at once.
        self._pumping = threading.Lock()

    def dispatch(self, fn: Callable[[], object]) -> None:
        """Queue ``fn`` (any thread)."""
        self._queue.put(fn)

    def pump(self, timeout: float | None = 0) -> int:
        """Run what is pending on the calling thread; return how many ran.

        Args:
            timeout: ``0`` runs only what is already queued; a positive number
                (or ``None``: forever) first waits that long for something to run.
        """
        with self._pumping:
            ran = 0
            if timeout != 0:
                try:
                    fn = self._queue.get(timeout=timeout)
                except queue.Empty:
                    return 0
                fn()
                ran = 1
            while True:
                try:
                    fn = self._queue.get_nowait()
                except queue.Empty:
                    return ran
                fn()
                ran += 1

    @property
    def pending(self) -> int:
        """How many callbacks wait (approximately, as another thread may add)."""
        return self._queue.qsize()

    def __repr__(self) -> str:
        return f"QueueDispatcher(pending={self.pending})"


class CallLaterDispatcher:
    """Runs callbacks through a toolkit's thread-safe "call later" function.

    ``call_later(fn)`` must be safe to call from any thread and run ``fn()`` on
    the toolkit's thread: ``wx.CallAfter``, ``GLib.idle_add``, Qt's
    ``QTimer.singleShot`` wrapped by a signal, and so on. Callbacks are batched:
    one scheduled call runs everything pending, so a fast stream does not flood
    the toolkit's event queue.

    Example::

        client = StreamingClient(dispatcher=CallLaterDispatcher(wx.CallAfter))
    """

    def __init__(self, call_later: Callable[[Callable[[], Any]], object]) -> None:
        self._call_later = call_later
        self._queue: QueueDispatcher = QueueDispatcher()
        # Guards _scheduled: at most one drain is waiting in the toolkit's queue.
        self._lock = threading.Lock()
        self._scheduled = False

    def dispatch(self, fn: Callable[[], object]) -> None:
        """Queue ``fn`` and make sure a drain is scheduled (any thread)."""
        self._queue.dispatch(fn)
        with self._lock:
            if self._scheduled:
                return
            self._scheduled = True
        self._call_later(self._drain)

    def _drain(self) -> None:
        with self._lock:
            self._scheduled = False
        self._queue.pump(0)

    def __repr__(self) -> str:
        return f"CallLaterDispatcher({self._call_later!r})"


class TkDispatcher:
    """Runs callbacks on Tk's main loop; the worker never calls Tk.

    The worker only queues the callback and, when the queue was empty, writes a
    byte to a pipe that Tk watches (``createfilehandler``): Tk wakes, drains the
    queue on its own thread, and sleeps again. Nothing polls while idle. Where Tk
    has no file handlers (Windows), it falls back to checking the queue with
    ``after(poll_ms)``.

    Create it on the Tk thread, after the root window exists.

    Example::

        root = tkinter.Tk()
        client = StreamingClient(dispatcher=TkDispatcher(root))
    """

    def __init__(self, widget: Any, *, poll_ms: int = 20) -> None:
        self._widget = widget
        self._queue = QueueDispatcher()
        # Guards _signalled: one wake-up byte per batch, not per callback.
        self._lock = threading.Lock()
        self._signalled = False
        self._poll_ms = poll_ms
        self._read_fd: int | None = None
        self._write_fd: int | None = None
        tk = widget.tk
        if hasattr(tk, "createfilehandler"):
            self._read_fd, self._write_fd = os.pipe()
            os.set_blocking(self._read_fd, False)
            import tkinter  # noqa: PLC0415  # only Tk users import it

            tk.createfilehandler(self._read_fd, tkinter.READABLE, self._on_wake)
        else:  # pragma: no cover  # Windows
            widget.after(poll_ms, self._poll)

    def dispatch(self, fn: Callable[[], object]) -> None:
        """Queue ``fn``; wake Tk if it may be asleep (any thread, no Tk call)."""
        self._queue.dispatch(fn)
        if self._write_fd is None:
            return
        with self._lock:
            if self._signalled:
                return
            self._signalled = True
        with contextlib.suppress(OSError):  # closed: the window is gone
            os.write(self._write_fd, b"x")

    def _on_wake(self, fd: int, mask: int) -> None:
        with contextlib.suppress(OSError):
            os.read(fd, 4096)
        with self._lock:
            self._signalled = False
        self._queue.pump(0)

    def _poll(self) -> None:  # pragma: no cover  # Windows
        self._queue.pump(0)
        self._widget.after(self._poll_ms, self._poll)

    def close(self) -> None:
        """Stop watching the pipe (call on the Tk thread before destroying Tk)."""
        if self._read_fd is not None:
            with contextlib.suppress(Exception):
                self._widget.tk.deletefilehandler(self._read_fd)
            os.close(self._read_fd)
            self._read_fd = None
        if self._write_fd is not None:
            os.close(self._write_fd)
            self._write_fd = None

    def __repr__(self) -> str:
        return f"TkDispatcher({self._widget!r})"


class QtDispatcher:
    """Runs callbacks on the Qt thread that created it, by a queued signal.

    Needs PySide6: ``pip install ollama-stream-sync[qt]``. Create it on the GUI
    thread (after the ``QApplication``).

    Example::

        app = QApplication([])
        client = StreamingClient(dispatcher=QtDispatcher())
    """

    def __init__(self) -> None:
        try:
            from PySide6 import QtCore  # noqa: PLC0415  # optional extra
        except ImportError as exc:
            raise ImportError(
                "QtDispatcher needs PySide6: pip install 'ollama-stream-sync[qt]'"
            ) from exc

        class _Relay(QtCore.QObject):
            call = QtCore.Signal(object)

        # Qt aborts if a QObject is destroyed off its thread, and the garbage
        # collector may run on any thread. So the relay holds no reference
        # cycle (it is connected to a plain function) and belongs to the
        # application object, which destroys it on the Qt thread.
        app = QtCore.QCoreApplication.instance()
        self._relay = _Relay(app)
        self._relay.call.connect(_call, QtCore.Qt.ConnectionType.QueuedConnection)

    def dispatch(self, fn: Callable[[], object]) -> None:
        """Post ``fn`` to the Qt thread (any thread)."""
        self._relay.call.emit(fn)

    def close(self) -> None:
        """Release the relay object (call on the Qt thread when done with it)."""
        self._relay.deleteLater()

    def __repr__(self) -> str:
        return "QtDispatcher()"


def _call(fn: Callable[[], object]) -> None:
    fn()
