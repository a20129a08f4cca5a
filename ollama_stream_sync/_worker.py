"""One stream's work, run on its worker thread: transport → accumulator → callbacks.

The worker reads the response, feeds the accumulator one network read at a
time, and hands the resulting events to an ``Emitter``, which delivers them to
the user's callbacks (through the stream's ``Delivery`` and dispatcher) and to
an iterator's queue, merged by ``coalesce_interval`` and interleaved with phase
changes. Retries, timers and failover wrap each attempt.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import tenacity

from ._abort import Aborted, AbortScope, bind, current_scope
from ._accumulator import CONTENT, THINKING, TOOL_CALL, Accumulator, Event
from ._dispatch import Delivery
from ._errors import CallbackError, ProtocolError, StreamError, StreamTimeout, translate
from ._events import (
    TERMINAL_PHASES,
    Content,
    Partial,
    Phase,
    PhaseName,
    Reset,
    Retry,
    StreamEvent,
    Thinking,
    ToolCall,
    ToolResult,
)
from ._hosts import Host, HostPool
from ._ndjson import LineParser
from ._progress import PROGRESS
from ._result import ChatResult
from ._retry import RetryArg, for_stream
from ._structured import FormatSpec, looks_truncated
from ._transports._base import OpenStream, Transport
from ._watchdog import Clock, StreamTimer, Watchdog

log = logging.getLogger("ollama_stream_sync")

DRAIN_TIMEOUT = 0.25
"""Seconds the worker waits for the end of a body after its ``done`` line, to
reuse the connection. Past it (or on any error) the connection is closed
instead; the answer is complete either way."""


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
    on_phase: Callable[[str], object] | None = None
    on_partial: Callable[[Any], object] | None = None
    on_progress: Callable[[Any], object] | None = None


class Consumer(Protocol):
    """The state a stream feeds: a chat's ``Accumulator`` or a pull's tracker."""

    def start(self, now: float) -> None: ...

    def feed(
        self, chunks: list[dict[str, Any]], now: float
    ) -> tuple[list[Event], ProtocolError | None]: ...

    @property
    def done(self) -> bool: ...

    @property
    def has_output(self) -> bool:
        """The first-token phase is over."""
        ...

    @property
    def voids_on_retry(self) -> bool:
        """A retry now would deliver output twice."""
        ...

    def reset(self) -> None: ...

    def mark_cancelled(self) -> None: ...

    def snapshot(self) -> Any: ...

    def cancelled_result(self, result: Any) -> Any: ...

    def notify(self) -> None: ...

    def wait_for(
        self,
        predicate: Callable[[Any], bool],
        timeout: float | None,
        ended: Callable[[], bool],
    ) -> bool: ...


class PartialParser(Protocol):
    """Turns the answer so far into a partial value (structured output)."""

    def feed(self, text: str) -> tuple[bool, Any]:
        """Add content; return whether the parsed value changed, and the value."""
        ...


class LoadProbe(Protocol):
    """Tells, off the worker, whether the model was resident when the stream began."""

    def start(self, on_answer: Callable[[bool], None]) -> None:
        """Begin asking; call ``on_answer(resident)`` once, from any thread."""
        ...

    def answered(self) -> None:
        """The model answered: it is loaded now, whatever was asked before."""
        ...


@dataclass(frozen=True)
class StreamRequest:
    """Everything a worker needs to run one request, its retries included."""

    pool: HostPool
    path: str
    body: dict[str, Any]
    max_line_bytes: int
    payload: bytes = b""
    """``body`` as JSON, encoded once on the caller's thread (see ``encode_body``)."""
    connect_timeout: float | None = None
    first_token_timeout: float | None = None
    read_timeout: float | None = None
    deadline: float | None = None
    deadline_at: float | None = None
    retry: RetryArg = None
    watchdog: Watchdog | None = None
    seal_on_done: Callable[[Any], bool] | None = None
    """Whether the done line completes the whole job (default: always)."""
    probe: Callable[[Host], LoadProbe] | None = None

    @property
    def model(self) -> str | None:
        """The model the request names."""
        model = self.body.get("model")
        return model if isinstance(model, str) else None


