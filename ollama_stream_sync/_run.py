"""One stream's attempts on its worker thread: the place routing and telemetry see.

Each attempt goes to the host the router picks, with the stream's ``AbortScope``
bound to the thread (a cancel or a timer shuts its socket down at once), and its
body flows transport → ``Lines`` → state → delivery; a failure is retried as the
policy allows, on another host when there is one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import tenacity

from ._cancel import AbortScope, Cancelled, bind
from ._decode import Lines
from ._delivery import Delivery
from ._errors import ModelNotFound, ProtocolError, StreamError, StreamTimeout
from ._events import Reset, Retry
from ._gate import Gate
from ._hosts import Host, Hosts
from ._observe import Observer
from ._result import NO_HEADERS
from ._retry import RetryArg, failure, for_stream
from ._timers import StreamTimer, Watchdog
from ._transports._base import OpenStream

log = logging.getLogger("ollama_stream_sync")

_INFERENCE = frozenset({"/api/chat", "/api/generate"})

DRAIN_TIMEOUT = 0.25
"""Seconds the worker reads on after the done line for the end of the body, to
reuse the connection; past it the connection is closed instead. The answer is
complete either way."""


class LoadProbe(Protocol):
    """Tells, off the worker, whether the model was resident when the stream began."""

    def start(self, on_answer: Callable[[bool], None]) -> None:
        """Begin asking; call ``on_answer(resident)`` once, from any thread."""

    def answered(self) -> None:
        """The model answered: it is loaded now, whatever was asked before."""


@dataclass(frozen=True)
class StreamRequest:
    """Everything a worker needs to run one request, its retries included."""

    hosts: Hosts
    watchdog: Watchdog
    path: str
    payload: bytes
    """The body as JSON, encoded once on the caller's thread."""
    model: str | None = None
    max_line_bytes: int = 8 * 1024 * 1024
    connect_timeout: float | None = None
    first_token_timeout: float | None = None
    read_timeout: float | None = None
    deadline: float | None = None
    deadline_at: float | None = None
    retry: RetryArg = None
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Mapping[str, Any] | None = None
    """The body before encoding, for observers (its prompt, model options)."""
    seal_on_done: Callable[[], bool] | None = None
    """Whether the done line completes the whole job (default: always)."""
    probe: Callable[[Host], LoadProbe] | None = None
    sticky: str | None = None
    """The URL of the host to stay on while it is healthy (a conversation's)."""
    gate: Gate | None = None
    """The client's ``max_in_flight`` slots, if it has a cap."""


@dataclass
class StreamContext:
    """What a handle gives its job: state, abort switch, delivery, observer."""

    state: Any
    """What the stream feeds: a ``ChatState``, a ``ProgressState``..."""
    scope: AbortScope
    delivery: Delivery
    observer: Observer | None = None


def run_stream(request: StreamRequest, ctx: StreamContext) -> Any:
    """Run one stream to its end on this thread, retrying as its policy allows;
    return the state's last snapshot (marked cancelled after a cancel), or raise
    the ``StreamError`` with ``.partial``, ``.url`` and ``.model``."""
    observer = ctx.observer
    if observer is None:
        return _Run(request, ctx).run()
    observer.request(request.body)
    try:
        result = _Run(request, ctx).run()
    except BaseException as exc:
        observer.request_end(None, exc)
        raise
    observer.request_end(result, None)
    return result


