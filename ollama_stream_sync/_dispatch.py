"""Where user callbacks run: on the worker, in a polling loop, or on a GUI thread.

A dispatcher runs each callback ``fn()`` where the caller needs it, in order, one
at a time; the worker never waits for it, and a stream's completion never depends
on its delivery. Every queued dispatcher shares one engine, ``QueuedDispatcher``.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

log = logging.getLogger("ollama_stream_sync")


@runtime_checkable
class Dispatcher(Protocol):
    """Decides on which thread a stream's callbacks run.

    ``dispatch(fn)`` must run ``fn()`` exactly once, and the calls it is given in
    the order it was given them, never two at once. It may be called from any
    thread and must not block for long. If it cannot take ``fn`` (its toolkit is
    gone) it raises; the stream then stops with ``DispatchError``.
    """

    def dispatch(self, fn: Callable[[], object]) -> None:
        """Arrange for ``fn()`` to run."""
        ...


class Listener(Protocol):
    """A stream's delivery, told when the dispatcher it uses closes."""

    def dispatcher_closed(self, cause: BaseException | None) -> None:
        """Stop the stream: nothing more will be delivered."""
        ...


class DispatcherClosed(RuntimeError):
    """Raised by ``dispatch`` once the dispatcher was closed (its window is gone)."""


DispatcherClosed.__module__ = "ollama_stream_sync"


class InlineDispatcher:
    """Runs callbacks at once on the stream's worker thread (the default).

    Right for scripts and servers; GUI code needs one that runs them on its thread.

    Example::

        client = StreamingClient(dispatcher=InlineDispatcher())
    """

    def dispatch(self, fn: Callable[[], object]) -> None:
        """Run ``fn()`` now, on the calling (worker) thread."""
        fn()

    def __repr__(self) -> str:
        return "InlineDispatcher()"


class _Batch:
    """Several callbacks queued as one item (one wake-up per network read)."""

    __slots__ = ("fns",)

    def __init__(self, fns: Iterable[Callable[[], object]]) -> None:
        self.fns = deque(fns)


