"""``embed``: ``/api/embed`` in batches, with the guarantees of a chat.

The inputs are cut into batches of ``batch_size``; each batch is one request,
run as a child stream of the call's ``BatchHandle`` (see ``_batch``), one after
another or ``max_concurrency`` at a time, and the vectors are put back in
input order. Ollama answers a batch as one JSON object, so a batch is retried
only if it failed before its answer, never after.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import time
from array import array
from collections.abc import Mapping, Sequence
from typing import Any

import ollama

from . import _options
from ._batch import BatchHandle, BatchState, Child, Post, run_items
from ._cancel import Cancelled
from ._dispatch import InlineDispatcher
from ._engine import Engine
from ._errors import ProtocolError, ServerError, StreamError
from ._events import PhaseName, Retry
from ._handle import BaseHandle
from ._observe import CallInfo
from ._options import EmbedOptions, Unpack
from ._request import check_model, drop_none, encode_body, encode_options
from ._result import EmbedResult
from ._run import StreamContext, run_stream
from ._state import Watched
from ._stream import blocking
from ._validate import positive_int

DEFAULT_BATCH_SIZE = 64
"""Inputs per request: large enough to keep the server busy, small enough that
a cancel or a failed batch loses little."""
LINE_BYTES_PER_INPUT = 256 * 1024
"""The answer's size allowed per input (a vector of 8192 values is ~180 KB)."""
_FORWARDED: frozenset[PhaseName] = frozenset(
    {"queued", "waiting", "loading", "retrying"}
)
"""A batch's phases that the whole call reports (the latest of any batch)."""


class _Answer(Watched[EmbedResult]):
    """One batch's answer: done once its one JSON object arrived, checked."""

    voids_on_retry = False  # nothing is shown before the whole answer

    def __init__(self, size: int, compact: bool) -> None:
        super().__init__()
        self.size, self.compact = size, compact
        self.done = self.has_output = False
        self.result = EmbedResult()

    def start(self, now: float) -> None:
        """Nothing to time: the answer comes whole."""

    def reset(self) -> None:
        """Nothing to forget: a retry follows only a batch that had no answer."""

    def feed(
        self, chunks: list[dict[str, Any]], now: float
    ) -> tuple[list[Any], ProtocolError | None]:
        """Take the answer; a wrong shape is a ``ProtocolError``."""
        answer = chunks[0]
        vectors = answer.get("embeddings")
        if not (
            type(vectors) is list
            and len(vectors) == self.size
            and all(type(vector) is list for vector in vectors)
        ):
            return [], ProtocolError(
                f"/api/embed did not answer {self.size} vectors: {answer!r:.200}"
            )
        try:
            kept = [array("f", v) for v in vectors] if self.compact else vectors
        except TypeError as exc:
            return [], ProtocolError(f"/api/embed answered a non-number: {exc}")
        self.result = EmbedResult(
            model=str(answer.get("model") or ""),
            embeddings=kept,
            prompt_eval_count=_count(answer.get("prompt_eval_count")),
            total_duration=_count(answer.get("total_duration")),
        )
        self.done = True
        return [], None

    def snapshot(self) -> EmbedResult:
        """The answer (empty until it arrived)."""
        return self.result

    def cancelled_result(self) -> EmbedResult:
        """The answer, marked cancelled."""
        return dataclasses.replace(self.result, cancelled=True)


def _count(value: Any) -> int | None:
    return value if type(value) is int and value >= 0 else None


