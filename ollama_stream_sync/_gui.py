"""Dispatchers for GUI toolkits: callbacks on Tk's or Qt's own thread.

Both queue callbacks in a ``QueuedDispatcher`` and wake the toolkit's event loop,
which drains the queue; both close themselves when their widget is destroyed.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from typing import Any

from ._dispatch import DispatcherClosed, QueuedDispatcher


class TkDispatcher(QueuedDispatcher):
    """Runs callbacks on Tk's main loop; the worker never calls Tk.

    The worker queues the callback and writes a byte to a pipe that Tk watches
    (``createfilehandler``): Tk wakes and drains the queue. Nothing polls while
    idle, except on Windows (no file handlers), which checks every ``poll_ms``.
    When the widget is destroyed, streams still using it stop with
    ``DispatchError``. Create it on the Tk thread, after the root window exists.

    Example::

        root = tkinter.Tk()
        client = StreamingClient(dispatcher=TkDispatcher(root))
    """

    def __init__(self, widget: Any, *, poll_ms: int = 20) -> None:
        super().__init__()
        # Held until released on the Tk thread: a worker dropping the last
        # reference to a Tk object would free it there, and Tk aborts then.
        self._widget: Any = widget
        self._widget_repr = repr(widget)
        self._owner = threading.get_ident()
        self._poll_ms = poll_ms
        # Guards the pipe's descriptors: a wake-up never writes into a
        # descriptor number the OS has reused after close().
        self._fd_lock = threading.Lock()
        self._read_fd: int | None = None
        self._write_fd: int | None = None
        tk = widget.tk
        if hasattr(tk, "createfilehandler"):
            self._read_fd, self._write_fd = os.pipe()
            os.set_blocking(self._read_fd, False)
            os.set_blocking(self._write_fd, False)
            import tkinter  # noqa: PLC0415  # only Tk users import it

            tk.createfilehandler(self._read_fd, tkinter.READABLE, self._on_wake)
        else:  # pragma: no cover  # Windows
            widget.after(poll_ms, self._poll)
        widget.bind("<Destroy>", self._on_destroy, "+")

    def _wake(self) -> None:
        with self._fd_lock:
            if self._write_fd is None:
                if self.closed:
                    raise DispatcherClosed(f"{self!r} is closed")
                return  # Windows: the poll finds it
            with contextlib.suppress(BlockingIOError):  # a wake-up is pending
                os.write(self._write_fd, b"x")

    def _on_wake(self, fd: int, _mask: int) -> None:
        with contextlib.suppress(OSError):
            os.read(fd, 4096)
        if self.closed:
            self._release()  # closed from another thread: finish here
            return
        self._drain()

    def _poll(self) -> None:  # pragma: no cover  # Windows
        if self.closed:
            self._release()
            return
        self._drain()
        self._widget.after(self._poll_ms, self._poll)

    def _on_destroy(self, event: Any) -> None:
        if getattr(event, "widget", None) is self._widget:
            self.close()

    def close(self) -> None:
        """Stop delivering; streams still using it stop with ``DispatchError``.

        Idempotent, from any thread. The pipe is released on the Tk thread: at
        once when called there, else at Tk's next turn of its event loop.
        """
        self._close_queue()
        if threading.get_ident() == self._owner:
            self._release()
            return
        with self._fd_lock:  # wake Tk so that it releases the pipe itself
            if self._write_fd is not None:
                with contextlib.suppress(OSError):
                    os.write(self._write_fd, b"x")

    def _release(self) -> None:  # on the Tk thread
        with self._fd_lock:
            read_fd, write_fd = self._read_fd, self._write_fd
            self._read_fd = self._write_fd = None
        widget, self._widget = self._widget, None
        if read_fd is not None and widget is not None:
            with contextlib.suppress(Exception):  # Tk may already be gone
                widget.tk.deletefilehandler(read_fd)
        if read_fd is not None:
            os.close(read_fd)
        if write_fd is not None:
            os.close(write_fd)

    def __repr__(self) -> str:
        return f"TkDispatcher({self._widget_repr})"


class QtDispatcher(QueuedDispatcher):
    """Runs callbacks on the Qt thread that created it, woken by a posted event.

    Needs PySide6: ``pip install ollama-stream-sync[qt]``. Create it on the GUI
    thread (after the ``QApplication``). Pass ``parent`` (a widget) to close the
    dispatcher when that widget is destroyed: streams still using it then stop
    with ``DispatchError``.

    Example::

        app = QApplication([])
        client = StreamingClient(dispatcher=QtDispatcher())
    """

    def __init__(self, parent: Any = None) -> None:
        super().__init__()
        try:
            from PySide6 import QtCore  # noqa: PLC0415  # optional extra
        except ImportError as exc:
            raise ImportError(
                "QtDispatcher needs PySide6: pip install 'ollama-stream-sync[qt]'"
            ) from exc

        class _Relay(QtCore.QObject):
            drain: Callable[[], None]

            def customEvent(self, event: Any) -> None:  # Qt's name
                self.drain()

        app = QtCore.QCoreApplication.instance()
        if app is None:
            raise RuntimeError("create the QApplication before a QtDispatcher")
        self._owner = threading.get_ident()
        # Qt aborts if a QObject is destroyed off its thread (the collector
        # runs anywhere): the application owns the relay and destroys it there.
        self._relay = _Relay(app)
        # A strong reference, so that queued callbacks (on_done) still arrive
        # when nobody else holds this dispatcher; close() lets it go.
        self._relay.drain = self._drain
        # A posted event, not a queued signal: PySide6 6.12's Signal.emit() takes
        # a reference to True it never gave, and enough wake-ups free True itself
        # (the process aborts). postEvent is Qt's thread-safe hand-over.
        self._post: Callable[[], None] = lambda: QtCore.QCoreApplication.postEvent(
            self._relay, QtCore.QEvent(QtCore.QEvent.Type.User)
        )
        # Guards _relay_alive: never post to a relay handed to Qt for deletion.
        self._relay_lock = threading.Lock()
        self._relay_alive = True
        if parent is not None:
            parent.destroyed.connect(lambda *_: self.close())

    def _wake(self) -> None:
        with self._relay_lock:
            if not self._relay_alive:
                raise DispatcherClosed(f"{self!r} is closed")
            try:
                self._post()
            except RuntimeError as exc:  # "Internal C++ object already deleted"
                self._relay_alive = False
                raise DispatcherClosed(f"{self!r}: the Qt object is gone") from exc

    def close(self) -> None:
        """Stop delivering; streams using it stop with ``DispatchError``. Idempotent."""
        self._close_queue()
        with self._relay_lock:
            alive, self._relay_alive = self._relay_alive, False
        if alive:
            with contextlib.suppress(RuntimeError):  # already deleted
                self._relay.deleteLater()

    def __repr__(self) -> str:
        return "QtDispatcher()"
