"""``max_in_flight``: at most so many streams of one client at once, the rest queued.

A stream without a slot waits in FIFO order on its own ``AbortScope`` (a cancel or
its deadline wakes it at once); a freed slot goes straight to the first waiter.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from ._cancel import AbortScope


class Gate:
    """The slots of one client's streams."""

    def __init__(self, limit: int) -> None:
        self.limit, self._taken = limit, 0
        self._queue: deque[tuple[AbortScope, list[bool]]] = deque()
        self._lock = threading.Lock()  # guards _taken and _queue

    def enter(self, scope: AbortScope, queued: Callable[[], None]) -> None:
        """Take a slot; without one, call ``queued()`` and wait for it.

        Raises:
            The abort's reason (no slot is kept), or what ``queued()`` raised.
        """
        with self._lock:
            if self._taken < self.limit:
                self._taken += 1
                return
            ticket = (scope, [False])  # granted, once a slot is handed over
            self._queue.append(ticket)
        try:
            queued()
            scope.wait_until(lambda: ticket[1][0], None)
            scope.check()
        except BaseException:
            with self._lock:
                granted = ticket[1][0]
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
            scope, granted = self._queue.popleft()
            granted[0] = True
        scope.notify()
