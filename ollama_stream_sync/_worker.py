"""One stream's work, run on its worker thread: transport → accumulator → callbacks."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import tenacity

from ._abort import AbortScope, bound
from ._accumulator import TOOL_CALL, Accumulator, Event
from ._dispatch import Dispatcher, InlineDispatcher
from ._errors import CallbackError, ProtocolError, StreamError, translate
from ._hosts import Host, HostPool
from ._ndjson import LineSplitter, parse_line
from ._result import ChatResult
from ._retry import RetryArg, for_stream
from ._transports._base import Transport
from ._watchdog import Clock, StreamTimer, Watchdog

log = logging.getLogger("ollama_stream_sync")


class CancelRequest(Exception):
    """The abort reason a ``cancel()`` leaves in the scope: not an error."""


class _Cancelled(Exception):
    """Raised inside the worker to end a cancelled stream: never retried."""


@dataclass(frozen=True)
class Callbacks:
    """The user's callbacks for one stream; any may be ``None``."""

    on_thinking: Callable[[str], object] | None = None
    on_content: Callable[[str], object] | None = None
    on_tool_call: Callable[[dict[str, Any]], object] | None = None
    on_done: Callable[[ChatResult], object] | None = None
    on_error: Callable[[StreamError], object] | None = None
    on_retry: Callable[[int, StreamError, float], object] | None = None
    on_reset: Callable[[int, StreamError], object] | None = None


@dataclass(frozen=True)
class StreamRequest:
    """Everything a worker needs to run one request, its retries included."""

    pool: HostPool
    path: str
    body: dict[str, Any]
    max_line_bytes: int
    connect_timeout: float | None = None
    first_token_timeout: float | None = None
    read_timeout: float | None = None
    deadline: float | None = None
    retry: RetryArg = None
    watchdog: Watchdog | None = None
    coalesce_interval: float | None = None


Job = Callable[[Accumulator, AbortScope, Dispatcher], ChatResult]
"""What a handle's worker thread runs: one stream, or several (a conversation)."""

_NAMES = ("on_thinking", "on_content", "on_tool_call")


def call_user(fn: Callable[..., object], name: str, *args: object) -> None:
    """Run one user callback; a raise becomes ``CallbackError`` (original as cause)."""
    try:
        fn(*args)
    except Exception as exc:
        raise CallbackError(f"{name} callback raised {exc!r}") from exc


