"""A stream's events to its callbacks (through the dispatcher) and its iterator.

In order, deltas of one kind merged within ``coalesce_interval``, phases and
partial structured values added. A callback that raises becomes the stream's
``CallbackError``, a dispatcher that refuses one its ``DispatchError``: either
aborts the stream's scope and drops every later callback but the terminal one.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

from ._cancel import AbortScope, unbound
from ._dispatch import Dispatcher, InlineDispatcher, QueuedDispatcher
from ._errors import CallbackError, DispatchError, StreamError
from ._events import (
    Content,
    Done,
    Partial,
    Phase,
    PhaseName,
    Reset,
    Retry,
    StreamEvent,
    Thinking,
    ToolCall,
    ToolResult,
    Trim,
    Warn,
)
from ._observe import Observer
from ._result import BatchProgress, ChatResult, Progress
from ._timers import StreamTimer

log = logging.getLogger("ollama_stream_sync")

_CALLBACK: dict[type, tuple[str, Callable[[Any], tuple[Any, ...]]]] = {
    Thinking: ("on_thinking", lambda e: (e.text,)),
    Content: ("on_content", lambda e: (e.text,)),
    ToolCall: ("on_tool_call", lambda e: (e.call,)),
    Progress: ("on_progress", lambda e: (e,)),
    Partial: ("on_partial", lambda e: (e.value,)),
    Retry: ("on_retry", lambda e: (e.attempt, e.error, e.delay)),
    Reset: ("on_reset", lambda e: (e.attempt, e.error)),
    ToolResult: ("on_tool_result", lambda e: (e.call, e.result)),
    Phase: ("on_phase", lambda e: (e.name,)),
    Trim: ("on_trim", lambda e: (list(e.dropped),)),
    Warn: ("on_warning", lambda e: (e.warning,)),
    BatchProgress: ("on_progress", lambda e: (e.done, e.total)),
}
"""Each event's callback, and the arguments it gets."""

_PHASE_OF: dict[type, PhaseName] = {
    Thinking: "thinking",
    Content: "answering",
    ToolCall: "tool_call",
}

_NOT_SENT, _QUEUED, _RUNNING = 0, 1, 2
"""Where the terminal callback is: not handed over, waiting in the dispatcher,
or running (or done)."""


class EventSink(Protocol):
    """Where an iterator's events go (thread-safe; never blocks the worker)."""

    def put(self, events: list[StreamEvent]) -> None:
        """Append events in order."""

    def end(self, error: BaseException | None) -> None:
        """No more events; ``error`` is what the iteration raises at its end."""


class PartialParser(Protocol):
    """Turns the answer so far into a partial value (structured output)."""

    def feed(self, text: str) -> tuple[bool, Any]:
        """Add content; return whether the parsed value changed, and the value."""


class _Out(NamedTuple):
    """What one step delivers: calls for the dispatcher, events for the iterator."""

    calls: list[tuple[str, Callable[..., object], tuple[Any, ...]]]
    events: list[StreamEvent]


