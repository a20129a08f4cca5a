"""Batch calls: many requests behind one handle, a bounded number at a time.

``embed`` sends its batches and ``map_chat`` its chats as child streams started
through the engine like any other (so each has cancel, timeouts, retries,
routing and ``max_in_flight``). The batch's own handle runs ``run_items`` on its
worker thread: it starts at most ``limit`` children at once, in order, hears
each one end, and delivers the batch's callbacks from that one thread.
``cancel()`` stops every child it started before returning, and starts no more.
"""

from __future__ import annotations

import concurrent.futures
import functools
import inspect
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from . import _options
from ._engine import Engine
from ._errors import StreamError
from ._events import ItemError, ItemResult
from ._handle import BaseHandle, StreamHandle
from ._observe import CallInfo
from ._options import CallOptions
from ._request import chat_body, generate_body
from ._result import BatchProgress, ChatResult
from ._run import StreamContext
from ._state import Watched
from ._stream import blocking
from ._validate import positive_int

R = TypeVar("R")
Child = BaseHandle[Any, Any]
Post = Callable[[Callable[[], object]], None]
"""Runs a function on the batch's worker thread, soon (from any thread)."""
Outcome = ChatResult | StreamError


class BatchState(Watched[BatchProgress]):
    """How far a batch call is, and the children it started (by index)."""

    def __init__(self, total: int, cancelled: Callable[[], Any]) -> None:
        super().__init__()
        self.total, self.done = total, 0
        self.children: dict[int, Child] = {}
        self._cancelled = cancelled
        # Held while a child starts and while a cancel lands: a child starts
        # before the cancel (which then stops it) or not at all.
        self.starting = threading.Lock()

    def snapshot(self) -> BatchProgress:
        """The latest ``BatchProgress``."""
        return BatchProgress(self.done, self.total)

    def cancelled_result(self) -> Any:
        """What the call produced before a cancel stopped it."""
        return self._cancelled()

    def advance(self, count: int) -> BatchProgress:
        """``count`` more are done (the batch's worker thread only)."""
        self.done += count
        self.notify()
        return self.snapshot()


class BatchHandle(BaseHandle[R, BatchProgress]):
    """A batch call (``embed``, ``map_chat``) running on its own worker thread.

    A ``concurrent.futures.Future``: ``result()`` waits for the whole batch,
    ``snapshot()`` is a ``BatchProgress``, ``cancel()`` stops every request
    running at once, from any thread, and starts no more.

    Example::

        handle = client.start_embed("all-minilm", texts, on_progress=show)
        handle.cancel()                     # e.g. from a Stop button
        print(handle.result().cancelled)    # True; the leading vectors are kept
    """

    _stream_state: BatchState

    def cancel(self) -> bool:
        """Stop the batch now, in any phase; safe from any thread.

        Returns:
            True if it is (or already was) cancelled; False if it had ended.
        """
        state = self._stream_state
        with state.starting:
            cancelled = super().cancel()
            running = list(state.children.values()) if cancelled else []
        for child in running:
            child.cancel()
        return cancelled


def run_items(
    ctx: StreamContext,
    count: int,
    limit: int,
    start: Callable[[int, Post], Child],
    ended: Callable[[int, Child], None],
) -> None:
    """Run children ``0..count-1``, at most ``limit`` at once, on this thread's watch.

    ``start(index, post)`` starts one; ``ended(index, child)`` runs here as each
    ends, and may raise to stop the batch. On any way out, the children still
    running are cancelled and waited for.
    """
    state, scope = ctx.state, ctx.scope
    inbox: deque[Callable[[], object]] = deque()

    def post(work: Callable[[], object]) -> None:
        inbox.append(work)
        scope.notify()  # wakes the wait below, as an abort does

    def finish(index: int, child: Child) -> None:
        running.discard(index)
        ended(index, child)

    def heard(index: int, child: Child) -> None:  # on the child's thread
        post(functools.partial(finish, index, child))

    running: set[int] = set()
    following = 0
    try:
        while following < count or running:
            while following < count and len(running) < limit:
                with state.starting:
                    scope.check()  # a cancel before the start wins
                    child = state.children[following] = start(following, post)
                running.add(following)
                child.add_done_callback(functools.partial(heard, following))
                following += 1
            scope.wait_until(lambda: bool(inbox), None)
            scope.check()
            while inbox:
                inbox.popleft()()
    finally:
        stopping = [state.children[index] for index in running]
        for child in stopping:
            child.cancel()
        concurrent.futures.wait(stopping)


def outcome(child: Child) -> Any:
    """A child's result, or its error as a value."""
    try:
        return child.result()
    except StreamError as exc:
        return exc


