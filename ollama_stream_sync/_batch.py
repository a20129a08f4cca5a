"""Batch calls (``embed``, ``map_chat``): many child streams behind one handle.

Each request is a child started through the engine like any stream (cancel,
timeouts, retries, hosts, ``max_in_flight``); the batch's worker runs
``run_items``, which starts them in order, a few at a time, and hears each end.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import inspect
import itertools
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import ollama

from . import _options
from ._cancel import Cancelled
from ._context import Window
from ._dispatch import InlineDispatcher
from ._engine import Engine
from ._errors import ProtocolError, ServerError, StreamError
from ._events import PhaseName, Retry
from ._handle import BaseHandle, StreamHandle
from ._observe import CallInfo
from ._options import CallOptions, EmbedOptions, MapOptions, Unpack
from ._request import (
    chat_body,
    check_model,
    drop_none,
    encode_body,
    encode_options,
    generate_body,
)
from ._result import BatchProgress, ChatResult, EmbedResult
from ._run import StreamContext, run_stream
from ._state import Watched
from ._stream import blocking
from ._validate import positive_int

R = TypeVar("R")
Child = BaseHandle[Any, Any]
Post = Callable[[Callable[[], object]], None]
"""Runs a function on the batch's worker thread, soon (from any thread)."""
Outcomes = list[ChatResult | StreamError]
LINE_BYTES_PER_INPUT = 256 * 1024
"""The answer's size allowed per embed input (8192 values take ~180 KB)."""


class BatchState(Watched[BatchProgress]):
    """How far a batch call is, and the children it started, by index."""

    def __init__(self, total: int, cancelled: Callable[[], Any]) -> None:
        super().__init__()
        self.total, self.done, self.cancelled_result = total, 0, cancelled
        self.children: dict[int, Child] = {}
        # Held while a child starts and while a cancel lands: a child starts
        # before the cancel (which then stops it) or not at all.
        self.starting = threading.Lock()

    def snapshot(self) -> BatchProgress:
        """The latest ``BatchProgress``."""
        return BatchProgress(self.done, self.total)

    def advance(self, count: int) -> BatchProgress:
        """``count`` more are done (on the batch's worker thread)."""
        self.done += count
        self.notify()
        return self.snapshot()


class BatchHandle(BaseHandle[R, BatchProgress]):
    """A batch call (``embed``, ``map_chat``) on its own worker thread; a ``Future``.

    ``snapshot()`` is a ``BatchProgress``; ``cancel()`` stops every request
    under way before it returns, from any thread, and starts no other.

    Example::

        handle = client.start_embed("all-minilm", texts, on_progress=show)
        handle.cancel()                     # e.g. from a Stop button
        print(handle.result().cancelled)    # True; the leading vectors are kept
    """

    _stream_state: BatchState

    def cancel(self) -> bool:
        """Stop the batch now, in any phase; True if it is (or was) cancelled."""
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
    """Run children ``0..count-1``, at most ``limit`` at once; ``ended(index,
    child)`` runs here as each ends, and may raise to stop the rest. On any way
    out, the children still running are cancelled and waited for."""
    state, scope = ctx.state, ctx.scope
    inbox: deque[Callable[[], object]] = deque()
    running: set[int] = set()

    def post(work: Callable[[], object]) -> None:
        inbox.append(work)
        scope.notify()  # wakes the wait below, as an abort does

    def finish(index: int, child: Child) -> None:
        running.discard(index)
        ended(index, child)

    def heard(index: int, child: Child) -> None:  # on the child's thread
        post(functools.partial(finish, index, child))

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


class _Answer(Watched[EmbedResult]):
    """One embed batch: done once its one JSON object came (nothing is shown
    before, so a retry never repeats output)."""

    voids_on_retry = has_output = done = False

    def __init__(self, size: int, compact: bool) -> None:
        super().__init__()
        self.size, self.compact, self.result = size, compact, EmbedResult()

    def feed(
        self, chunks: list[dict[str, Any]], now: float
    ) -> tuple[list[Any], ProtocolError | None]:
        """Take the answer; one of the wrong shape is a ``ProtocolError``."""
        answer, count = chunks[0], chunks[0].get("prompt_eval_count")
        try:
            vectors = answer["embeddings"]
            if type(vectors) is not list or len(vectors) != self.size:
                raise TypeError(f"{self.size} vectors expected")
            kept = [array("f", v) for v in vectors] if self.compact else vectors
        except (KeyError, TypeError) as exc:
            return [], ProtocolError(f"/api/embed answered ({exc}): {answer!r:.200}")
        count = count if type(count) is int else None
        self.result = EmbedResult(str(answer.get("model") or ""), kept, count)
        self.done = True
        return [], None

    def snapshot(self) -> EmbedResult:
        return self.result

    def cancelled_result(self) -> EmbedResult:
        return dataclasses.replace(self.result, cancelled=True)

    def start(self, now: float) -> None: ...  # nothing to time

    def reset(self) -> None: ...  # nothing to forget


