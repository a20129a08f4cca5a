"""Stand-ins for the loops that run callbacks: threads pumping a queue, a toolkit.

``Pumper`` pumps a ``QueueDispatcher`` on threads until stopped, as a polling
application would; ``Toolkit`` is a GUI thread in miniature, running what
``call_after`` gives it (a ``CallLaterDispatcher`` target), with nested loops.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ollama_stream_sync import QueueDispatcher

from . import WAIT

T = TypeVar("T")


class Pumper:
    """Threads that pump a queue dispatcher until stopped, surviving anything a
    callback raises (as a GUI loop reports an error and goes on)."""

    def __init__(self, dispatcher: QueueDispatcher, count: int = 1) -> None:
        self.dispatcher = dispatcher
        self.stop = threading.Event()
        self.escaped: list[BaseException] = []
        self.pumped = threading.Event()
        """Set after every pump call that returned or raised."""
        self.threads = [
            threading.Thread(target=self._loop, name=f"pumper-{i}", daemon=True)
            for i in range(count)
        ]

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                self.dispatcher.pump(timeout=0.02)  # a bounded wait for work
            except BaseException as exc:
                self.escaped.append(exc)
            self.pumped.set()

    def __enter__(self) -> Pumper:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        deadline = time.monotonic() + WAIT
        for thread in self.threads:
            while thread.is_alive() and time.monotonic() < deadline:
                # Wake a pump that waits for work: it sees ``stop`` and ends.
                # (Another thread may run this one: dispatch again until not.)
                self.dispatcher.dispatch(lambda: None)
                thread.join(0.01)
        assert not any(t.is_alive() for t in self.threads), "a pumping thread hung"


class Toolkit:
    """A stand-in GUI thread: runs what ``call_after`` gives it, reports what a
    call raises and goes on (as Tk does), and can run a nested (modal) loop.
    ``scheduled`` counts the ``call_after`` calls."""

    def __init__(self) -> None:
        self.calls: queue.SimpleQueue[Callable[[], object] | None] = queue.SimpleQueue()
        self.escaped: list[BaseException] = []
        self.scheduled = 0
        self.thread = threading.Thread(target=self._main, name="toolkit", daemon=True)
        self.thread.start()

    def call_after(self, fn: Callable[[], object]) -> None:
        self.scheduled += 1
        self.calls.put(fn)

    def _run(self, fn: Callable[[], object]) -> None:
        try:
            fn()
        except BaseException as exc:
            self.escaped.append(exc)

    def _main(self) -> None:
        while (fn := self.calls.get()) is not None:
            self._run(fn)

    def loop_until(self, condition: Callable[[], bool]) -> bool:
        """A nested event loop on the toolkit thread (a modal dialog)."""
        while not condition():
            try:
                fn = self.calls.get(timeout=WAIT)
            except queue.Empty:
                return False
            if fn is None:
                self.calls.put(None)
                return False
            self._run(fn)
        return True

    def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` on the toolkit thread, after everything queued before it."""
        box: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()

        def call() -> None:
            try:
                box.put((True, fn()))
            except BaseException as exc:
                box.put((False, exc))

        self.calls.put(call)
        ok, value = box.get(timeout=WAIT)
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    def close(self) -> None:
        self.calls.put(None)
        self.thread.join(WAIT)
