"""Event-driven waits on state that one thread changes and others watch."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Changes:
    """Lets threads wait until a predicate on some state holds, without polling.

    The writer calls ``changed()`` after each change (cheap when nobody waits);
    ``wait_until`` re-checks its predicate after every change. The predicate
    runs with no lock of ours held, so it may take its time.
    """

    __slots__ = ("_cond", "_version", "_waiters")

    def __init__(self) -> None:
        # Guards _version and _waiters; waiters sleep on it.
        self._cond = threading.Condition(threading.Lock())
        self._version = 0
        self._waiters = 0

    def changed(self) -> None:
        """The state changed: wake whoever waits."""
        if self._waiters:
            with self._cond:
                self._version += 1
                self._cond.notify_all()

    def wait_until(
        self,
        check: Callable[[], bool],
        timeout: float | None,
        ended: Callable[[], bool],
    ) -> bool:
        """Wait until ``check()``; False on timeout, or if it ``ended()`` without."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._waiters += 1  # before the first check: no change can slip by
        try:
            while True:
                with self._cond:
                    seen = self._version
                if check():
                    return True
                if ended():
                    return bool(check())
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                with self._cond:
                    if self._version == seen and not ended():
                        self._cond.wait(remaining)
        finally:
            with self._cond:
                self._waiters -= 1