class Delivery:
    """One stream's callbacks and iterator events: in order, each once, fenced."""

    def __init__(
        self,
        callbacks: Mapping[str, Any],
        dispatcher: Dispatcher,
        scope: AbortScope,
        *,
        sink: EventSink | None = None,
        coalesce_interval: float | None = None,
        partial: Callable[[], PartialParser] | None = None,
        on_change: Callable[[], None] = lambda: None,
        observer: Observer | None = None,
    ) -> None:
        self.callbacks = {k: v for k, v in callbacks.items() if v is not None}
        self.dispatcher = dispatcher
        self.inline = type(dispatcher) is InlineDispatcher
        self.queued = dispatcher if isinstance(dispatcher, QueuedDispatcher) else None
        # Batches go straight to the queue unless a subclass overrides dispatch().
        self._batch = (
            self.queued is not None
            and type(dispatcher).dispatch is QueuedDispatcher.dispatch
        )
        self._scope = scope
        self.sink = sink
        self._interval = coalesce_interval or None
        self._partial_factory = partial
        self._partial = partial() if partial is not None else None
        self._changed = on_change  # wakes handle.wait_for() on a phase change
        self.observer = observer
        self._t0 = time.monotonic()
        self.phase: PhaseName = "connecting"
        """The current phase (read from any thread)."""
        # Guards the pending batch, the phase and the terminal state: the worker
        # delivers while the timer thread (a flush) or a probe thread may too.
        # Queued deliveries are handed over under it, so sources never swap.
        self._lock = threading.RLock()
        self._reported = False
        self._kind: type | None = None
        self._parts: list[Any] = []
        self._since = 0.0
        self._timer: StreamTimer | None = None
        self._late: PhaseName | None = None
        self._terminal = _NOT_SENT
        self.error: StreamError | None = None
        """The first callback or dispatch failure."""
        self.delivered = threading.Event()
        """Set once the terminal callback ran (or could not be delivered)."""
        if self.queued is not None:
            self.queued.attach(self)

    @property
    def timed_flush(self) -> Callable[[], None] | None:
        """What the timer thread may call in a pause (None when it must not:
        inline callbacks run on the worker only)."""
        if self._interval is None or (self.inline and self.callbacks):
            return None
        return self.flush

    def use_timer(self, timer: StreamTimer | None) -> None:
        """The timer that flushes a pending batch during a pause."""
        self._timer = timer if self.timed_flush is not None else None

    def reset_partial(self) -> None:
        """Parse structured output afresh (a new round, or a reset)."""
        if self._partial_factory is not None:
            self._partial = self._partial_factory()

    def elapsed(self) -> float:
        """Seconds since the stream started."""
        return max(0.0, time.monotonic() - self._t0)

    def deltas(self, events: list[Any], now: float) -> None:
        """Deliver the output of one network read (merged within the interval)."""
        self._step(self._deltas_locked, events, now)

    def _deltas_locked(self, out: _Out, events: list[Any], now: float) -> None:
        for event in events:
            kind = type(event)
            phase = _PHASE_OF.get(kind, self.phase)
            if phase != self.phase:
                self._flush_locked(out)
                self._phase_locked(phase, out)
            if self.observer is not None:  # after the phase it opens
                self.observer.event(event)
            if self._interval is None or kind is ToolCall:
                self._flush_locked(out)
                self._add(event, out)
            elif kind is self._kind and now - self._since < self._interval:
                if kind is Progress:
                    self._parts[-1] = event  # only the latest matters
                else:
                    self._parts.append(event.text)
            else:
                self._flush_locked(out)
                self._kind, self._since = kind, now
                self._parts = [event if kind is Progress else event.text]
                if self._timer is not None:
                    self._timer.flush_at(now + self._interval)

    def emit(
        self, event: Retry | Reset | ToolResult | Trim | Warn | BatchProgress
    ) -> None:
        """Deliver one event that is not output, after whatever is pending."""
        if self.observer is not None:
            self.observer.event(event)

        def step(out: _Out) -> None:
            self._flush_locked(out)
            self._add(event, out)

        self._step(step)

    def set_phase(self, name: PhaseName) -> None:
        """Move to phase ``name`` (no event when it does not change)."""

        def step(out: _Out) -> None:
            if name != self.phase or not self._reported:
                self._flush_locked(out)
                self._phase_locked(name, out)

        self._step(step)

    def late_phase(self, name: PhaseName, *, only_from: PhaseName) -> None:
        """A phase found off the worker (a probe), if the stream is still in
        ``only_from``: at once to the iterator and a queued dispatcher; an inline
        ``on_phase`` gets it on the worker, before the next event."""
        with self._lock:
            if self.phase != only_from:
                return
            if self.inline and "on_phase" in self.callbacks:
                self._late = name
            out = _Out([], [])
            self._phase_locked(name, out)
            self._send_locked(out)  # sends no call when inline

    def flush(self) -> None:
        """Deliver the pending batch now, if any (worker or timer thread)."""
        self._step(self._flush_locked)

    def _step(self, step: Callable[..., None], *args: Any) -> None:
        """Run ``step(out, *args)`` under the lock, hand its output over, and run
        it here when inline (a raise of a callback stops the worker at once)."""
        out = _Out([], [])
        with self._lock:
            if self._late is not None:
                late, self._late = self._late, None
                out.calls.append(("on_phase", self.callbacks["on_phase"], (late,)))
            step(out, *args)
            self._send_locked(out)
        if self.inline:
            for name, fn, call_args in out.calls:
                self.run(name, fn, call_args)
            if self.error is not None:
                raise self.error

    def _phase_locked(self, name: PhaseName, out: _Out) -> None:
        self.phase, self._reported = name, True
        self._changed()
        event = Phase(name, self.elapsed())
        if self.observer is not None:
            self.observer.event(event)
        self._add(event, out)

    def _flush_locked(self, out: _Out) -> None:
        kind, parts = self._kind, self._parts
        if kind is None:
            return
        self._kind, self._parts = None, []
        if self._timer is not None:
            self._timer.flush_at(None)
        self._add(parts[-1] if kind is Progress else kind("".join(parts)), out)

    def _add(self, event: Any, out: _Out) -> None:
        name, args = _CALLBACK[type(event)]
        if self.sink is not None and type(event) is not Progress:
            out.events.append(event)
        fn = self.callbacks.get(name)
        if fn is not None:
            out.calls.append((name, fn, args(event)))
        if type(event) is Content and self._partial is not None:
            changed, value = self._partial.feed(event.text)
            if changed:
                self._add(Partial(value), out)

    def _send_locked(self, out: _Out) -> None:
        if out.events and self.sink is not None:
            self.sink.put(out.events)
        if self.inline or not out.calls or self.error is not None:
            return
        calls = [functools.partial(self.run, *call) for call in out.calls]
        try:
            if self._batch and self.queued is not None:
                self.queued.dispatch_many(calls)
            else:
                for call in calls:
                    self.dispatcher.dispatch(call)
        except BaseException as exc:  # noqa: BLE001  # any failure stops the stream
            error = DispatchError(f"the dispatcher {self.dispatcher!r} failed: {exc!r}")
            error.__cause__ = exc
            self.fail(error)

    def run(self, name: str, fn: Callable[..., object], args: tuple[Any, ...]) -> None:
        """Run one callback here; a raise becomes the stream's ``CallbackError``, and
        escapes only as a ``KeyboardInterrupt``/``SystemExit`` on a delivering thread
        (Ctrl-C must act: a blocking call then cancels the stream)."""
        if self.error is not None:
            return
        try:
            unbound(fn, *args)  # an HTTP call of the callback's own is not the stream's
        except BaseException as exc:
            if (
                isinstance(exc, KeyboardInterrupt)
                and not self.inline
                and threading.current_thread() is threading.main_thread()
            ):
                raise  # the user's Ctrl-C, not the callback's failure
            error = CallbackError(f"{name} callback raised {exc!r}")
            error.__cause__ = exc
            self.fail(error)
            if not isinstance(exc, Exception) and not self.inline:
                raise

    def fail(self, error: StreamError) -> None:
        """Record the first delivery failure and stop the stream."""
        with self._lock:
            if self.error is not None:
                return
            self.error = error
        self._scope.abort(error)

    def dispatcher_closed(self, cause: BaseException | None) -> None:
        """The queued dispatcher closed: a running stream stops with ``DispatchError``;
        one that ended keeps its outcome (a terminal callback queued is dropped)."""
        with self._lock:
            if self.delivered.is_set() or self._terminal == _RUNNING:
                return
            dropped = self._terminal == _QUEUED
        error = DispatchError(
            f"the dispatcher {self.dispatcher!r} was closed (its window or toolkit "
            "is gone) while the stream still had callbacks to deliver"
        )
        error.__cause__ = cause
        self._scope.abort(error)  # a stream that already ended refuses it
        if dropped:
            self.delivered.set()
        self.notify()

    def notify(self) -> None:
        """Wake threads that pump the dispatcher and wait for ``delivered``."""
        if self.queued is not None:
            self.queued.notify()

    def finish(
        self,
        result: Any,
        error: BaseException | None,
        resolve: Callable[[Any, BaseException | None], None],
        partial: Callable[[], Any],
    ) -> None:
        """The terminal phase and callback, the iterator's end and ``resolve``: inline,
        ``on_done`` has run when the handle resolves; queued, the handle resolves
        first (completion never waits for someone to pump), the callback follows."""
        cancelled = bool(getattr(result, "cancelled", False))
        phase: PhaseName = "failed" if error else ("cancelled" if cancelled else "done")
        with contextlib.suppress(StreamError):  # recorded, and reported below
            self.set_phase(phase)
        # A failed callback is the outcome, even after a cancel: the user's
        # exception is never swallowed (a closed dispatcher is not one).
        failed = self.error
        if failed and not error and not (cancelled and type(failed) is DispatchError):
            failed.partial = partial()
            result, error = None, failed
        if self.inline:
            result, error = self._terminal_call(result, error, partial, late=False)
        if self.sink is not None:
            if error is None and isinstance(result, ChatResult):
                self.sink.put([Done(result)])
            self.sink.end(error)
        resolve(result, error)
        if self.inline:
            self.delivered.set()
            return
        with self._lock:
            self._terminal = _QUEUED

        def terminal() -> None:
            with self._lock:
                self._terminal = _RUNNING
            self._terminal_call(result, error, partial, late=True)

        try:
            self.dispatcher.dispatch(terminal)
        except BaseException as exc:  # noqa: BLE001  # reported to the caller
            log.debug("%r refused the terminal callback: %r", self.dispatcher, exc)
            if error is None and not cancelled and self.error is None:
                self.error = DispatchError(
                    f"the dispatcher {self.dispatcher!r} refused the final callback"
                )
                self.error.partial = partial()
            self.delivered.set()
            self.notify()

    def _terminal_call(
        self,
        result: Any,
        error: BaseException | None,
        partial: Callable[[], Any],
        *,
        late: bool,
    ) -> tuple[Any, BaseException | None]:
        """Run exactly one of on_done / on_error, unbound, on this thread."""
        try:
            if late and error is None and self.error is not None:
                # A queued callback failed after the stream ended: report that.
                error, result = self.error, None
                self.error.partial = partial()
            on_done, on_error = map(self.callbacks.get, ("on_done", "on_error"))
            if error is None and on_done is not None:
                try:
                    unbound(on_done, result)
                except BaseException as exc:
                    failed = CallbackError(f"on_done callback raised {exc!r}")
                    failed.__cause__ = exc
                    failed.partial = partial()
                    self.error = self.error or failed
                    result, error = None, failed
                    if not isinstance(exc, Exception) and not self.inline:
                        raise
            elif isinstance(error, StreamError) and on_error is not None:
                try:
                    unbound(on_error, error)
                except BaseException as exc:  # the stream's error wins; this is logged
                    log.exception("on_error callback raised")
                    if not isinstance(exc, Exception) and not self.inline:
                        raise
        finally:
            if late:
                self.delivered.set()
        return result, error
