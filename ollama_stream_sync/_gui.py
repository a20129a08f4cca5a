"""Dispatchers for GUI toolkits: callbacks on Tk's or Qt's own thread.

GUI toolkits must only be touched from their own thread. Both queue the
callbacks in a ``QueuedDispatcher`` and wake the toolkit's event loop, which
drains the queue on its own thread; both close themselves (stopping the streams
still using them) when their widget is destroyed.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any

from ._dispatch import DispatcherClosed, QueuedDispatcher


class TkDispatcher(QueuedDispatcher):
    """Runs callbacks on Tk's main loop; the worker never calls Tk.

    The worker only queues the callback and, when the queue was empty, writes a
    byte to a pipe that Tk watches (``createfilehandler``): Tk wakes, drains the
    queue on its own thread, and sleeps again. Nothing polls while idle. Where Tk
    has no file handlers (Windows), it falls back to checking the queue with
    ``after(poll_ms)``. When the widget is destroyed the dispatcher closes
    itself: streams still using it stop with ``DispatchError``.

    Create it on the Tk thread, after the root window exists.

    Example::

        root = tkinter.Tk()
        client = StreamingClient(dispatcher=TkDispatcher(root))
    """

    def __init__(self, widget: Any, *, poll_ms: int = 20) -> None:
        super().__init__()
        # The widget (and through it Tk's interpreter) until released on the Tk
        # thread: a worker that drops the last reference to a Tk object would
        # free it on the wrong thread, and Tk aborts the process then.
        self._widget: Any = widget
        self._widget_repr = repr(widget)
        self._owner = threading.get_ident()
        self._poll_ms = poll_ms
        # Guards the pipe's descriptors: close() never races a wake-up write
        # into a descriptor number the OS has already reused.
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

        Idempotent, and safe from any thread and against concurrent
        ``dispatch``. Called by itself when the widget is destroyed. The pipe
        is released on the Tk thread (Tk must not be called from another one):
        at once when called there, else at Tk's next turn of its event loop.
        """
        self._close_queue()
        if threading.get_ident() == self._owner:
            self._release()
            return
        with self._fd_lock:  # wake Tk so that it releases the pipe itself
            if self._write_fd is not None:
                with contextlib.suppress(OSError):
                    os.write(self._write_fd, b"x")

    def _release(self) -> None:
        """Forget and close the pipe, and let go of the widget (on the Tk thread)."""
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
    """Runs callbacks on the Qt thread that created it, woken by a queued signal.

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
            wake = QtCore.Signal()

        app = QtCore.QCoreApplication.instance()
        if app is None:
            raise RuntimeError("create the QApplication before a QtDispatcher")
        self._owner = threading.get_ident()
        # Qt aborts if a QObject is destroyed off its thread, and the garbage
        # collector may run on any thread. So the relay belongs to the
        # application object, which destroys it on the Qt thread.
        self._relay = _Relay(app)
        # Guards _relay_alive: a wake-up never emits on a relay that close()
        # has handed to Qt for deletion.
        self._relay_lock = threading.Lock()
        self._relay_alive = True
        # PySide holds a bound method weakly; a closure keeps this dispatcher
        # alive, so queued callbacks (on_done among them) reach the Qt thread
        # even when nobody else holds it. close() drops the relay and the
        # reference with it.
        drain = self._drain
        self._relay.wake.connect(
            lambda: drain(),  # noqa: PLW0108  # a strong reference, see above
            QtCore.Qt.ConnectionType.QueuedConnection,
        )
        if parent is not None:
            parent.destroyed.connect(lambda *_: self.close())

    def _wake(self) -> None:
        with self._relay_lock:
            if not self._relay_alive:
                raise DispatcherClosed(f"{self!r} is closed")
            try:
                self._relay.wake.emit()
            except RuntimeError as exc:  # "Internal C++ object already deleted"
                self._relay_alive = False
                raise DispatcherClosed(f"{self!r}: the Qt object is gone") from exc

    def close(self) -> None:
        """Stop delivering and release the relay; idempotent, from any thread.

        Streams still using it stop with ``DispatchError``.
        """
        self._close_queue()
        with self._relay_lock:
            alive, self._relay_alive = self._relay_alive, False
        if alive:
            with contextlib.suppress(RuntimeError):  # already deleted
                self._relay.deleteLater()

    def __repr__(self) -> str:
        return "QtDispatcher()"
