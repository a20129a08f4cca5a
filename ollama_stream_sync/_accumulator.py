"""Pure stream state: fed one read's chunks at a time, read as frozen snapshots."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Final

from ._changes import Changes
from ._errors import ProtocolError
from ._result import ChatResult

THINKING: Final = 0
CONTENT: Final = 1
TOOL_CALL: Final = 2

Event = tuple[int, Any]
"""``(kind, payload)``: a thinking/content delta (str) or one whole tool call."""

_COUNTERS = (
    "prompt_eval_count",
    "eval_count",
    "total_duration",
    "load_duration",
    "prompt_eval_duration",
    "eval_duration",
)
_KNOWN = frozenset(
    {
        "model",
        "created_at",
        "message",
        "response",
        "thinking",
        "tool_calls",
        "done",
        "done_reason",
        "context",
        "logprobs",
        "remote_model",
        "remote_host",
        *_COUNTERS,
    }
)

_SEGMENT = 512
"""Text parts joined into one string every this many, so a million tiny deltas
cost a million characters, not a million string objects."""


_BLOCK = 64
"""Segments merged into one block every this many: blocks are large enough for
the allocator to map them on their own, so a freed block goes back to the OS."""


class _Text:
    """One growing text field: small parts, consolidated into segments, then blocks."""

    __slots__ = ("blocks", "parts", "segments")

    def __init__(self) -> None:
        self.blocks: list[str] = []
        self.segments: list[str] = []
        self.parts: list[str] = []

    def add(self, text: str) -> None:
        parts = self.parts
        parts.append(text)
        if len(parts) >= _SEGMENT:
            segments = self.segments
            segments.append("".join(parts))
            parts.clear()
            if len(segments) >= _BLOCK:
                self.blocks.append("".join(segments))
                segments.clear()

    def value(self) -> str:
        """The whole text; re-stored joined so the next call adds only new parts."""
        if not self.parts and not self.segments and len(self.blocks) <= 1:
            return self.blocks[0] if self.blocks else ""
        pieces = self.blocks
        pieces.append("".join(self.segments) + "".join(self.parts))
        self.segments, self.parts = [], []
        text = pieces[0] if len(pieces) == 1 else "".join(pieces)
        self.blocks = [text] if text else []
        return text


class Accumulator:
    """Collects thinking, content and tool calls from chunks; no I/O, no threads.

    ``feed`` is called by one writer (the worker) with the chunks of one network
    read, under one lock acquisition; ``snapshot`` may be called by any thread at
    any time. A snapshot is cached until the state changes, so polling it costs
    nothing while the stream is quiet.
    """

    def __init__(self) -> None:
        # Guards every attribute below: the worker writes while other threads
        # take snapshots.
        self._lock = threading.Lock()
        self._started_at: float | None = None
        self._changes = Changes()
        self._reset_state()

    def _reset_state(self) -> None:
        self._model = ""
        self._thinking = _Text()
        self._content = _Text()
        self._tool_calls: list[dict[str, Any]] = []
        self._logprobs: list[dict[str, Any]] = []
        self._final: dict[str, Any] = {}
        self._done = False
        self._cancelled = False
        self._chunks = 0
        self._output_chunks = 0
        self._first_at: float | None = None
        self._last_at: float | None = None
        self._version = 0
        self._snap: ChatResult | None = None
        self._snap_version = -1
        self.extra_fields: dict[str, Any] = {}
        """Fields set on the result by the worker (parsed, prompt_truncated)."""

    def start(self, now: float) -> None:
        """Mark when the request was sent (the zero of ``time_to_first_token``)."""
        with self._lock:
            self._started_at = now
            self._version += 1

    def reset(self) -> None:
        """Forget everything fed so far (a retried stream starts afresh)."""
        with self._lock:
            version = self._version
            self._reset_state()
            self._version = version + 1
        self.notify()

    def notify(self) -> None:
        """Wake ``wait_for`` callers (after a change, or when the stream ends)."""
        self._changes.changed()

    def wait_for(
        self,
        predicate: Callable[[ChatResult], bool],
        timeout: float | None,
        ended: Callable[[], bool],
    ) -> bool:
        """Wait until ``predicate(snapshot)`` holds; False on timeout or if it ended
        without holding. Woken by every change: no polling."""
        return self._changes.wait_until(
            lambda: predicate(self.snapshot()), timeout, ended
        )

    @property
    def has_output(self) -> bool:
        """True once any thinking, content or tool call has been fed."""
        return self._first_at is not None

    @property
    def voids_on_retry(self) -> bool:
        """Whether a retry now would show output twice (text already delivered)."""
        return self._first_at is not None

    @property
    def done(self) -> bool:
        """True once the ``done: true`` chunk was fed."""
        return self._done

    def cancelled_result(self, result: ChatResult | None) -> ChatResult:
        """The result of a cancelled stream: what arrived, marked cancelled."""
        self.mark_cancelled()
        return replace(
            result if result is not None else self.snapshot(), cancelled=True
        )

    @property
    def tool_call_count(self) -> int:
        """How many tool calls have arrived."""
        return len(self._tool_calls)

    def mark_cancelled(self) -> None:
        """Record that the stream was stopped by a cancel."""
        with self._lock:
            self._cancelled = True
            self._version += 1
        self.notify()

    def set_fields(self, **fields: Any) -> None:
        """Set result fields computed outside the stream (parsed output...)."""
        with self._lock:
            self.extra_fields.update(fields)
            self._version += 1

    def feed(
        self, chunks: list[dict[str, Any]], now: float
    ) -> tuple[list[Event], ProtocolError | None]:
        """Take one read's chunks; return their events, thinking before content.

        A malformed chunk stops the batch: the events of the chunks before it
        are returned with the error, so nothing that arrived is lost.
        """
        events: list[Event] = []
        error: ProtocolError | None = None
        with self._lock:
            if self._done:
                return events, None
            for chunk in chunks:
                message = chunk.get("message")
                if message is None:  # /api/generate
                    message = chunk
                    content = chunk.get("response")
                elif type(message) is dict:
                    content = message.get("content")
                else:
                    error = ProtocolError(
                        f"chunk 'message' is not an object: {message!r:.200}"
                    )
                    break
                thinking = message.get("thinking")
                calls = message.get("tool_calls")
                if thinking is not None and type(thinking) is not str:
                    error = ProtocolError(
                        f"chunk 'thinking' is not a string: {thinking!r:.200}"
                    )
                    break
                if content is not None and type(content) is not str:
                    error = ProtocolError(
                        f"chunk 'content' is not a string: {content!r:.200}"
                    )
                    break
                if calls is not None and not _valid_calls(calls):
                    error = ProtocolError(
                        f"chunk 'tool_calls' is malformed: {calls!r:.200}"
                    )
                    break
                self._chunks += 1
                before = len(events)
                if thinking:
                    self._thinking.add(thinking)
                    events.append((THINKING, thinking))
                if content:
                    self._content.add(content)
                    events.append((CONTENT, content))
                if calls:
                    for call in calls:
                        self._tool_calls.append(call)
                        events.append((TOOL_CALL, copy.deepcopy(call)))
                if not self._model:
                    model = chunk.get("model")
                    if type(model) is str:
                        self._model = model
                logprobs = chunk.get("logprobs")
                if logprobs is not None and type(logprobs) is list:
                    self._logprobs.extend(lp for lp in logprobs if type(lp) is dict)
                if len(events) > before:
                    self._output_chunks += 1
                    if self._first_at is None:
                        self._first_at = now
                    self._last_at = now
                if chunk.get("done") is True:
                    self._done = True
                    self._final = chunk
                    # The answer is complete: a line after it in the same
                    # network read is as ignored as one in a later read.
                    break
            self._version += 1
        self._changes.changed()
        return events, error

    def snapshot(self) -> ChatResult:
        """Return a consistent, frozen copy of everything so far (cached)."""
        with self._lock:
            if self._snap is not None and self._snap_version == self._version:
                return self._snap
            result = self._build()
            self._snap, self._snap_version = result, self._version
            return result

    def _build(self) -> ChatResult:
        final = self._final
        counters: dict[str, int | None] = {}
        for name in _COUNTERS:
            value = final.get(name)
            counters[name] = value if type(value) is int else None
        context = final.get("context")
        done_reason = final.get("done_reason")
        ttft = tps = None
        if self._first_at is not None and self._started_at is not None:
            ttft = max(0.0, self._first_at - self._started_at)
        if self._first_at is not None and self._last_at is not None:
            span = self._last_at - self._first_at
            tokens = counters["eval_count"] or self._output_chunks
            if span > 0 and tokens > 1:
                tps = (tokens - 1) / span
        remote_model = final.get("remote_model")
        remote_host = final.get("remote_host")
        return ChatResult(
            model=self._model,
            thinking=self._thinking.value(),
            content=self._content.value(),
            tool_calls=tuple(copy.deepcopy(self._tool_calls)),
            done=self._done,
            done_reason=done_reason if isinstance(done_reason, str) else None,
            cancelled=self._cancelled,
            time_to_first_token=ttft,
            tokens_per_second=tps,
            context=(
                tuple(context)
                if isinstance(context, list) and all(type(x) is int for x in context)
                else None
            ),
            logprobs=tuple(self._logprobs),
            chunk_count=self._chunks,
            remote_model=remote_model if isinstance(remote_model, str) else None,
            remote_host=remote_host if isinstance(remote_host, str) else None,
            extra={k: v for k, v in final.items() if k not in _KNOWN},
            prompt_eval_count=counters["prompt_eval_count"],
            eval_count=counters["eval_count"],
            total_duration=counters["total_duration"],
            load_duration=counters["load_duration"],
            prompt_eval_duration=counters["prompt_eval_duration"],
            eval_duration=counters["eval_duration"],
            prompt_truncated=bool(self.extra_fields.get("prompt_truncated", False)),
            parsed=self.extra_fields.get("parsed"),
        )


def _valid_calls(calls: Any) -> bool:
    return type(calls) is list and all(
        type(c) is dict and type(c.get("function")) is dict for c in calls
    )