class MapCalls:
    """``map_chat`` and ``map_generate`` (``StreamingClient`` inherits them)."""

    _engine: Engine
    start_chat: Callable[..., StreamHandle]
    start_generate: Callable[..., StreamHandle]

    def _map(
        self,
        operation: str,
        start: Callable[..., StreamHandle],
        body: Callable[..., Any],
        requests: Sequence[Mapping[str, Any]],
        *,
        limit: int,
        on_result: Callable[[int, ChatResult], object] | None,
        on_error: Callable[[int, StreamError], object] | None,
        stop_on_error: bool,
    ) -> BatchHandle[list[ChatResult | StreamError]]:
        positive_int("max_concurrency", limit)
        for name, fn in (("on_result", on_result), ("on_error", on_error)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable or None")
        if not isinstance(stop_on_error, bool):
            raise TypeError("stop_on_error must be True or False")
        signature = inspect.signature(start)
        for request in requests:  # every mistake raised here, before any starts
            if not isinstance(request, Mapping):
                raise TypeError(
                    f"each request must be a dict of {operation}'s arguments"
                )
            bound = signature.bind(**request)
            bound.apply_defaults()
            _options.check(bound.arguments.pop("kwargs"), CallOptions)
            body(**bound.arguments)
        calls = [dict(request) for request in requests]
        results: list[Outcome | None] = [None] * len(calls)

        def cancelled() -> list[Outcome]:
            return [
                result
                if result is not None
                else outcome(state.children[index])
                if index in state.children
                else ChatResult(model=str(calls[index].get("model")), cancelled=True)
                for index, result in enumerate(results)
            ]

        state = BatchState(len(calls), cancelled)

        def job(ctx: StreamContext) -> list[Outcome]:
            def ended(index: int, child: Child) -> None:
                result = results[index] = outcome(child)
                state.advance(1)
                if isinstance(result, StreamError):
                    ctx.delivery.emit(ItemError(index, result))
                    if stop_on_error:
                        raise result
                else:
                    ctx.delivery.emit(ItemResult(index, result))

            ctx.delivery.set_phase("waiting")
            run_items(ctx, len(calls), limit, lambda i, _: start(**calls[i]), ended)
            return cancelled()  # nothing was: every item has its outcome

        return self._engine.start(
            BatchHandle,
            job,
            {"on_result": on_result, "on_item_error": on_error},
            state=state,
            call=CallInfo(f"map_{operation}", None, {"requests": len(calls)}),
        )

    def start_map_chat(
        self,
        requests: Sequence[Mapping[str, Any]],
        *,
        max_concurrency: int = 4,
        on_result: Callable[[int, ChatResult], object] | None = None,
        on_error: Callable[[int, StreamError], object] | None = None,
        stop_on_error: bool = False,
    ) -> BatchHandle[list[ChatResult | StreamError]]:
        """Start many chats, ``max_concurrency`` at a time; return a ``BatchHandle``.

        Each request is a dict of ``start_chat``'s arguments (its own callbacks
        and settings included); every one is checked here, before any starts.
        ``result()`` is a list in request order: each a ``ChatResult``, or the
        ``StreamError`` that request ended with (raised instead, after the
        others are cancelled, with ``stop_on_error``). ``cancel()`` stops the
        running chats at once and starts no more: their partial results and,
        for requests never started, empty cancelled ones fill the list.

        Args:
            requests: the chats, e.g. ``[{"model": "qwen3", "messages": [...]}]``.
            max_concurrency: how many run at once.
            on_result: ``(index, result)`` as each chat ends (cancelled ones too).
            on_error: ``(index, error)`` as each chat fails.
            stop_on_error: stop everything at the first failure.

        ``on_result`` and ``on_error`` run one at a time, in the order the chats
        end, through the client's dispatcher.

        Raises:
            TypeError, ValueError: a request cannot form a chat.
        """
        return self._map(
            "chat",
            self.start_chat,
            chat_body,
            requests,
            limit=max_concurrency,
            on_result=on_result,
            on_error=on_error,
            stop_on_error=stop_on_error,
        )

    map_chat = blocking(
        start_map_chat,
        "Run many chats, ``max_concurrency`` at a time, and block until all end.\n\n"
        "The arguments of ``start_map_chat``; returns the list in request order.",
    )

    def start_map_generate(
        self,
        requests: Sequence[Mapping[str, Any]],
        *,
        max_concurrency: int = 4,
        on_result: Callable[[int, ChatResult], object] | None = None,
        on_error: Callable[[int, StreamError], object] | None = None,
        stop_on_error: bool = False,
    ) -> BatchHandle[list[ChatResult | StreamError]]:
        """``start_map_chat`` for ``/api/generate``: each request is a dict of
        ``start_generate``'s arguments."""
        return self._map(
            "generate",
            self.start_generate,
            generate_body,
            requests,
            limit=max_concurrency,
            on_result=on_result,
            on_error=on_error,
            stop_on_error=stop_on_error,
        )

    map_generate = blocking(
        start_map_generate,
        "Run many generates, ``max_concurrency`` at a time; block for the list.",
    )