class QueuedDispatcher:
    """The engine of every dispatcher that runs callbacks on another thread.

    Subclasses wake the delivering thread (``_wake``), which calls ``_drain``, and
    name it (``_owner``). ``pump`` may be called from several threads (they take
    turns) and again from inside a callback (a modal dialog's nested loop).

    A wake-up is requested whenever none is pending, not only when the queue was
    empty: a drain may be stuck in a callback running a nested event loop, which
    needs a wake-up of its own for what other streams queue meanwhile.
    """

    def __init__(self) -> None:
        # Guards _items, _closed, _woken and _streams; pumpers sleep on it
        # without the run lock, so two pumping threads never deadlock.
        self._cond = threading.Condition(threading.Lock())
        self._items: deque[Callable[[], object] | _Batch] = deque()
        self._closed = False
        self._woken = False  # a wake-up was requested, no drain started since
        # Closing stops these streams (weak: a finished one may be collected).
        self._streams: weakref.WeakSet[Listener] = weakref.WeakSet()
        self._run = threading.RLock()  # one callback at a time; reentrant
        self._owner: int | None = None

    def delivers_here(self) -> bool:
        """Whether the calling thread may run this dispatcher's callbacks."""
        owner = self._owner
        return owner is None or owner == threading.get_ident()

    def dispatch(self, fn: Callable[[], object]) -> None:
        """Queue ``fn`` (any thread)."""
        self._put(fn)

    def dispatch_many(self, fns: Sequence[Callable[[], object]]) -> None:
        """Queue several callbacks with one wake-up, as one ordered item."""
        if fns:
            self._put(_Batch(fns) if len(fns) > 1 else fns[0])

    def _put(self, item: Callable[[], object] | _Batch) -> None:
        with self._cond:
            if self._closed:
                raise DispatcherClosed(f"{self!r} is closed")
            self._items.append(item)
            wake = not self._woken
            self._woken = True
            self._cond.notify_all()
        if wake:
            try:
                self._wake()
            except Exception as exc:
                # Its toolkit is gone. Left open, the queue would never wake it
                # again and every later stream would wait in silence.
                self._close_queue(exc)
                if isinstance(exc, DispatcherClosed):
                    raise
                raise DispatcherClosed(f"{self!r} cannot wake its thread") from exc

    def _wake(self) -> None:
        """Make the delivering thread call ``_drain`` soon (any thread)."""

    def _drain(self) -> None:
        """Run what is pending: what the delivering thread does when woken."""
        with self._cond:
            # Cleared before taking anything: whatever is queued from now on
            # asks for a wake-up of its own.
            self._woken = False
        self.pump(0)

    def _take(self) -> Callable[[], object] | None:
        with self._cond:
            if not self._items:
                return None
            head = self._items[0]
            if not isinstance(head, _Batch):
                self._items.popleft()
                return head
            fn = head.fns.popleft()  # a batch is never empty: see dispatch_many
            if not head.fns:
                self._items.popleft()
            return fn

    def _run_one(self) -> bool:
        with self._run:
            fn = self._take()
            if fn is None:
                return False
            try:
                fn()
            finally:
                self.notify()  # waiters re-check their predicates
        return True

    def pump(self, timeout: float | None = 0) -> int:
        """Run what is pending on the calling thread; return how many ran.

        Only what is queued when it starts (after the wait): a fast stream
        cannot keep a GUI thread away from its event loop (the Stop button).

        Args:
            timeout: ``0`` runs only what is already queued; a positive number
                (or ``None``: forever) first waits that long for something.
        """
        with self._cond:
            if timeout != 0 and not self._cond.wait_for(
                lambda: bool(self._items) or self._closed, timeout
            ):
                return 0
            budget = self._count_locked()
        ran = 0
        try:
            while ran < budget and self._run_one():
                ran += 1
        except BaseException:
            # Ctrl-C or exit in a callback: let it act, but what is still queued
            # must not wait for a wake-up that was already spent on this drain.
            self._rewake()
            raise
        return ran

    def _rewake(self) -> None:
        with self._cond:
            pending = bool(self._items) and not self._closed and not self._woken
            if pending:
                self._woken = True
        if pending:
            try:
                self._wake()
            except Exception:  # the toolkit is gone: its streams stop at dispatch
                log.debug("%r could not wake its thread again", self, exc_info=True)

    def pump_until(self, done: Callable[[], bool], timeout: float | None) -> bool:
        """Run callbacks here until ``done()`` or the dispatcher closes; False on
        timeout. Whoever makes ``done`` true must ``notify`` (a callback does)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._cond:
                left = None if deadline is None else deadline - time.monotonic()
                if not self._cond.wait_for(
                    lambda: done() or bool(self._items) or self._closed, left
                ):
                    return False
                if done():
                    return True
                if self._closed and not self._items:
                    return False
            try:
                self._run_one()
            except BaseException:
                self._rewake()  # as in pump()
                raise

    def notify(self) -> None:
        """Wake threads waiting in ``pump``/``pump_until`` to re-check."""
        with self._cond:
            self._cond.notify_all()

    @property
    def pending(self) -> int:
        """How many callbacks wait (approximately, as another thread may add)."""
        with self._cond:
            return self._count_locked()

    def _count_locked(self) -> int:
        return sum(len(i.fns) if isinstance(i, _Batch) else 1 for i in self._items)

    def attach(self, listener: Listener) -> None:
        """Track a stream that uses this dispatcher (stopped if it closes)."""
        with self._cond:
            closed = self._closed
            if not closed:
                self._streams.add(listener)
        if closed:
            listener.dispatcher_closed(None)

    def _close_queue(self, cause: BaseException | None = None) -> None:
        """Refuse new callbacks, drop queued ones, stop the streams still using us."""
        with self._cond:
            self._closed = True
            self._items.clear()
            streams = list(self._streams)  # empty once closed: attach adds none
            self._streams.clear()
            self._cond.notify_all()
        # Outside the lock: stopping a stream shuts down its socket.
        for listener in streams:
            listener.dispatcher_closed(cause)

    @property
    def closed(self) -> bool:
        """True once closed: ``dispatch`` raises and nothing more is delivered."""
        return self._closed


class QueueDispatcher(QueuedDispatcher):
    """Callbacks wait in a queue until the owner calls ``pump()``.

    For event loops, game loops and scripts that poll. A blocking ``chat()``
    given this dispatcher pumps it while it waits. Any thread may pump; pumps
    from several threads take turns, and a callback may pump again.

    A handle is done when its stream ends, before its ``on_done`` is even
    queued; once its worker has exited (``handle.join()``), everything is.

    Example::

        callbacks = QueueDispatcher()
        handle = client.start_chat("qwen3", msgs, on_content=show, dispatcher=callbacks)
        while not handle.join(timeout=0):
            callbacks.pump(timeout=0.05)  # inside your own loop
        callbacks.pump()                  # what is left, on_done included
    """

    def __repr__(self) -> str:
        return f"QueueDispatcher(pending={self.pending})"


class CallLaterDispatcher(QueuedDispatcher):
    """Runs callbacks through a toolkit's thread-safe "call later" function.

    ``call_later(fn)`` must be safe from any thread and run ``fn()`` on the
    toolkit's thread (``wx.CallAfter``, ``GLib.idle_add``...). One scheduled
    call runs everything pending, so a fast stream does not flood the toolkit.
    Create it on the toolkit's thread: a blocking ``chat()`` made there then
    delivers the callbacks itself instead of waiting for the event loop.

    Example::

        client = StreamingClient(dispatcher=CallLaterDispatcher(wx.CallAfter))
    """

    def __init__(self, call_later: Callable[[Callable[[], Any]], object]) -> None:
        super().__init__()
        self._call_later = call_later
        self._owner = threading.get_ident()

    def _wake(self) -> None:
        self._call_later(self._drain)

    def _drain(self) -> None:
        self._owner = threading.get_ident()
        super()._drain()

    def __repr__(self) -> str:
        return f"CallLaterDispatcher({self._call_later!r})"


def check_dispatcher(dispatcher: object, name: str = "dispatcher") -> None:
    """Raise ``TypeError`` on the caller's thread for something that is not one."""
    if dispatcher is None:
        return
    if isinstance(dispatcher, type):
        raise TypeError(
            f"{name} must be a Dispatcher instance: {dispatcher.__name__}(...), "
            f"not the class {dispatcher.__name__}"
        )
    if not callable(getattr(dispatcher, "dispatch", None)):
        raise TypeError(
            f"{name} must be a Dispatcher (an object with dispatch(fn)), e.g. "
            f"TkDispatcher(root) or QueueDispatcher(), not {type(dispatcher).__name__}"
        )