class _Run:
    """The state of one stream across its attempts."""

    def __init__(self, request: StreamRequest, ctx: StreamContext) -> None:
        self.request, self.ctx = request, ctx
        self.state, self.scope, self.delivery = ctx.state, ctx.scope, ctx.delivery
        self.host: Host | None = None
        self.tried: list[Host] = []
        """Hosts whose attempt failed: a failover goes elsewhere."""
        self.attempts = 0
        self.resident: bool | None = None
        self.probe: LoadProbe | None = None
        self.timer: StreamTimer = request.watchdog.timer(
            self.scope,
            first_token=request.first_token_timeout,
            read=request.read_timeout,
            deadline=request.deadline,
            deadline_at=request.deadline_at,
            flush=self.delivery.timed_flush,
        )

    def run(self) -> Any:
        request, state, delivery = self.request, self.state, self.delivery
        delivery.use_timer(self.timer)
        retrying = for_stream(
            request.retry,
            output_shown=lambda: state.voids_on_retry,
            stopped=lambda: self.scope.reason is not None,
            sleep=self._sleep,
            before_sleep=self._before_sleep,
            failover=self._other_host if len(request.hosts.hosts) > 1 else None,
        )
        gate, entered = request.gate, False
        try:
            if gate is not None:
                gate.enter(self.scope, lambda: delivery.set_phase("queued"))
                entered = True
            if retrying is None:
                self._attempt()
            else:
                for attempt in retrying:
                    with attempt:
                        self._attempt()
        except Cancelled:
            return state.cancelled_result()
        except StreamError as err:
            err.url = err.url or (self.host.url if self.host else None)
            err.model = err.model or request.model
            err.partial = state.snapshot()
            raise
        finally:
            if gate is not None and entered:
                gate.leave()
            self.timer.idle()
            request.watchdog.unwatch(self.timer)
            try:
                delivery.flush()  # everything pending reaches the callbacks first
            except StreamError as exc:
                exc.partial = state.snapshot()
                raise
        return state.snapshot()

    def _attempt(self) -> None:
        request, scope, hosts = self.request, self.scope, self.request.hosts
        scope.begin_attempt()
        # Routing by residency, and learning from the outcome, is for inference.
        model = request.model if request.path in _INFERENCE else None
        self.host = host = hosts.pick(
            model, owner=self, avoid=self.tried, sticky=request.sticky
        )
        self.attempts += 1
        error: StreamError | None = None
        ok = False
        bind(scope)
        try:
            self._once(host)
            ok = True
        except StreamError as exc:
            error = exc
            self.tried.append(host)
            raise
        finally:
            bind(None)
            result = self.state.snapshot() if ok else None
            ttft = getattr(result, "time_to_first_token", None)
            hosts.done(host, error, owner=self, ok=ok, model=model, ttft=ttft)

    def _other_host(self, error: StreamError) -> bool:
        """Whether a host this call has not tried may take over at once (for a
        missing model, a chat's: a pull's registry is the same everywhere)."""
        if not isinstance(error, ModelNotFound):
            return self.request.hosts.can_fail_over(self.tried)
        inference = self.request.path in _INFERENCE
        return inference and self.request.hosts.can_fail_over(
            self.tried, self.request.model
        )

    def _once(self, host: Host) -> None:
        request, state = self.request, self.state
        scope, delivery = self.scope, self.delivery
        scope.check()
        headers = dict(request.headers)
        if self.ctx.observer is not None:
            headers |= self.ctx.observer.attempt(self.attempts, host.url)
        delivery.set_phase("connecting")
        if request.probe is not None and self.resident is None:
            self.probe = request.probe(host)
            self.probe.start(self._resident)
        self.timer.url = host.url
        self.timer.attempt_started(time.monotonic())
        sent = False

        def on_sent() -> None:
            nonlocal sent
            sent = True
            state.start(time.monotonic())
            delivery.set_phase("loading" if self.resident is False else "waiting")

        scope.on_sent = on_sent
        fields = getattr(state, "set_fields", None)  # a chat's result has them
        if fields is not None:
            fields(host=host.url, response_headers=NO_HEADERS)
        try:
            stream = host.transport.open(
                request.path,
                request.payload,
                timeout=request.connect_timeout,
                headers=headers,
                model=request.model,
            )
        except StreamError as exc:  # an error answer's headers, if it had any
            if fields is not None:
                fields(response_headers=exc.partial.response_headers)
            raise
        finally:
            scope.on_sent = lambda: None
        if not sent:
            on_sent()  # a transport that could not tell us earlier
        if fields is not None:
            fields(response_headers=stream.headers)
        try:
            self._read(stream)
        finally:
            stream.close()

    def _resident(self, resident: bool) -> None:
        """A probe found out whether the model was loaded (any thread)."""
        self.resident = resident
        if not resident:
            self.delivery.late_phase("loading", only_from="waiting")

    def _read(self, stream: OpenStream) -> None:
        state, scope, timer = self.state, self.scope, self.timer
        lines = Lines(self.request.max_line_bytes)
        for data in stream:
            now = time.monotonic()
            timer.arrived()
            chunks = lines.feed(data)
            if chunks and self._take(chunks, now):
                return self._finish(stream)
            if lines.error is not None:
                raise lines.error
            timer.waiting(time.monotonic(), state.has_output)
        chunks = lines.finish()
        if chunks and self._take(chunks, time.monotonic()):
            return self._finish(stream)
        if lines.error is not None:
            raise lines.error
        scope.check()  # a body cut by a cancel is the cancel, not a truncation
        raise ProtocolError(
            "the stream ended without its final line (done, or success): "
            "the response is truncated"
        )

    def _take(self, chunks: list[dict[str, Any]], now: float) -> bool:
        """Feed one read's chunks and deliver their events; True once done. The read
        with the done line is fed and sealed as one step: a cancel lands before it
        or is refused."""
        state, scope, seal = self.state, self.scope, self.request.seal_on_done
        self.scope.check()  # a cancel stops delivery even of lines already read
        if any(chunk.get("done") is True for chunk in chunks):
            events, error = scope.seal_with(
                lambda: state.feed(chunks, now),
                lambda fed: fed[1] is None and state.done and (seal is None or seal()),
            )
        else:
            events, error = state.feed(chunks, now)
        if events:
            self.timer.output_arrived(now)
            self.delivery.deltas(events, now)
        if error is not None:
            raise error
        return bool(state.done)

    def _finish(self, stream: OpenStream) -> None:
        """The done line arrived: fix the outcome, then drain to reuse the socket."""
        self.timer.idle()
        if self.probe is not None:
            self.probe.answered()
        seal = self.request.seal_on_done
        if (seal is None or seal()) and not self.scope.seal():
            self.scope.check()  # aborted just before: that outcome stands
        self.delivery.flush()
        self.timer.drain_until(time.monotonic() + DRAIN_TIMEOUT)
        try:
            stream.drain()
        finally:
            self.timer.drain_until(None)

    def _sleep(self, seconds: float) -> None:
        """Back off, but wake at once on cancel or deadline."""
        self.timer.idle()
        self.scope.aborted_event.wait(seconds)

    def _before_sleep(self, retry_state: tenacity.RetryCallState) -> None:
        error = cast(StreamError, failure(retry_state))  # only those are retried
        attempt, delay = retry_state.attempt_number, float(retry_state.upcoming_sleep)
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
        self.delivery.set_phase("retrying")
        self.delivery.emit(Retry(attempt, error, delay))
        if self.state.voids_on_retry:
            log.warning(
                "output was already delivered: resetting before attempt %d", attempt + 1
            )
            self.delivery.emit(Reset(attempt, error))
            self.state.reset()
            self.delivery.reset_partial()


def deadline_error(seconds: float | None) -> StreamTimeout:
    """The error of a whole call's deadline."""
    return StreamTimeout(
        f"deadline timeout after {seconds}s: the call's deadline passed",
        which="deadline",
    )
