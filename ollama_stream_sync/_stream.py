"""The ways to consume a started stream: block for its result, or iterate its events.

``blocking`` and ``streaming`` turn a ``start_*`` method into its twins (``chat``,
``stream_chat``) with the signature written once; ``ChatStream`` is the iterator.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

from ._events import Content, StreamEvent
from ._handle import BaseHandle, StreamHandle, wait_result
from ._result import ChatResult

P = ParamSpec("P")
C = TypeVar("C")
R = TypeVar("R")

# The iterator a ``stream_*`` call hands to the stream it is about to start.
_next_sink: contextvars.ContextVar[ChatStream | None] = contextvars.ContextVar(
    "ollama_stream_sync_next_sink", default=None
)


def pending_sink() -> ChatStream | None:
    """The ``ChatStream`` that the stream being started on this thread feeds."""
    return _next_sink.get()


def blocking(
    start: Callable[Concatenate[C, P], BaseHandle[R, Any]], doc: str
) -> Callable[Concatenate[C, P], R]:
    """``start``'s blocking twin: start, then wait for the result (Ctrl-C cancels)."""

    @functools.wraps(start)
    def call(self: C, /, *args: P.args, **kwargs: P.kwargs) -> R:
        handle = start(self, *args, **kwargs)
        return wait_result(handle, handle._grace)

    return cast(Callable[Concatenate[C, P], R], _retitle(call, start, doc, ""))


def streaming(
    start: Callable[Concatenate[C, P], StreamHandle], doc: str
) -> Callable[Concatenate[C, P], ChatStream]:
    """``start``'s iterator twin: start, and return a ``ChatStream`` of its events."""

    @functools.wraps(start)
    def call(self: C, /, *args: P.args, **kwargs: P.kwargs) -> ChatStream:
        stream = ChatStream()
        token = _next_sink.set(stream)
        try:
            stream._handle = start(self, *args, **kwargs)
        finally:
            _next_sink.reset(token)
        return stream

    return cast(
        Callable[Concatenate[C, P], ChatStream],
        _retitle(call, start, doc, "stream_"),
    )


def _retitle(call: Any, start: Callable[..., Any], doc: str, prefix: str) -> Any:
    """``help()`` shows the twin's own name, summary and return type."""
    name = prefix + start.__name__.removeprefix("start_")
    call.__name__ = name
    call.__qualname__ = f"{start.__qualname__.rpartition('.')[0]}.{name}"
    sections = inspect.cleandoc(start.__doc__ or "").split("\n\n")[1:]
    kept = [s for s in sections if not s.startswith("Returns:")]
    call.__doc__ = "\n\n".join([doc, *kept])
    signature = inspect.signature(start)
    returned = str(signature.return_annotation)  # BatchHandle[R]'s twin returns R
    returns = "ChatStream" if prefix else _RESULTS.get(returned, returned[12:-1])
    call.__signature__ = signature.replace(return_annotation=returns)
    del call.__wrapped__
    return call


_RESULTS = {"StreamHandle": "ChatResult", "ProgressHandle": "ModelResult"}


class ChatStream:
    """A running stream you iterate in your own thread: typed, frozen events.

    The stream runs on its worker thread as with callbacks, so cancel, Ctrl-C
    (which cancels, then raises ``KeyboardInterrupt``), retries and timeouts
    behave as for ``chat()``, and a slow loop never makes the server look
    silent. Leaving a ``with`` block or the loop cancels the stream.

    Example::

        with client.stream_chat("qwen3", messages) as stream:
            for event in stream:
                match event:
                    case Content(text=t): print(t, end="")
            result = stream.result()
    """

    def __init__(self) -> None:
        # Guards _events, _ended and _error: the worker appends, the loop takes.
        self._cond = threading.Condition(threading.Lock())
        self._events: deque[StreamEvent] = deque()
        self._ended = False
        self._error: BaseException | None = None
        self._iterated = False
        self._handle: StreamHandle | None = None

    def put(self, events: list[StreamEvent]) -> None:
        """Append events (worker, timer or probe thread)."""
        with self._cond:
            self._events.extend(events)
            self._cond.notify()

    def end(self, error: BaseException | None) -> None:
        """No more events; the loop raises ``error`` after the last one."""
        with self._cond:
            self._ended, self._error = True, error
            self._cond.notify()

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
        return self._until_end()

    def _until_end(self) -> Iterator[StreamEvent]:
        finished = False
        try:
            while True:
                with self._cond:
                    while not self._events and not self._ended:
                        self._cond.wait()
                    event = self._events.popleft() if self._events else None
                    error = self._error
                if event is None:
                    finished = True
                    if error is not None:
                        raise error
                    return
                yield event
        finally:
            if not finished:
                self._stop()

    def text(self) -> Iterator[str]:
        """Only the answer's text deltas, for the simplest loop."""
        for event in self:
            if isinstance(event, Content):
                yield event.text

    def _stop(self) -> None:
        handle = self._handle
        if handle is not None and not handle.done():
            handle.cancel()
            handle.join(handle._grace)

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

    def __exit__(self, *_: object) -> None:
        self._stop()

    def __repr__(self) -> str:
        state = repr(self._handle) if self._handle is not None else "not started"
        return f"<ChatStream {state}>"
