"""A ``for`` loop over a stream's typed events, with all the guarantees of callbacks."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from types import TracebackType

from ._events import Content, Done, StreamEvent
from ._handle import StreamHandle
from ._result import ChatResult


class ChatStream:
    """A running stream you iterate in your own thread: typed, frozen events.

    The stream runs on its worker thread as with callbacks; this thread only
    waits on a queue, so a cancel from any thread, Ctrl-C in the loop (which
    cancels, then raises ``KeyboardInterrupt``), retries and every timeout
    behave as for ``chat()``. A slow loop never makes the server look silent,
    and what is queued is only what the loop has not taken yet. Leaving a
    ``with`` block (or breaking out of the loop) cancels the stream and closes
    its socket.

    Example::

        with client.stream_chat("qwen3", messages) as stream:
            for event in stream:
                match event:
                    case Content(text=t): print(t, end="")
            result = stream.result()
    """

    def __init__(self, close_timeout: float = 5.0) -> None:
        # Guards _events, _ended and _error: the worker appends, the loop takes.
        self._cond = threading.Condition(threading.Lock())
        self._events: deque[StreamEvent] = deque()
        self._ended = False
        self._error: BaseException | None = None
        self._iterated = False
        self._close_timeout = close_timeout
        self._handle: StreamHandle | None = None

    # -- the worker side (EventSink) -----------------------------------------

    def put(self, events: list[StreamEvent]) -> None:
        """Append events (worker, timer or probe thread)."""
        with self._cond:
            self._events.extend(events)
            self._cond.notify()

    def end(self, error: BaseException | None) -> None:
        """No more events; the loop raises ``error`` after the last one."""
        with self._cond:
            self._ended = True
            self._error = error
            self._cond.notify()

    # -- the caller side ------------------------------------------------------

    @property
    def handle(self) -> StreamHandle:
        """The ``StreamHandle`` behind this stream."""
        if self._handle is None:  # pragma: no cover  # set before it is returned
            raise RuntimeError("this ChatStream has not started")
        return self._handle

    def __iter__(self) -> Iterator[StreamEvent]:
        """The events, in order, ending with ``Done(result)``; iterable once.

        Raises:
            StreamError: the stream failed, after every event before it.
            RuntimeError: iterated a second time.
        """
        if self._iterated:
            raise RuntimeError("a ChatStream can be iterated only once")
        self._iterated = True
        return self._events_until_end()

    def _events_until_end(self) -> Iterator[StreamEvent]:
        finished = False
        try:
            while True:
                event = self._next()
                if event is None:
                    finished = True
                    return
                yield event
        finally:
            if not finished:
                self._stop()

    def _next(self) -> StreamEvent | None:
        with self._cond:
            while not self._events and not self._ended:
                self._cond.wait()
            if self._events:
                return self._events.popleft()
            error = self._error
        if error is not None:
            raise error
        return None

    def text(self) -> Iterator[str]:
        """Only the answer's text deltas, for the simplest loop."""
        for event in self:
            if isinstance(event, Content):
                yield event.text

    def _stop(self) -> None:
        handle = self._handle
        if handle is not None and not handle.done():
            handle.cancel()
            handle.join(self._close_timeout)

    def cancel(self) -> bool:
        """Stop the stream (any thread); the loop then ends with the partial result."""
        return self.handle.cancel()

    def snapshot(self) -> ChatResult:
        """The partial result so far, at any moment."""
        return self.handle.snapshot()

    def result(self, timeout: float | None = None) -> ChatResult:
        """The final ``ChatResult`` (waits for the end); raises the stream's error."""
        return self.handle.result(timeout)

    def get_final_result(self, timeout: float | None = None) -> ChatResult:
        """The same as ``result()`` (the name other SDKs' stream helpers use)."""
        return self.result(timeout)

    def __enter__(self) -> ChatStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()

    def __repr__(self) -> str:
        state = repr(self._handle) if self._handle is not None else "not started"
        return f"<ChatStream {state}>"


__all__ = ["ChatStream", "Done"]
