"""Timeouts that know the stream's phase, fired by one timer thread per client.

A socket read timeout cannot tell "the model is still loading" (wait minutes)
from "the stream went silent" (give up sooner), and cannot bound a whole call
with its retries. ``StreamTimer`` knows the phase; the ``Watchdog`` thread
sleeps until the earliest moment any timer could expire and then aborts that
stream's ``AbortScope``: the same socket shutdown a cancel uses. The worker only
stores a float per network read; nothing polls.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ._abort import AbortScope
from ._errors import StreamTimeout, TimeoutKind

log = logging.getLogger("ollama_stream_sync")

Clock = Callable[[], float]


class StreamTimer:
    """The timeouts of one stream; the worker marks its phase, the watchdog reads it."""

    __slots__ = (
        "_attempt_start",
        "_flush_at",
        "_last",
        "_nudge",
        "deadline",
        "deadline_at",
        "first_token",
        "flush_fn",
        "read",
        "scope",
    )

    def __init__(
        self,
        scope: AbortScope,
        *,
        first_token: float | None,
        read: float | None,
        deadline: float | None,
        now: float,
        nudge: Callable[[], None] = lambda: None,
        flush: Callable[[], None] | None = None,
    ) -> None:
        self.scope = scope
        self._nudge = nudge
        self.flush_fn = flush
        self._flush_at: float | None = None
        self.first_token = first_token
        self.read = read
        self.deadline = deadline
        self.deadline_at = None if deadline is None else now + deadline
        # Written by the worker, read by the watchdog: single float stores, so
        # a stale read can only make the watchdog wake early and look again.
        self._attempt_start: float | None = None
        self._last: float | None = None

    @property
    def needed(self) -> bool:
        """Whether any timeout is set at all."""
        return not (
            self.first_token is None
            and self.read is None
            and self.deadline_at is None
            and self.flush_fn is None
        )

    def flush_at(self, when: float | None) -> None:
        """Ask for ``flush_fn`` at ``when`` (coalesced text during a pause), or not."""
        self._flush_at = when
        if when is not None:
            self._nudge()

    def attempt_started(self, now: float) -> None:
        """An attempt began: the first-token clock runs."""
        self._last = None
        self._attempt_start = now
        self._nudge()

    def touch(self, now: float) -> None:
        """Data arrived: the read clock restarts."""
        first = self._last is None
        self._last = now
        if first:  # the read timeout may be shorter than the first-token one
            self._nudge()

    def idle(self) -> None:
        """Between attempts (backoff): only the deadline runs."""
        self._attempt_start = None

    def due(self) -> tuple[float, str] | None:
        """The earliest expiry and its kind (a timeout, or "flush"), or None."""
        best: tuple[float, str] | None = None
        if self.deadline_at is not None:
            best = (self.deadline_at, "deadline")
        flush_at = self._flush_at
        if flush_at is not None and (best is None or flush_at < best[0]):
            best = (flush_at, "flush")
        start, last = self._attempt_start, self._last
        if start is not None:
            phase: tuple[float, str] | None = None
            if last is None and self.first_token is not None:
                phase = (start + self.first_token, "first_token")
            elif last is not None and self.read is not None:
                phase = (last + self.read, "read")
            if phase is not None and (best is None or phase[0] < best[0]):
                best = phase
        return best

    def fire(self, kind: str) -> None:
        """Flush, or abort the stream (deadline) or the current attempt (the others)."""
        if kind == "flush":
            self._flush_at = None
            if self.flush_fn is not None:
                self.flush_fn()
            return
        seconds = {
            "deadline": self.deadline,
            "first_token": self.first_token,
            "read": self.read,
        }.get(kind)
        what = {
            "deadline": "the call's deadline",
            "first_token": "no first chunk (model loading or queued)",
            "read": "the stream went silent",
        }.get(kind, kind)
        which: TimeoutKind = (
            "deadline"
            if kind == "deadline"
            else ("first_token" if kind == "first_token" else "read")
        )
        error = StreamTimeout(f"{kind} timeout after {seconds}s: {what}", which=which)
        log.warning("stream timed out: %s", error)
        if kind == "deadline":
            self.scope.abort(error)
        else:
            self._attempt_start = None
            self.scope.abort_attempt(error)


class Watchdog:
    """One daemon thread per client that fires the timers of its streams."""

    def __init__(self, name: str, clock: Clock = time.monotonic) -> None:
        self._name = name
        self._clock = clock
        # Guards _timers, _thread and _closed; the thread sleeps on it.
        self._cond = threading.Condition()
        self._timers: set[StreamTimer] = set()
        self._thread: threading.Thread | None = None
        self._closed = False

    def timer(
        self,
        scope: AbortScope,
        *,
        first_token: float | None,
        read: float | None,
        deadline: float | None,
        flush: Callable[[], None] | None = None,
    ) -> StreamTimer:
        """A timer for one stream, already watched if it has anything to do."""
        timer = StreamTimer(
            scope,
            first_token=first_token,
            read=read,
            deadline=deadline,
            now=self._clock(),
            nudge=self.nudge,
            flush=flush,
        )
        self.watch(timer)
        return timer

    def watch(self, timer: StreamTimer) -> None:
        """Start watching ``timer`` (its phase may change at any time)."""
        if not timer.needed:
            return
        with self._cond:
            if self._closed:
                return
            self._timers.add(timer)
            if self._thread is None:
                # Daemon: it only sleeps and aborts. It ends when it has no
                # timers left; close() stops and joins it.
                self._thread = threading.Thread(
                    target=self._run, name=self._name, daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def nudge(self) -> None:
        """A timer's phase changed in a way that may bring its expiry closer."""
        with self._cond:
            self._cond.notify()

    def unwatch(self, timer: StreamTimer) -> None:
        """Stop watching ``timer``."""
        with self._cond:
            self._timers.discard(timer)
            if not self._timers:
                self._cond.notify()  # let the thread see it may end

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread and wait for it."""
        with self._cond:
            self._closed = True
            self._timers.clear()
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                if not self._timers:
                    # Nothing to watch: end; the next watch() starts a new thread,
                    # so a client nobody closes holds no thread while idle.
                    self._thread = None
                    return
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
                    # Fire outside the lock: a flush takes the stream's own lock,
                    # and the worker nudges us while holding it.
                    self._cond.release()
                    try:
                        for timer, kind in due_now:
                            timer.fire(kind)
                    finally:
                        self._cond.acquire()
                    continue
                self._cond.wait(None if wake is None else max(0.0, wake - now))