class EventSink(Protocol):
    """Where an iterator's events go (thread-safe; never blocks the worker)."""

    def put(self, events: list[StreamEvent]) -> None:
        """Append events in order."""
        ...

    def end(self, error: BaseException | None) -> None:
        """No more events; ``error`` is what the iteration raises at its end."""
        ...


_PHASE_OF: dict[int, PhaseName] = {
    THINKING: "thinking",
    CONTENT: "answering",
    TOOL_CALL: "tool_call",
}
_NAMES = ("on_thinking", "on_content", "on_tool_call", "on_progress")


class Emitter:
    """Delivers a stream's events to callbacks and to an iterator, in order.

    With ``coalesce_interval``, consecutive deltas of one field that arrive
    within the interval are delivered as one; a different field, a tool call,
    a phase change, any other callback and the end of the stream flush first,
    so order is kept and nothing is dropped. When no inline callback needs the
    worker, a pause in the stream is flushed by the client's timer thread;
    otherwise it waits for the next chunk or the end.
    """

    def __init__(
        self,
        callbacks: Callbacks,
        delivery: Delivery,
        *,
        sink: EventSink | None = None,
        coalesce_interval: float | None = None,
        partial: Callable[[], PartialParser] | None = None,
        clock: Clock = time.monotonic,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.callbacks = callbacks
        self._changed = on_change  # wakes handle.wait_for() on a phase change
        self.delivery = delivery
        self.sink = sink
        self._fns = (
            callbacks.on_thinking,
            callbacks.on_content,
            callbacks.on_tool_call,
            callbacks.on_progress,
        )
        self._interval = coalesce_interval or None
        self._partial_factory = partial
        self._partial = partial() if partial is not None else None
        self._clock = clock
        self._t0 = clock()
        self.phase: PhaseName = "connecting"
        """The current phase (read from any thread)."""
        self._phase_sent: str | None = None
        self._fast = (
            delivery.inline
            and sink is None
            and self._interval is None
            and partial is None
            and callbacks.on_phase is None
        )
        # Guards the pending coalesced batch and phase changes: the worker
        # adds while the timer thread (flush) or a probe thread may deliver.
        # Deliveries happen under it, so two sources never swap places.
        self._lock = threading.RLock()
        self._kind: int | None = None
        self._parts: list[str] = []
        self._since = 0.0
        self._timer: StreamTimer | None = None
        self._late_phase: PhaseName | None = None
        self._sent = False
        self._resident: bool | None = None

    # -- configuration ---------------------------------------------------------

    @property
    def timed_flush(self) -> Callable[[], None] | None:
        """What the timer thread may call during a pause (None when it must not)."""
        if self._interval is None:
            return None
        if self.delivery.inline and any(self._fns):
            return None
        return self.flush

    def use_timer(self, timer: StreamTimer | None) -> None:
        """The timer that flushes a pending batch during a pause."""
        self._timer = timer if self.timed_flush is not None else None

    def reset_partial(self) -> None:
        """Start parsing structured output afresh (a new round, or a reset)."""
        if self._partial_factory is not None:
            self._partial = self._partial_factory()

    def elapsed(self) -> float:
        """Seconds since the stream started."""
        return max(0.0, self._clock() - self._t0)

    # -- stream events ------------------------------------------------------------

    def emit(self, events: list[Event], now: float) -> None:
        """Deliver the events of one network read."""
        if self._fast:
            fns, run = self._fns, self.delivery.run
            for kind, payload in events:
                self.phase = _PHASE_OF.get(kind, self.phase)
                fn = fns[kind]
                if fn is not None:
                    run(fn, _NAMES[kind], payload)
            self._raise_if_failed()
            return
        with self._lock:
            out = _Out(self)
            self._take_late_phase(out)
            for kind, payload in events:
                phase = _PHASE_OF.get(kind, self.phase)
                if phase != self.phase:
                    self._flush_locked(out)
                    self._phase_locked(phase, out)
                if kind == TOOL_CALL:
                    self._flush_locked(out)
                    out.delta(kind, payload)
                elif self._interval is None:
                    out.delta(kind, payload)
                elif self._kind == kind and now - self._since < self._interval:
                    if kind == PROGRESS:
                        self._parts[-1] = payload  # only the latest matters
                    else:
                        self._parts.append(payload)
                else:
                    self._flush_locked(out)
                    self._kind, self._parts, self._since = kind, [payload], now
                    if self._timer is not None:
                        self._timer.flush_at(now + self._interval)
            out.send()
        self._raise_if_failed()

    def set_phase(self, name: PhaseName) -> None:
        """Move to phase ``name`` (no event when it does not change)."""
        if self._fast:
            if name != self.phase:
                self.phase = name
                self._changed()
            return
        with self._lock:
            out = _Out(self)
            self._take_late_phase(out)
            if name != self.phase or self._phase_sent is None:
                self._flush_locked(out)
                self._phase_locked(name, out)
            out.send()
        self._raise_if_failed()

    def request_sent(self) -> None:
        """The request is out: "loading" if the model is known not to be resident."""
        with self._lock:
            self._sent = True
            self.set_phase("loading" if self._resident is False else "waiting")

    def new_attempt(self, resident: bool | None = None) -> None:
        """An attempt starts: connecting, nothing sent yet, and what is known of
        whether the model is loaded (``None``: not asked, or not answered)."""
        with self._lock:
            self._sent = False
            self._resident = resident
            self.set_phase("connecting")

    def residency(self, resident: bool) -> None:
        """A probe found out whether the model was loaded (any thread)."""
        with self._lock:
            self._resident = resident
            if self._sent and not resident:
                self.late_phase("loading", only_from="waiting")

    def late_phase(self, name: PhaseName, *, only_from: str) -> None:
        """A phase change found off the worker (a probe), if still in ``only_from``.

        Delivered at once to the iterator and a queued dispatcher; an inline
        ``on_phase`` gets it on the worker, before the next event.
        """
        with self._lock:
            if self.phase != only_from:
                return
            if self.delivery.inline and self.callbacks.on_phase is not None:
                self.phase = name
                self._changed()
                self._late_phase = name
                if self.sink is not None:
                    self.sink.put([Phase(name, self.elapsed())])
                return
            out = _Out(self)
            self._phase_locked(name, out)
            out.send()

    def _take_late_phase(self, out: _Out) -> None:
        name, self._late_phase = self._late_phase, None
        if name is not None and self.callbacks.on_phase is not None:
            out.calls.append(
                self.delivery.bind(self.callbacks.on_phase, "on_phase", name)
            )

    def _phase_locked(self, name: PhaseName, out: _Out) -> None:
        self.phase = name
        self._phase_sent = name
        self._changed()
        out.phase(name)

    def call(self, fn: Callable[..., object] | None, name: str, *args: Any) -> None:
        """Deliver a callback that is not a delta (on_retry, on_reset, on_tool_result),
        with its iterator event."""
        with self._lock:
            out = _Out(self)
            self._take_late_phase(out)
            self._flush_locked(out)
            event = _event_for(name, args)
            if event is not None:
                out.events.append(event)
            if fn is not None:
                out.user(fn, name, *args)
            out.send()
        self._raise_if_failed()

    def flush(self) -> None:
        """Deliver the pending batch now, if any (worker or timer thread)."""
        if self._interval is None and self._late_phase is None:
            return
        with self._lock:
            out = _Out(self)
            self._flush_locked(out)
            out.send()

    def _flush_locked(self, out: _Out) -> None:
        kind, parts = self._kind, self._parts
        if kind is None:
            return
        self._kind, self._parts = None, []
        if self._timer is not None:
            self._timer.flush_at(None)
        out.delta(kind, parts[-1] if kind == PROGRESS else "".join(parts))

    def _raise_if_failed(self) -> None:
        error = self.delivery.error
        if error is not None and self.delivery.inline:
            raise error

    def partial_value(self, text: str, out: _Out) -> None:
        """Feed answer text to the structured-output parser; report a change."""
        if self._partial is None:
            return
        changed, value = self._partial.feed(text)
        if changed:
            out.events.append(Partial(value))
            fn = self.callbacks.on_partial
            if fn is not None:
                out.user(fn, "on_partial", value)


class _Out:
    """What one delivery step hands over: user calls and iterator events, in order."""

    __slots__ = ("calls", "emitter", "events")

    def __init__(self, emitter: Emitter) -> None:
        self.emitter = emitter
        self.calls: list[Callable[[], None]] = []
        self.events: list[StreamEvent] = []

    def user(self, fn: Callable[..., object], name: str, *args: Any) -> None:
        delivery = self.emitter.delivery
        if delivery.inline:
            self.send()  # earlier events first
            delivery.run(fn, name, *args)
        else:
            self.calls.append(delivery.bind(fn, name, *args))

    def delta(self, kind: int, payload: Any) -> None:
        emitter = self.emitter
        if emitter.sink is not None:
            if kind == THINKING:
                self.events.append(Thinking(payload))
            elif kind == CONTENT:
                self.events.append(Content(payload))
            elif kind == TOOL_CALL:
                self.events.append(ToolCall(payload))
        fn = emitter._fns[kind]
        if fn is not None:
            self.user(fn, _NAMES[kind], payload)
        if kind == CONTENT:
            emitter.partial_value(payload, self)

    def phase(self, name: PhaseName) -> None:
        emitter = self.emitter
        if emitter.sink is not None:
            self.events.append(Phase(name, emitter.elapsed()))
        fn = emitter.callbacks.on_phase
        if fn is not None:
            self.user(fn, "on_phase", name)

    def send(self) -> None:
        emitter = self.emitter
        if self.events and emitter.sink is not None:
            emitter.sink.put(self.events)
        self.events = []
        if self.calls:
            emitter.delivery.send(self.calls)
            self.calls = []


def _event_for(name: str, args: tuple[Any, ...]) -> StreamEvent | None:
    if name == "on_retry":
        return Retry(args[0], args[1], args[2])
    if name == "on_reset":
        return Reset(args[0], args[1])
    if name == "on_tool_result":
        return ToolResult(args[0], args[1])
    return None


@dataclass
class StreamContext:
    """What a handle gives its job: state, abort switch, and the way out."""

    acc: Consumer
    scope: AbortScope
    emitter: Emitter
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def delivery(self) -> Delivery:
        """The stream's callback delivery."""
        return self.emitter.delivery


Job = Callable[[StreamContext], Any]
"""What a handle's worker thread runs: one stream, or several (a conversation);
it returns the handle's result (a ``ChatResult``, a ``ModelResult``)."""


def run_stream(
    request: StreamRequest, ctx: StreamContext, clock: Clock = time.monotonic
) -> Any:
    """Run one stream to its end on this thread, retrying as its policy allows.

    Returns:
        The consumer's final snapshot (a ``ChatResult`` for a chat, the last
        ``Progress`` for a pull); a cancelled chat's has ``cancelled`` set.

    Raises:
        StreamError: the failure, with ``.partial`` holding what arrived, its
            ``url`` and ``model`` filled in.
    """
    return _Run(request, ctx, clock).run()


class _Run:
    """The state of one stream across its attempts."""

    def __init__(
        self, request: StreamRequest, ctx: StreamContext, clock: Clock
    ) -> None:
        self.request = request
        self.ctx = ctx
        self.acc = ctx.acc
        self.scope = ctx.scope
        self.emitter = ctx.emitter
        self.clock = clock
        self.host: Host | None = None
        self.timer: StreamTimer | None = None
        self.resident: bool | None = None
        self.probe: LoadProbe | None = None

    def run(self) -> Any:
        request, acc, emitter = self.request, self.acc, self.emitter
        if request.watchdog is not None:
            self.timer = request.watchdog.timer(
                self.scope,
                first_token=request.first_token_timeout,
                read=request.read_timeout,
                deadline=request.deadline,
                deadline_at=request.deadline_at,
                flush=emitter.timed_flush,
            )
        emitter.use_timer(self.timer)
        retrying = for_stream(
            request.retry,
            output_shown=lambda: acc.voids_on_retry,
            stopped=lambda: self.scope.reason is not None,
            sleep=self._sleep,
            before_sleep=self._before_sleep,
            failover=self._can_fail_over,
        )
        try:
            if retrying is None:
                self._attempt()
            else:
                for attempt in retrying:
                    with attempt:
                        self._attempt()
        except _Cancelled:
            return acc.cancelled_result(None)
        except StreamError as err:
            self._fill(err)
            err.partial = acc.snapshot()
            raise
        finally:
            self._stop_timer()
            try:
                emitter.flush()  # everything pending reaches the callbacks first
            except CallbackError as exc:
                exc.partial = acc.snapshot()
                raise
        return acc.snapshot()

    def _stop_timer(self) -> None:
        if self.timer is not None and self.request.watchdog is not None:
            self.timer.idle()
            self.request.watchdog.unwatch(self.timer)

    def _fill(self, err: StreamError) -> None:
        if err.url is None and self.host is not None:
            err.url = self.host.url
        if err.model is None:
            err.model = self.request.model

    def _attempt(self) -> None:
        scope = self.scope
        scope.begin_attempt()
        self.host = self.request.pool.pick(after=self.host)
        if self.timer is not None:
            self.timer.url = self.host.url
            self.timer.attempt_started(self.clock())
        try:
            self._stream_once(self.host.transport)
        except Exception as exc:
            error = self._error_for(exc)
            if error is None:
                raise _Cancelled from exc
            self._fill(error)
            self.request.pool.failed(self.host, error)
            if error is exc:
                raise
            if error.__cause__ is not None:
                # A callback's or dispatcher's failure: its cause is the
                # user's exception, not the symptom the abort caused here.
                raise error  # noqa: B904  # the symptom stays as __context__
            raise error from exc

    def _error_for(self, exc: Exception) -> StreamError | None:
        """The stream's real error behind ``exc``; None for a cancel."""
        reason = self.scope.reason
        if isinstance(reason, CancelRequest):
            return None
        if isinstance(reason, StreamError):
            return reason  # a deadline or a callback: exc is its symptom
        if isinstance(self.scope.attempt_reason, StreamError):
            return self.scope.attempt_reason  # a timeout fired
        if isinstance(exc, Aborted) and isinstance(exc.reason, StreamError):
            return exc.reason
        return translate(exc, url=self.host.url if self.host else None)

    def _can_fail_over(self) -> bool:
        """Whether the next attempt can go to another host, not in cool-down."""
        return self.request.pool.has_other(self.host)

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
        attempt, delay = state.attempt_number, float(state.upcoming_sleep)
        # Text, never the error object: a log handler that keeps records must
        # not keep the error's traceback, and with it a response and a socket.
        log.warning(
            "attempt %d to %s failed (%s: %s); retrying in %.2fs",
            attempt,
            self.host.url if self.host else "?",
            type(error).__name__,
            str(error),
            delay,
        )
        emitter = self.emitter
        emitter.set_phase("retrying")
        cbs = emitter.callbacks
        emitter.call(cbs.on_retry, "on_retry", attempt, error, delay)
        if self.acc.voids_on_retry:
            log.warning(
                "output was already delivered: resetting before attempt %d", attempt + 1
            )
            emitter.call(cbs.on_reset, "on_reset", attempt, error)
            self.acc.reset()
            emitter.reset_partial()

    def _sent(self) -> None:
        """The transport sent the request: now the model loads or reads the prompt.

        Called from inside the transport's network call, where the scope is
        bound; ``on_phase`` runs unbound, like every user callback, so that an
        HTTP call of its own is never claimed by (and taken from) the stream.
        """
        scope = current_scope()
        bind(None)
        try:
            self.emitter.request_sent()
        finally:
            bind(scope)

    def _probe_answer(self, resident: bool) -> None:
        self.resident = resident
        self.emitter.residency(resident)

    def _stream_once(self, transport: Transport) -> None:
        request, acc, scope, clock, emitter = (
            self.request,
            self.acc,
            self.scope,
            self.clock,
            self.emitter,
        )
        scope.check()
        acc.start(clock())
        emitter.new_attempt(self.resident)
        if (
            request.probe is not None
            and self.host is not None
            and self.resident is None
        ):
            self.probe = request.probe(self.host)
            self.probe.start(self._probe_answer)
        scope.phase_hook = self._sent
        bind(scope)
        try:
            stream = transport.open(
                request.path,
                request.payload,
                connect_timeout=request.connect_timeout,
                model=request.model,
            )
        finally:
            bind(None)
            scope.phase_hook = None
        if emitter.phase == "connecting":
            self._sent()  # a transport that could not tell us earlier
        try:
            self._read(stream)
        finally:
            bind(scope)
            try:
                stream.close()
            finally:
                bind(None)

    def _read(self, stream: OpenStream) -> None:
        acc, scope, clock, emitter, timer = (
            self.acc,
            self.scope,
            self.clock,
            self.emitter,
            self.timer,
        )
        parser = LineParser(self.request.max_line_bytes)
        feed, check = acc.feed, scope.check
        it = iter(stream)
        while True:
            bind(scope)
            try:
                data = next(it, None)
            finally:
                bind(None)
            if data is None:
                break
            now = clock()
            if timer is not None:
                timer.arrived()
            chunks = parser.feed(data)
            if chunks:
                check()  # a cancel stops delivery even of lines already received
                events, error = (
                    self._feed_final(chunks, now)
                    if _has_done(chunks)
                    else feed(chunks, now)
                )
                if events:
                    if timer is not None:
                        timer.output_arrived(now)
                    emitter.emit(events, now)
                if error is not None:
                    raise error
                if acc.done:
                    self._finish(stream)
                    return
            if parser.error is not None:
                raise parser.error
            if timer is not None:
                timer.waiting(clock(), acc.has_output)
        chunks = parser.finish()
        if chunks:
            events, error = (
                self._feed_final(chunks, clock())
                if _has_done(chunks)
                else feed(chunks, clock())
            )
            if events:
                emitter.emit(events, clock())
            if error is not None:
                raise error
        if parser.error is not None:
            raise parser.error
        check()
        if not acc.done:
            raise ProtocolError(
                "the stream ended without its final line (done, or success): "
                "the response is truncated"
            )
        self._finish(stream)

    def _feed_final(
        self, chunks: list[dict[str, Any]], now: float
    ) -> tuple[list[Event], ProtocolError | None]:
        """Feed the read that holds the done line and seal the outcome at once.

        A cancel (or deadline) either lands before, and the answer is not
        complete, or is refused: a complete answer is never reported cancelled.
        """
        acc, seal = self.acc, self.request.seal_on_done

        def should_seal(fed: tuple[list[Event], ProtocolError | None]) -> bool:
            return fed[1] is None and acc.done and (seal is None or seal(acc))

        return self.scope.seal_with(lambda: acc.feed(chunks, now), should_seal)

    def _finish(self, stream: OpenStream) -> None:
        """The done line arrived: fix the outcome, then drain to reuse the socket."""
        self._stop_timer()
        if self.probe is not None:
            self.probe.answered()
        seal = self.request.seal_on_done
        if (seal is None or seal(self.acc)) and not self.scope.seal():
            self.scope.check()  # aborted just before: that outcome stands
        self.emitter.flush()
        bind(self.scope)
        try:
            stream.drain(DRAIN_TIMEOUT)
        finally:
            bind(None)


def _has_done(chunks: list[dict[str, Any]]) -> bool:
    return any(chunk.get("done") is True for chunk in chunks)


def complete(
    ctx: StreamContext,
    result: ChatResult,
    fmt: FormatSpec | None,
    estimate: int | None,
) -> ChatResult:
    """Finish a complete answer: flag a silently truncated prompt, parse ``format``.

    Raises:
        OutputValidationError: the answer does not match ``format``.
    """
    if result.cancelled or not result.done:
        return result
    fields: dict[str, Any] = {}
    if estimate is not None and looks_truncated(estimate, result.prompt_eval_count):
        log.warning(
            "the server read %s prompt tokens of about %d sent: the prompt was "
            "probably truncated to the model's context (raise options num_ctx)",
            result.prompt_eval_count,
            estimate,
        )
        fields["prompt_truncated"] = True
    if fmt is not None:
        fields["parsed"] = fmt.parse(result)
    if not fields:
        return result
    acc = cast(Accumulator, ctx.acc)
    acc.set_fields(**fields)
    return acc.snapshot()


def deadline_passed(deadline_at: float | None, clock: Clock = time.monotonic) -> bool:
    """Whether an absolute deadline is behind us."""
    return deadline_at is not None and clock() >= deadline_at


def deadline_error(seconds: float | None) -> StreamTimeout:
    """The error of a whole call's deadline."""
    return StreamTimeout(
        f"deadline timeout after {seconds}s: the call's deadline passed",
        which="deadline",
    )


__all__ = [
    "TERMINAL_PHASES",
    "Callbacks",
    "CancelRequest",
    "Emitter",
    "EventSink",
    "Job",
    "StreamContext",
    "StreamRequest",
    "run_stream",
]