def _sum(values: list[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return sum(known) if values and len(known) == len(values) else None


def merged(
    model: str, parts: Sequence[EmbedResult], started: float, *, cancelled: bool
) -> EmbedResult:
    """One result from the batches' results, in order."""
    return EmbedResult(
        model=next((p.model for p in parts if p.model), model),
        embeddings=[vector for part in parts for vector in part.embeddings],
        prompt_eval_count=_sum([p.prompt_eval_count for p in parts]),
        total_duration=_sum([p.total_duration for p in parts]),
        seconds=time.monotonic() - started,
        cancelled=cancelled,
    )


def name_batch(error: StreamError, index: int, count: int, span: range) -> None:
    """Say which batch failed, and its inputs: Ollama fails a batch as a whole,
    on its first bad input, without naming it."""
    where = f"batch {index + 1} of {count} (inputs {span.start} to {span.stop - 1})"
    error.message = f"{where}: {error.message}"
    if isinstance(error, ServerError):
        error.server_message = f"{where}: {error.server_message}"


class EmbedCalls:
    """``embed`` and ``start_embed`` (``StreamingClient`` inherits them)."""

    _engine: Engine

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
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_concurrency: int = 1,
        compact: bool = False,
        **settings: Unpack[EmbedOptions],
    ) -> BatchHandle[EmbedResult]:
        """Start embedding ``input`` on a worker thread; return its ``BatchHandle``.

        Args:
            model: an embedding model, e.g. ``"all-minilm"``.
            input: a text, or a sequence of texts (an empty text embeds nothing).
            truncate: ``False``: an input longer than the context fails its
                batch with ``ContextLengthExceeded`` instead of being cut.
            options: model options (``num_ctx``...).
            keep_alive: how long the model stays loaded.
            dimensions: cut each vector to this many values (re-normalised).
            batch_size: inputs per request.
            max_concurrency: requests at once (default: one after another).
            compact: each vector an ``array.array("f")``: 4 bytes a value.
            **settings: callbacks and per-call settings (below); ``deadline``
                bounds the whole call.

        ``result()`` is an ``EmbedResult``, vectors in input order. A failed
        batch ends the call (the others are cancelled) with its error, which
        names the batch and its inputs; ``.partial`` holds the leading vectors.

        Raises:
            TypeError, ValueError: the arguments cannot form a request.
        """
        check_model(model)
        texts = ([input] if input else []) if isinstance(input, str) else list(input)
        if not all(isinstance(text, str) for text in texts):
            raise TypeError("input must be a string or a sequence of strings")
        for name, value in (
            ("batch_size", batch_size),
            ("max_concurrency", max_concurrency),
        ):
            positive_int(name, value)
        if dimensions is not None:
            positive_int("dimensions", dimensions)
        if truncate not in (None, True, False) or not isinstance(compact, bool):
            raise TypeError("truncate and compact must be True or False")
        _options.check(settings, EmbedOptions)
        engine, started = self._engine, time.monotonic()
        base = drop_none(
            {
                "model": model,
                "truncate": truncate,
                "options": encode_options(options),
                "keep_alive": keep_alive,
                "dimensions": dimensions,
            }
        )
        encode_body(base)  # anything JSON cannot send fails here
        spans = [
            range(start, min(start + batch_size, len(texts)))
            for start in range(0, len(texts), batch_size)
        ] or [range(0)]  # no text: one request all the same, which loads the model
        deadline = engine.option(settings, "deadline")
        deadline_at = None if deadline is None else started + deadline
        parts: dict[int, EmbedResult] = {}

        def leading(*, cancelled: bool) -> EmbedResult:
            done = itertools.takewhile(parts.__contains__, range(len(spans)))
            return merged(model, [parts[i] for i in done], started, cancelled=cancelled)

        state = BatchState(len(texts), lambda: leading(cancelled=True))

        def job(ctx: StreamContext) -> EmbedResult:
            delivery = ctx.delivery

            def start(index: int, post: Post) -> Child:
                span = spans[index]
                body = base | {"input": texts[span.start : span.stop]}
                probe = index == 0 and engine.option({}, "probe_loading")
                request = engine.request(
                    "/api/embed",
                    encode_body(body),
                    {**settings, "probe_loading": probe},  # one probe is enough
                    model=model,
                    deadline_at=deadline_at,
                )
                request = dataclasses.replace(
                    request,
                    max_line_bytes=max(
                        request.max_line_bytes, LINE_BYTES_PER_INPUT * len(span)
                    ),
                )

                def phase(name: PhaseName) -> None:
                    if name in _FORWARDED:
                        post(functools.partial(delivery.set_phase, name))

                def retry(*args: Any) -> None:
                    post(functools.partial(delivery.emit, Retry(*args)))

                forward = {
                    "on_phase": phase,
                    "on_retry": retry,
                    "dispatcher": InlineDispatcher(),
                }
                return engine.start(
                    BaseHandle,
                    functools.partial(run_stream, request),
                    forward,
                    state=_Answer(len(span), compact),
                    call=CallInfo("embed", model, base),
                )

            def ended(index: int, child: Child) -> None:
                span = spans[index]
                try:
                    part = child.result()
                except StreamError as exc:
                    name_batch(exc, index, len(spans), span)
                    exc.partial = leading(cancelled=False)
                    raise
                if part.cancelled:  # stopped from outside (the client closed)
                    ctx.scope.abort(Cancelled("a batch was cancelled"))
                    ctx.scope.check()
                parts[index] = part
                delivery.emit(state.advance(len(span)))

            delivery.set_phase("connecting")
            run_items(ctx, len(spans), max_concurrency, start, ended)
            return leading(cancelled=False)

        return engine.start(
            BatchHandle,
            job,
            settings,
            state=state,
            call=CallInfo("embed", model, base),
        )

    embed = blocking(
        start_embed,
        "Embed ``input`` and block until every batch is done (an ``EmbedResult``).",
    )
