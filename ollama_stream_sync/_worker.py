"""One stream's work, run on its worker thread: transport → accumulator → callbacks."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._abort import AbortScope, bound
from ._accumulator import Accumulator, Event
from ._dispatch import Dispatcher, InlineDispatcher
from ._errors import CallbackError, ProtocolError, StreamError, translate
from ._ndjson import LineSplitter, parse_line
from ._result import ChatResult
from ._transports._base import Transport

Clock = Callable[[], float]


class CancelRequest(Exception):
    """The abort reason a ``cancel()`` leaves in the scope: not an error."""


@dataclass(frozen=True)
class Callbacks:
    """The user's callbacks for one stream; any may be ``None``."""

    on_thinking: Callable[[str], object] | None = None
    on_content: Callable[[str], object] | None = None
    on_tool_call: Callable[[dict[str, Any]], object] | None = None
    on_done: Callable[[ChatResult], object] | None = None
    on_error: Callable[[StreamError], object] | None = None


@dataclass(frozen=True)
class StreamRequest:
    """Everything a worker needs to run one request."""

    transport: Transport
    path: str
    body: dict[str, Any]
    connect_timeout: float | None
    max_line_bytes: int


_NAMES = ("on_thinking", "on_content", "on_tool_call")


def call_user(fn: Callable[[Any], object], arg: object, name: str) -> None:
    """Run one user callback; a raise becomes ``CallbackError`` (original as cause)."""
    try:
        fn(arg)
    except Exception as exc:
        raise CallbackError(f"{name} callback raised {exc!r}") from exc


class _Emitter:
    """Delivers events through the dispatcher, inline without any indirection."""

    __slots__ = ("_fns", "_inline", "_scope", "dispatcher")

    def __init__(
        self, callbacks: Callbacks, dispatcher: Dispatcher, scope: AbortScope
    ) -> None:
        self._fns = (
            callbacks.on_thinking,
            callbacks.on_content,
            callbacks.on_tool_call,
        )
        self._inline = type(dispatcher) is InlineDispatcher
        self._scope = scope
        self.dispatcher = dispatcher

    def emit(self, events: list[Event]) -> None:
        fns = self._fns
        if self._inline:
            for kind, payload in events:
                fn = fns[kind]
                if fn is not None:
                    call_user(fn, payload, _NAMES[kind])
            return
        for kind, payload in events:
            fn = fns[kind]
            if fn is not None:
                self.dispatcher.dispatch(self._guarded(fn, payload, _NAMES[kind]))

    def _guarded(
        self, fn: Callable[[Any], object], payload: object, name: str
    ) -> Callable[[], None]:
        scope = self._scope

        def run() -> None:
            # Runs on the dispatcher's thread: a failure stops the worker
            # through the same switch a cancel uses.
            if scope.reason is not None:
                return
            try:
                call_user(fn, payload, name)
            except CallbackError as exc:
                scope.abort(exc)

        return run


def run_stream(  # noqa: PLR0917  # internal; called from one place
    request: StreamRequest,
    acc: Accumulator,
    scope: AbortScope,
    callbacks: Callbacks,
    dispatcher: Dispatcher,
    clock: Clock = time.monotonic,
) -> ChatResult:
    """Run one stream to its end on this thread.

    Returns:
        The final result; ``cancelled`` is set when a cancel stopped it.

    Raises:
        StreamError: the failure, with ``.partial`` holding what arrived.
    """
    emitter = _Emitter(callbacks, dispatcher, scope)
    try:
        with bound(scope):
            _attempt(request, acc, scope, emitter, clock)
    except Exception as exc:
        reason = scope.reason
        if isinstance(reason, CancelRequest):
            acc.mark_cancelled()
            return acc.snapshot()
        if isinstance(reason, StreamError):
            reason.partial = acc.snapshot()
            raise reason  # noqa: B904  # reason is the real error; exc is its symptom
        mapped = translate(exc)
        mapped.partial = acc.snapshot()
        if mapped is exc:
            raise
        raise mapped from exc
    return acc.snapshot()


def _attempt(
    request: StreamRequest,
    acc: Accumulator,
    scope: AbortScope,
    emitter: _Emitter,
    clock: Clock,
) -> None:
    scope.check()
    acc.start(clock())
    stream = request.transport.open(
        request.path, request.body, connect_timeout=request.connect_timeout
    )
    try:
        splitter = LineSplitter(request.max_line_bytes)
        feed = acc.feed
        emit = emitter.emit
        done = False
        check = scope.check
        for data in stream:
            for line in splitter.feed(data):
                if done:
                    continue  # nothing follows done; drain so the connection is reused
                check()  # a cancel stops delivery even of lines already received
                events = feed(parse_line(line), clock())
                if events:
                    emit(events)
                done = acc.done
        tail = splitter.finish()
        if tail and not done:
            events = feed(parse_line(tail), clock())
            if events:
                emit(events)
            done = acc.done
        scope.check()
        if not done:
            raise ProtocolError(
                "the stream ended without its done line: the response is truncated"
            )
    finally:
        scope.detach()
        stream.close()
