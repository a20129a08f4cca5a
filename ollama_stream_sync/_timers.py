"""Timeouts that know the stream's phase, fired by one timer thread per client.

A socket timeout cannot tell a model loading (wait minutes) from a silent stream,
nor bound a whole call with its retries. ``StreamTimer`` knows the phase; the
``Watchdog`` thread sleeps until the earliest expiry and aborts that stream's
``AbortScope``, as a cancel does. The read clock runs only while the worker waits
on the socket (a slow callback is not a silent server); the drain bound closes a
connection whose body never ends after the done line. Nothing polls.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import cast

from ._cancel import AbortScope
from ._errors import StreamTimeout, TimeoutKind

log = logging.getLogger("ollama_stream_sync")

Clock = Callable[[], float]

IDLE_EXIT = 1.0
"""Seconds the idle timer thread lingers: a burst reuses it, an idle client has none."""

_WHAT = {
    "deadline": "the call's deadline passed",
    "first_token": "no output yet (the model loading, or the prompt being read)",
    "read": "the stream went silent",
}


class StreamTimer:
    """The timeouts of one stream; the worker marks its phase, the watchdog reads it."""

    __slots__ = (
        "_attempt_start",
        "_busy",
        "_drain_at",
        "_flush_at",
        "_last",
        "_nudge",
        "deadline",
        "deadline_at",
        "first_token",
        "flush_fn",
        "read",
        "scope",
        "url",
    )

    def __init__(
        self,
        scope: AbortScope,
        *,
        first_token: float | None,
        read: float | None,
        deadline: float | None,
        deadline_at: float | None = None,
        now: float,
        nudge: Callable[[float], None] = lambda when: None,
        flush: Callable[[], None] | None = None,
    ) -> None:
        self.scope = scope
        self._nudge = nudge
        self.flush_fn = flush
        self._flush_at: float | None = None
        self._drain_at: float | None = None
        self.first_token = first_token
        self.read = read
        self.deadline = deadline
        if deadline_at is None and deadline is not None:
            deadline_at = now + deadline
        self.deadline_at = deadline_at
        self.url: str | None = None
        # Written by the worker, read by the watchdog: single stores, read in an
        # order where a stale read only wakes the watchdog early.
        self._attempt_start: float | None = None
        self._last: float | None = None
        self._busy = False

    def flush_at(self, when: float | None) -> None:
        """Ask for ``flush_fn`` at ``when`` (coalesced text during a pause), or not."""
        self._flush_at = when
        if when is not None:
            self._nudge(when)

    def drain_until(self, when: float | None) -> None:
        """Shut the connection down at ``when`` if the body has not ended by then."""
        self._drain_at = when
        if when is not None:
            self._nudge(when)

    def attempt_started(self, now: float) -> None:
        """An attempt began: the first-token clock runs."""
        self._busy = False
        self._last = None
        self._attempt_start = now
        if self.first_token is not None:
            self._nudge(now + self.first_token)

    def arrived(self) -> None:
        """Data arrived: the read clock stops while the worker processes it."""
        self._busy = True

    def output_arrived(self, now: float) -> None:
        """A read brought output: the first-token phase ends before its callbacks."""
        if self._last is None:
            self._last = now

    def waiting(self, now: float, output: bool) -> None:
        """The worker waits on the socket again; after output, the read clock runs."""
        if output:
            self._last = now
        self._busy = False
        if output and self.read is not None:
            # Every time, after _busy is cleared: while the worker was busy the
            # watchdog may have gone to sleep with no wake-up time. Cheap.
            self._nudge(now + self.read)

    def idle(self) -> None:
        """Between attempts (a backoff) or after the answer: only the deadline runs."""
        self._attempt_start = None

    def due(self) -> tuple[float, str] | None:
        """The earliest expiry and its kind (a timeout, "flush" or "drain"), or None."""
        busy = self._busy  # read before _last: see __init__
        start, last = self._attempt_start, self._last
        found = [
            (self.deadline_at, "deadline"),
            (self._flush_at, "flush"),
            (self._drain_at, "drain"),
        ]
        if start is not None and last is None and self.first_token is not None:
            found.append((start + self.first_token, "first_token"))
        elif start is not None and last is not None and not busy:
            found.append((None if self.read is None else last + self.read, "read"))
        due = [(when, kind) for when, kind in found if when is not None]
        return min(due, key=lambda item: item[0], default=None)

    def fire(self, kind: str) -> None:
        """Flush, or abort the stream (deadline) or the current attempt (the others)."""
        if kind == "flush":
            self._flush_at = None
            if self.flush_fn is not None:
                self.flush_fn()
            return
        if kind == "drain":
            self._drain_at = None
            self.scope.interrupt()
            return
        error = StreamTimeout(
            f"{kind} timeout after {getattr(self, kind)}s: {_WHAT[kind]}",
            which=cast(TimeoutKind, kind),  # deadline, first_token or read
            url=self.url,
        )
        if kind == "deadline":
            fired = self.scope.abort(error)
        else:
            self._attempt_start = None
            fired = self.scope.abort_attempt(error)
        if fired:
            log.warning("stream timed out: %s", error)


class Watchdog:
    """One daemon thread per client that fires the timers of its streams."""

    def __init__(self, name: str, clock: Clock = time.monotonic) -> None:
        self._name = name
        self._clock = clock
        self.after_fork()

    def after_fork(self) -> None:
        """A fresh state (in a forked child the thread is gone, no timer is ours)."""
        # Guards _timers, _thread, _closed and _wake_at; the thread sleeps on it.
        self._cond = threading.Condition()
        self._timers: set[StreamTimer] = set()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._wake_at: float | None = None

    def timer(
        self,
        scope: AbortScope,
        *,
        first_token: float | None,
        read: float | None,
        deadline: float | None,
        deadline_at: float | None = None,
        flush: Callable[[], None] | None = None,
    ) -> StreamTimer:
        """A timer for one stream, already watched if it has anything to do."""
        timer = StreamTimer(
            scope,
            first_token=first_token,
            read=read,
            deadline=deadline,
            deadline_at=deadline_at,
            now=self._clock(),
            nudge=self.nudge,
            flush=flush,
        )
        self.watch(timer)
        return timer

    def watch(self, timer: StreamTimer) -> None:
        """Start watching ``timer`` (its phase may change at any time)."""
        with self._cond:
            if self._closed:
                return
            self._timers.add(timer)
            if self._thread is None:
                # Daemon: it only sleeps and aborts. It ends after IDLE_EXIT
                # with nothing to watch; close() stops and joins it.
                self._thread = threading.Thread(
                    target=self._run, name=self._name, daemon=True
                )
                self._thread.start()
                return
            due = timer.due()
            if due is not None:
                self._nudge_locked(due[0])

    def nudge(self, when: float) -> None:
        """A timer may now expire at ``when``: wake the thread if that is sooner."""
        wake_at = self._wake_at
        if wake_at is not None and wake_at <= when:
            return  # it will wake in time and look again
        with self._cond:
            self._nudge_locked(when)

    def _nudge_locked(self, when: float) -> None:
        wake_at = self._wake_at
        if wake_at is None or when < wake_at:
            self._wake_at = when
            self._cond.notify()

    def unwatch(self, timer: StreamTimer) -> None:
        """Stop watching ``timer``."""
        with self._cond:
            self._timers.discard(timer)
            if not self._timers:
                self._cond.notify()  # re-plan: the idle countdown starts now

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread and wait for it (unless called on it)."""
        with self._cond:
            self._closed = True
            self._timers.clear()
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        with self._cond:
            idle_since: float | None = None
            while not self._closed:
                now = self._clock()
                wake: float | None = None
                due_now: list[tuple[StreamTimer, str]] = []
                for timer in list(self._timers):
                    due = timer.due()
                    if due is None:
                        continue
                    when, kind = due
                    if when <= now:
                        due_now.append((timer, kind))
                        if kind == "deadline":
                            self._timers.discard(timer)
                    else:
                        wake = when if wake is None else min(wake, when)
                if due_now:
                    # Fire outside the lock: a flush takes the stream's own
                    # lock, and the worker nudges us while holding it.
                    self._cond.release()
                    try:
                        for timer, kind in due_now:
                            _fire(timer, kind)
                    finally:
                        self._cond.acquire()
                    continue
                if not self._timers:
                    idle_since = now if idle_since is None else idle_since
                    if now - idle_since >= IDLE_EXIT:
                        break
                    wake = idle_since + IDLE_EXIT
                else:
                    idle_since = None
                self._wake_at = wake
                self._cond.wait(None if wake is None else max(0.0, wake - now))
                self._wake_at = None
            self._thread = None
            self._wake_at = None


def _fire(timer: StreamTimer, kind: str) -> None:
    # One stream's failure (a dispatcher that raises during a flush) must never
    # take the timers of every other stream down with this thread.
    try:
        timer.fire(kind)
    except Exception:
        log.exception("timer of a stream failed (%s); other streams go on", kind)
