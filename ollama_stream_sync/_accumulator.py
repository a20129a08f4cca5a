"""Pure stream state: fed chunk by chunk, read as frozen snapshots from any thread."""

from __future__ import annotations

import copy
import threading
from typing import Any, Final

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
        *_COUNTERS,
    }
)


class Accumulator:
    """Collects thinking, content and tool calls from chunks; no I/O, no threads.

    ``feed`` is called by one writer (the worker); ``snapshot`` may be called by
    any thread at any time. Text is kept as lists of parts and joined lazily, so
    the cost is linear in the output however often it is read.
    """

    def __init__(self) -> None:
        # Guards every attribute below: the worker writes while other threads
        # take snapshots.
        self._lock = threading.Lock()
        self._reset_state()

    def _reset_state(self) -> None:
        self._model = ""
        self._thinking: list[str] = []
        self._content: list[str] = []
        self._tool_calls: list[dict[str, Any]] = []
        self._logprobs: list[dict[str, Any]] = []
        self._final: dict[str, Any] = {}
        self._done = False
        self._cancelled = False
        self._chunks = 0
        self._output_chunks = 0
        self._started_at: float | None = None
        self._first_at: float | None = None
        self._last_at: float | None = None

    def start(self, now: float) -> None:
        """Mark when the request was sent (the zero of ``time_to_first_token``)."""
        with self._lock:
            self._started_at = now

    def reset(self) -> None:
        """Forget everything fed so far (a retried stream starts afresh)."""
        with self._lock:
            started = self._started_at
            self._reset_state()
            self._started_at = started

    @property
    def has_output(self) -> bool:
        """True once any thinking, content or tool call has been fed."""
        return self._first_at is not None

    @property
    def done(self) -> bool:
        """True once the ``done: true`` chunk was fed."""
        return self._done

    def mark_cancelled(self) -> None:
        """Record that the stream was stopped by a cancel."""
        with self._lock:
            self._cancelled = True

    def feed(self, chunk: dict[str, Any], now: float) -> list[Event]:
        """Take one chunk; return the events it carries, thinking before content.

        Raises:
            ProtocolError: a field has the wrong type.
        """
        message = chunk.get("message")
        if message is None:  # /api/generate
            message = chunk
            content = chunk.get("response")
        elif isinstance(message, dict):
            content = message.get("content")
        else:
            raise ProtocolError(f"chunk 'message' is not an object: {message!r:.200}")
        thinking = message.get("thinking")
        calls = message.get("tool_calls")
        if not (thinking is None or isinstance(thinking, str)):
            raise ProtocolError(f"chunk 'thinking' is not a string: {thinking!r:.200}")
        if not (content is None or isinstance(content, str)):
            raise ProtocolError(f"chunk 'content' is not a string: {content!r:.200}")
        if calls is not None and not (
            isinstance(calls, list)
            and all(
                isinstance(c, dict) and isinstance(c.get("function"), dict)
                for c in calls
            )
        ):
            raise ProtocolError(f"chunk 'tool_calls' is malformed: {calls!r:.200}")

        events: list[Event] = []
        with self._lock:
            self._chunks += 1
            if not self._model:
                model = chunk.get("model")
                if isinstance(model, str):
                    self._model = model
            if thinking:
                self._thinking.append(thinking)
                events.append((THINKING, thinking))
            if content:
                self._content.append(content)
                events.append((CONTENT, content))
            if calls:
                for call in calls:
                    self._tool_calls.append(call)
                    events.append((TOOL_CALL, copy.deepcopy(call)))
            logprobs = chunk.get("logprobs")
            if isinstance(logprobs, list):
                self._logprobs.extend(lp for lp in logprobs if isinstance(lp, dict))
            if events:
                self._output_chunks += 1
                if self._first_at is None:
                    self._first_at = now
                self._last_at = now
            if chunk.get("done") is True:
                self._done = True
                self._final = chunk
        return events

    def snapshot(self) -> ChatResult:
        """Return a consistent, frozen copy of everything so far."""
        with self._lock:
            thinking = "".join(self._thinking)
            content = "".join(self._content)
            # Re-store the joined text so repeated snapshots stay linear overall.
            self._thinking = [thinking] if thinking else []
            self._content = [content] if content else []
            final = self._final
            counters: dict[str, int | None] = {}
            for name in _COUNTERS:
                value = final.get(name)
                counters[name] = value if isinstance(value, int) else None
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
            return ChatResult(
                model=self._model,
                thinking=thinking,
                content=content,
                tool_calls=tuple(copy.deepcopy(self._tool_calls)),
                done=self._done,
                done_reason=done_reason if isinstance(done_reason, str) else None,
                cancelled=self._cancelled,
                time_to_first_token=ttft,
                tokens_per_second=tps,
                context=(
                    tuple(context)
                    if isinstance(context, list)
                    and all(isinstance(x, int) for x in context)
                    else None
                ),
                logprobs=tuple(self._logprobs),
                chunk_count=self._chunks,
                extra={k: v for k, v in final.items() if k not in _KNOWN},
                **counters,
            )
