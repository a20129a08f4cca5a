"""``max_in_flight``: at most so many streams of one client at once, the rest queued.

A stream takes a slot before its first attempt and gives it back when it ends.
Without a free slot it waits in FIFO order, on its own ``AbortScope``: a cancel
or its deadline wakes it at once (nothing polls), and a slot freed is handed
straight to the first waiter, so no later stream overtakes it.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from ._cancel import AbortScope


class _Ticket:
    __slots__ = ("granted", "scope")

    def __init__(self, scope: AbortScope) -> None:
        self.scope, self.granted = scope, False


class Gate:
    """The slots of one client's streams."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        # Guards _taken and _queue: streams enter and leave on many threads.
        self._lock = threading.Lock()
        self._taken = 0
        self._queue: deque[_Ticket] = deque()

    def enter(self, scope: AbortScope, queued: Callable[[], None]) -> None:
        """Take a slot; without one, call ``queued()`` and wait for it.

        Raises:
            The abort's reason: ``scope`` was aborted first (no slot is kept);
                whatever ``queued()`` raised.
        """
        with self._lock:
            if self._taken < self.limit:
                self._taken += 1
                return
            ticket = _Ticket(scope)
            self._queue.append(ticket)
        try:
            queued()
            scope.wait_until(lambda: ticket.granted, None)
            scope.check()
        except BaseException:
            with self._lock:
                granted = ticket.granted
                if not granted:
                    self._queue.remove(ticket)
            if granted:
                self.leave()  # stopped as the slot came: hand it on
            raise

    def leave(self) -> None:
        """Give the slot back: to the first waiter, if there is one."""
        with self._lock:
            if not self._queue:
                self._taken -= 1
                return
            ticket = self._queue.popleft()
            ticket.granted = True
        ticket.scope.notify()