def _relay_phase(delivery: Any, name: PhaseName) -> None:
    """A batch's phase, as the whole call's (its own end is not the call's)."""
    if name in ("queued", "waiting", "loading", "retrying"):
        delivery.set_phase(name)


class BatchCalls:
    """``embed`` and ``map_chat`` (``StreamingClient`` inherits them)."""

    _engine: Engine
    start_chat: Callable[..., StreamHandle]
    start_generate: Callable[..., StreamHandle]

    @_options.documented(EmbedOptions)
    def start_embed(  # noqa: PLR0917  # ollama.Client.embed's positional order
        self,
        model: str,
        input: str | Sequence[str],
        truncate: bool | None = None,
        options: Mapping[str, Any] | ollama.Options | None = None,
        keep_alive: float | str | None = None,
        dimensions: int | None = None,
        *,
        batch_size: int = 64,
        max_concurrency: int = 1,
        compact: bool = False,
        **settings: Unpack[EmbedOptions],
    ) -> BatchHandle[EmbedResult]:
        """Start embedding ``input`` on a worker thread; return its ``BatchHandle``.

        The arguments of ``ollama.Client.embed``, and:

        Args:
            input: a text or a sequence of texts (an empty text embeds nothing).
            batch_size: texts per request.
            max_concurrency: requests at once (by default one after another).
            compact: each vector an ``array.array("f")``, 4 bytes a value.
            **settings: callbacks and settings (below); ``deadline`` bounds the
                whole call.

        ``result()`` is an ``EmbedResult``, the vectors in input order. A batch
        that fails ends the call (the others are cancelled) with its error,
        which names the batch and its inputs; ``.partial`` keeps the leading
        vectors. ``truncate=False``: an input too long is ``ContextLengthExceeded``.
        """
        check_model(model)
        texts = ([input] if input else []) if isinstance(input, str) else list(input)
        if not all(isinstance(text, str) for text in texts):
            raise TypeError("input must be a string or a sequence of strings")
        positive_int("batch_size", batch_size)
        positive_int("max_concurrency", max_concurrency)
        if dimensions is not None:
            positive_int("dimensions", dimensions)
        _options.check(settings, EmbedOptions)
        engine, started = self._engine, time.monotonic()
        body = drop_none(
            {"model": model, "truncate": truncate, "options": encode_options(options)}
            | {"keep_alive": keep_alive, "dimensions": dimensions}
        )
        encode_body(body)  # what JSON cannot send fails here
        call = CallInfo("embed", model, body)
        spans = [
            range(i, min(i + batch_size, len(texts)))
            for i in range(0, len(texts), batch_size)
        ] or [range(0)]  # no text: one request all the same, which loads the model
        deadline = engine.option(settings, "deadline")
        deadline_at = None if deadline is None else started + deadline
        parts: dict[range, EmbedResult] = {}

        def leading(*, cancelled: bool = False) -> EmbedResult:
            got = [parts[i] for i in itertools.takewhile(parts.__contains__, spans)]
            counts = [part.prompt_eval_count for part in got]
            return EmbedResult(
                (got[0].model if got else "") or model,
                [vector for part in got for vector in part.embeddings],
                None if None in counts or not got else sum(filter(None, counts)),
                time.monotonic() - started,
                cancelled,
            )

        def job(ctx: StreamContext) -> EmbedResult:
            delivery = ctx.delivery

            def start(index: int, post: Post) -> Child:
                span = spans[index]
                payload = encode_body(body | {"input": texts[span.start : span.stop]})
                request = engine.request("/api/embed", payload, settings, model=model)
                limit = max(request.max_line_bytes, LINE_BYTES_PER_INPUT * len(span))
                request = dataclasses.replace(
                    request, max_line_bytes=limit, deadline_at=deadline_at
                )
                forward = {  # a batch's retries and phases are the call's
                    "on_retry": lambda *a: post(lambda: delivery.emit(Retry(*a))),
                    "on_phase": lambda p: post(lambda: _relay_phase(delivery, p)),
                    "dispatcher": InlineDispatcher(),
                }
                run = functools.partial(run_stream, request)
                answer = _Answer(len(span), compact)
                return engine.start(BaseHandle, run, forward, state=answer, call=call)

            def ended(index: int, child: Child) -> None:
                part, span = outcome(child), spans[index]
                if isinstance(part, StreamError):  # Ollama does not say which input
                    where = f"batch {index + 1} of {len(spans)} (inputs "
                    where += f"{span.start} to {span.stop - 1}): "
                    part.message = where + part.message
                    if isinstance(part, ServerError):
                        part.server_message = where + part.server_message
                    part.partial = leading()
                    raise part
                if part.cancelled:  # stopped from outside (the client closed)
                    ctx.scope.abort(Cancelled("a batch was cancelled"))
                    ctx.scope.check()
                parts[span] = part
                delivery.emit(state.advance(len(span)))

            delivery.set_phase("connecting")
            run_items(ctx, len(spans), max_concurrency, start, ended)
            return leading()

        state = BatchState(len(texts), lambda: leading(cancelled=True))
        return engine.start(BatchHandle, job, settings, state=state, call=call)

    embed = blocking(
        start_embed, "Embed ``input`` and block for the ``EmbedResult`` (in order)."
    )

    def _map(
        self, chat: bool, requests: Sequence[Mapping[str, Any]], options: MapOptions
    ) -> BatchHandle[Outcomes]:
        _options.check(options, MapOptions)
        positive_int("max_concurrency", limit := options.get("max_concurrency", 4))
        start = self.start_chat if chat else self.start_generate
        signature = inspect.signature(start)
        for request in requests:  # every mistake raised here, before any starts
            bound = signature.bind(**request)
            bound.apply_defaults()
            _options.check(bound.arguments.pop("kwargs"), CallOptions)
            if chat:  # a chat's context= is the window's, not the body's
                arguments = bound.arguments
                Window(
                    arguments["model"],
                    arguments.pop("context"),
                    truncate=arguments["truncate"],
                )
            (chat_body if chat else generate_body)(**bound.arguments)
        calls = [dict(request) for request in requests]

        def outcomes() -> Outcomes:  # a cancel's too: never started, empty
            return [
                outcome(state.children[i])
                if i in state.children
                else ChatResult(cancelled=True)
                for i in range(len(calls))
            ]

        def start_one(index: int, _: Post) -> Child:
            call = calls[index]
            for key, mine in ("on_done", "on_result"), ("on_error", "on_error"):
                if (fn := options.get(mine)) is not None:  # after the request's own
                    own = call.get(key) or (lambda _: None)
                    call[key] = lambda x, own=own, fn=fn: (own(x), fn(index, x))
            return start(**call)

        def ended(index: int, child: Child) -> None:
            state.advance(1)
            error = outcome(child)
            if options.get("stop_on_error") and isinstance(error, StreamError):
                raise error

        def job(ctx: StreamContext) -> Outcomes:
            ctx.delivery.set_phase("waiting")
            run_items(ctx, len(calls), limit, start_one, ended)
            return outcomes()

        state = BatchState(len(calls), outcomes)
        call = CallInfo("map", None, {"requests": len(calls)})
        return self._engine.start(BatchHandle, job, {}, state=state, call=call)

    @_options.documented(MapOptions)
    def start_map_chat(
        self, requests: Sequence[Mapping[str, Any]], **options: Unpack[MapOptions]
    ) -> BatchHandle[list[ChatResult | StreamError]]:
        """Start many chats, ``max_concurrency`` at a time; return a ``BatchHandle``.

        Each request is a dict of ``start_chat``'s arguments (its own callbacks
        and settings too), all checked here before any starts. ``result()`` is
        a list in request order: each a ``ChatResult``, or the ``StreamError``
        it ended with (raised instead, once the others are cancelled, with
        ``stop_on_error``). ``cancel()`` stops every chat running and starts no
        more (one never started: an empty cancelled ``ChatResult``).
        """
        return self._map(True, requests, options)

    map_chat = blocking(start_map_chat, "Run many chats; block for their list.")

    @_options.documented(MapOptions)
    def start_map_generate(
        self, requests: Sequence[Mapping[str, Any]], **options: Unpack[MapOptions]
    ) -> BatchHandle[list[ChatResult | StreamError]]:
        """``start_map_chat`` for ``/api/generate`` (``start_generate``'s arguments)."""
        return self._map(False, requests, options)

    map_generate = blocking(start_map_generate, "Run many generates; block for them.")
