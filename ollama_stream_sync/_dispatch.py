"""Where user callbacks run: a small protocol and the default, inline dispatcher."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable


@runtime_checkable
class Dispatcher(Protocol):
    """Decides on which thread a stream's callbacks run.

    ``dispatch(fn)`` must run ``fn()`` exactly once, and the calls for one
    stream in the order they were dispatched, never two at once.
    """

    def dispatch(self, fn: Callable[[], object]) -> None:
        """Arrange for ``fn()`` to run."""
        ...


class InlineDispatcher:
    """Runs callbacks at once on the stream's worker thread (the default).

    The fastest choice, and right for scripts and servers. A callback that
    raises stops the stream with ``CallbackError``. GUI code needs a dispatcher
    that runs callbacks on the GUI thread instead.

    Example::

        client = StreamingClient(dispatcher=InlineDispatcher())
    """

    def dispatch(self, fn: Callable[[], object]) -> None:
        """Run ``fn()`` now, on the calling (worker) thread."""
        fn()

    def __repr__(self) -> str:
        return "InlineDispatcher()"