class Emitter:
    """Delivers events through the dispatcher, inline without any indirection.

    With ``coalesce_interval``, consecutive deltas of one field that arrive
    within the interval reach the callback as one string; a different field, a
    tool call, any other callback and the end of the stream flush first, so
    order is kept and nothing is dropped. Under a dispatcher other than inline,
    a pause in the stream is flushed by the client's timer thread (through the
    dispatcher); inline, it waits for the next chunk or the end.
    """

    __slots__ = (
        "_fns",
        "_inline",
        "_interval",
        "_kind",
        "_lock",
        "_parts",
        "_scope",
        "_since",
        "_timer",
        "dispatcher",
    )

    def __init__(
        self,
        callbacks: Callbacks,
        dispatcher: Dispatcher,
        scope: AbortScope,
        coalesce_interval: float | None = None,
    ) -> None:
        self._fns = (
            callbacks.on_thinking,
            callbacks.on_content,
            callbacks.on_tool_call,
        )
        self._inline = type(dispatcher) is InlineDispatcher
        self._scope = scope
        self.dispatcher = dispatcher
        self._interval = coalesce_interval or None
        # Guards the pending batch (_kind, _parts, _since): the worker adds to
        # it while the timer thread may flush it. Deliveries happen under it,
        # so a timer flush and the worker's next batch never swap places.
        self._lock = threading.Lock()
        self._kind: int | None = None
        self._parts: list[str] = []
        self._since = 0.0
        self._timer: StreamTimer | None = None

    @property
    def timed_flush(self) -> Callable[[], None] | None:
        """What the timer thread may call during a pause (None when inline)."""
        return self.flush if self._interval is not None and not self._inline else None

    def use_timer(self, timer: StreamTimer | None) -> None:
        """The timer that flushes a pending batch during a pause."""
        if self.timed_flush is not None:
            self._timer = timer

    def emit(self, events: list[Event], now: float = 0.0) -> None:
        if self._interval is not None:
            self._coalesce(events, now)
            return
        fns = self._fns
        if self._inline:
            for kind, payload in events:
                fn = fns[kind]
                if fn is not None:
                    call_user(fn, _NAMES[kind], payload)
            return
        for kind, payload in events:
            fn = fns[kind]
            if fn is not None:
                self.dispatcher.dispatch(self._guarded(fn, _NAMES[kind], payload))

    def _coalesce(self, events: list[Event], now: float) -> None:
        interval = self._interval or 0.0
        with self._lock:
            for kind, payload in events:
                if self._fns[kind] is None:
                    continue
                if kind == TOOL_CALL:
                    self._flush_locked()
                    self._deliver(kind, payload)
                elif self._kind == kind and now - self._since < interval:
                    self._parts.append(payload)
                else:
                    self._flush_locked()
                    self._kind, self._parts, self._since = kind, [payload], now
                    if self._timer is not None:
                        self._timer.flush_at(now + interval)

    def flush(self) -> None:
        """Deliver the pending batch now, if any."""
        if self._interval is None:
            return
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        kind, parts = self._kind, self._parts
        if kind is None:
            return
        self._kind, self._parts = None, []
        if self._timer is not None:
            self._timer.flush_at(None)
        self._deliver(kind, "".join(parts))

    def _deliver(self, kind: int, payload: object) -> None:
        fn = self._fns[kind]
        if fn is None:
            return
        if self._inline:
            call_user(fn, _NAMES[kind], payload)
        else:
            self.dispatcher.dispatch(self._guarded(fn, _NAMES[kind], payload))

    def call(self, fn: Callable[..., object] | None, name: str, *args: object) -> None:
        """Deliver one callback that is not a stream event (on_retry, on_reset)."""
        self.flush()
        if fn is None:
            return
        if self._inline:
            call_user(fn, name, *args)
        else:
            self.dispatcher.dispatch(self._guarded(fn, name, *args))

    def _guarded(
        self, fn: Callable[..., object], name: str, *args: object
    ) -> Callable[[], None]:
        scope = self._scope

        def run() -> None:
            # Runs on the dispatcher's thread. After a callback failed, the
            # rest is dropped; after a cancel, what was accumulated is still
            # delivered, so the result and the callbacks agree.
            if isinstance(scope.reason, CallbackError):
                return
            try:
                call_user(fn, name, *args)
            except CallbackError as exc:
                scope.abort(exc)  # stops the worker like a cancel does

        return run


def run_stream(  # noqa: PLR0917  # internal; called from one place
    request: StreamRequest,
    acc: Accumulator,
    scope: AbortScope,
    callbacks: Callbacks,
    dispatcher: Dispatcher,
    clock: Clock = time.monotonic,
) -> ChatResult:
    """Run one stream to its end on this thread, retrying as its policy allows.

    Returns:
        The final result; ``cancelled`` is set when a cancel stopped it.

    Raises:
        StreamError: the failure, with ``.partial`` holding what arrived.
    """
    return _Run(request, acc, scope, callbacks, dispatcher, clock).run()


def stream_job(request: StreamRequest, callbacks: Callbacks) -> Job:
    """The job of a plain stream, for a ``StreamHandle``."""

    def job(acc: Accumulator, scope: AbortScope, dispatcher: Dispatcher) -> ChatResult:
        return run_stream(request, acc, scope, callbacks, dispatcher)

    return job


class _Run:
    """The state of one stream across its attempts."""

    def __init__(  # noqa: PLR0917  # internal
        self,
        request: StreamRequest,
        acc: Accumulator,
        scope: AbortScope,
        callbacks: Callbacks,
        dispatcher: Dispatcher,
        clock: Clock,
    ) -> None:
        self.request = request
        self.acc = acc
        self.scope = scope
        self.callbacks = callbacks
        self.emitter = Emitter(callbacks, dispatcher, scope, request.coalesce_interval)
        self.clock = clock
        self.host: Host | None = None
        self.timer: StreamTimer | None = None

    def run(self) -> ChatResult:
        request, acc = self.request, self.acc
        if request.watchdog is not None:
            self.timer = request.watchdog.timer(
                self.scope,
                first_token=request.first_token_timeout,
                read=request.read_timeout,
                deadline=request.deadline,
                flush=self.emitter.timed_flush,
            )
        self.emitter.use_timer(self.timer)
        retrying, _ = for_stream(
            request.retry,
            output_shown=lambda: acc.has_output,
            stopped=lambda: self.scope.reason is not None,
            sleep=self._sleep,
            before_sleep=self._before_sleep,
        )
        try:
            if retrying is None:
                self._attempt()
            else:
                for attempt in retrying:
                    with attempt:
                        self._attempt()
        except _Cancelled:
            acc.mark_cancelled()
            return acc.snapshot()
        except StreamError as err:
            err.partial = acc.snapshot()
            raise
        finally:
            try:
                self.emitter.flush()  # everything pending reaches the callbacks first
            except CallbackError as exc:
                exc.partial = acc.snapshot()
                raise
            finally:
                if self.timer is not None and request.watchdog is not None:
                    request.watchdog.unwatch(self.timer)
        return acc.snapshot()

    def _attempt(self) -> None:
        scope = self.scope
        scope.begin_attempt()
        self.host = self.request.pool.pick(after=self.host)
        if self.timer is not None:
            self.timer.attempt_started(self.clock())
        try:
            with bound(scope):
                self._stream_once(self.host.transport)
        except Exception as exc:
            reason = scope.reason
            if isinstance(reason, CancelRequest):
                raise _Cancelled from exc
            if isinstance(reason, StreamError):
                raise reason  # noqa: B904  # the real error; exc is its symptom
            if isinstance(scope.attempt_reason, StreamError):
                raise scope.attempt_reason  # noqa: B904  # same: a timeout fired
            mapped = translate(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    def _sleep(self, seconds: float) -> None:
        """Back off, but wake at once on cancel or deadline."""
        if self.timer is not None:
            self.timer.idle()
        self.scope.aborted_event.wait(seconds)

    def _before_sleep(self, state: tenacity.RetryCallState) -> None:
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        if not isinstance(error, StreamError):
            return
        attempt, delay = state.attempt_number, state.upcoming_sleep
        if self.host is not None:
            self.request.pool.failed(self.host, error)
        log.warning(
            "attempt %d to %s failed (%s: %s); retrying in %.2fs",
            attempt,
            self.host.url if self.host else "?",
            type(error).__name__,
            error,
            delay,
        )
        cbs = self.callbacks
        self.emitter.call(cbs.on_retry, "on_retry", attempt, error, delay)
        if self.acc.has_output:
            log.warning(
                "output was already delivered: resetting before attempt %d", attempt + 1
            )
            self.emitter.call(cbs.on_reset, "on_reset", attempt, error)
            self.acc.reset()

    def _stream_once(self, transport: Transport) -> None:
        request, acc, scope, clock = self.request, self.acc, self.scope, self.clock
        scope.check()
        acc.start(clock())
        stream = transport.open(
            request.path, request.body, connect_timeout=request.connect_timeout
        )
        try:
            splitter = LineSplitter(request.max_line_bytes)
            feed, emit, check = acc.feed, self.emitter.emit, scope.check
            touch = self.timer.touch if self.timer is not None else None
            done = False
            for data in stream:
                now = clock()
                if touch is not None:
                    touch(now)
                for line in splitter.feed(data):
                    if done:
                        continue  # nothing follows done; drain to reuse the connection
                    check()  # a cancel stops delivery even of lines already received
                    events = feed(parse_line(line), now)
                    if events:
                        emit(events, now)
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
