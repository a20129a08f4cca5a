"""Pure stream state, fed one read's chunks at a time and read as frozen snapshots:
``ChatState`` folds a chat into a ``ChatResult``, ``ProgressState`` a pull, push or
create into ``Progress``. One writer (the worker), any number of readers, each able
to wait for a predicate on the snapshot, woken by every change (nothing polls).
"""

from __future__ import annotations

import copy
import re
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from ._decode import chat_events
from ._errors import ProtocolError
from ._events import Content, Thinking, ToolCall
from ._result import ChatResult, ModelResult, Progress, Stage

S = TypeVar("S")

_COUNTERS = (
    "prompt_eval_count",
    "eval_count",
    "total_duration",
    "load_duration",
    "prompt_eval_duration",
    "eval_duration",
)
_KNOWN = frozenset(
    {"model", "created_at", "message", "response", "thinking", "tool_calls", "done"}
    | {"done_reason", "context", "logprobs", "remote_model", "remote_host", *_COUNTERS}
)


class Watched(Generic[S]):
    """A state other threads read (``snapshot``) and wait on (``wait_for``)."""

    def __init__(self) -> None:
        # Guards the subclass's fields: the worker writes while others read.
        self._lock = threading.Lock()
        # Guards _version and _waiters; waiters sleep on it.
        self._cond = threading.Condition(threading.Lock())
        self._version = 0
        self._waiters = 0

    def snapshot(self) -> S:
        """A consistent, frozen copy of the state, from any thread."""
        raise NotImplementedError

    def notify(self) -> None:
        """The state changed (or the stream ended): wake ``wait_for``."""
        if self._waiters:
            with self._cond:
                self._version += 1
                self._cond.notify_all()

    def wait_for(
        self,
        predicate: Callable[[S], bool],
        timeout: float | None,
        ended: Callable[[], bool],
    ) -> bool:
        """Wait until ``predicate(snapshot)``; False on timeout, or if the stream
        ``ended()`` without it holding. The predicate runs with no lock held."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._waiters += 1  # before the first check: no change can slip by
        try:
            while True:
                with self._cond:
                    seen = self._version
                if predicate(self.snapshot()):
                    return True
                if ended():
                    return predicate(self.snapshot())
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                with self._cond:
                    if self._version == seen and not ended():
                        self._cond.wait(remaining)
        finally:
            with self._cond:
                self._waiters -= 1


class ChatState(Watched[ChatResult]):
    """A chat's thinking, content and tool calls, fed a read at a time; the
    snapshot is cached until the state changes (polling a quiet stream is free)."""

    def __init__(self) -> None:
        super().__init__()
        self._started_at: float | None = None
        self.fields: dict[str, Any] = {}
        """Result fields set outside the stream (host, headers, parsed...)."""
        self._clear()

    def _clear(self) -> None:
        self._model = ""
        self._thinking: list[str] = []
        self._content: list[str] = []
        self._tool_calls: list[dict[str, Any]] = []
        self._logprobs: list[dict[str, Any]] = []
        self._final: dict[str, Any] = {}
        self.done = False
        """True once the ``done: true`` chunk was fed."""
        self._cancelled = False
        self._chunks = self._output_chunks = 0
        self._first_at: float | None = None
        self._last_at: float | None = None
        self._snap: ChatResult | None = None

    def start(self, now: float) -> None:
        """An attempt sent its request: the zero of ``time_to_first_token``."""
        with self._lock:
            self._started_at, self._snap = now, None

    def reset(self) -> None:
        """Forget the output so far (a retry after output, a new round)."""
        with self._lock:
            self._clear()
        self.notify()

    @property
    def has_output(self) -> bool:
        """True once any thinking, content or tool call arrived."""
        return self._first_at is not None

    voids_on_retry = has_output
    """A retry now would show output twice."""

    @property
    def tool_call_count(self) -> int:
        """How many tool calls have arrived."""
        return len(self._tool_calls)

    def set_fields(self, **fields: Any) -> None:
        """Set result fields computed outside the stream."""
        with self._lock:
            self.fields.update(fields)
            self._snap = None

    def cancelled_result(self) -> ChatResult:
        """What arrived, marked cancelled."""
        with self._lock:
            self._cancelled, self._snap = True, None
        self.notify()
        return self.snapshot()

    def feed(
        self, chunks: list[dict[str, Any]], now: float
    ) -> tuple[list[Thinking | Content | ToolCall], ProtocolError | None]:
        """Take one read's chunks; return their events and the error of a malformed
        chunk, which ends the batch (what came before is kept). After done: ignored."""
        events: list[Thinking | Content | ToolCall] = []
        error = None
        with self._lock:
            for chunk in chunks:
                if self.done:
                    break
                try:
                    output = chat_events(chunk)
                except ProtocolError as exc:
                    error = exc
                    break
                self._chunks += 1
                for event in output:
                    if type(event) is Content:
                        self._content.append(event.text)
                    elif type(event) is Thinking:
                        self._thinking.append(event.text)
                    elif type(event) is ToolCall:  # callers get their own copy
                        self._tool_calls.append(copy.deepcopy(event.call))
                if output:
                    events += output
                    self._output_chunks += 1
                    self._first_at = self._first_at or now
                    self._last_at = now
                self._model = self._model or _str(chunk.get("model")) or ""
                logprobs = chunk.get("logprobs")
                if type(logprobs) is list:
                    self._logprobs += [lp for lp in logprobs if type(lp) is dict]
                if chunk.get("done") is True:
                    self.done, self._final = True, chunk
            self._snap = None
        self.notify()
        return events, error

    def snapshot(self) -> ChatResult:
        """A consistent, frozen copy of everything so far (cached until it changes)."""
        with self._lock:
            if self._snap is None:
                self._snap = self._build()
            return self._snap

    def _build(self) -> ChatResult:
        final = self._final
        counters: dict[str, Any] = {name: _int(final.get(name)) for name in _COUNTERS}
        ttft = tps = None
        if self._first_at is not None and self._started_at is not None:
            ttft = max(0.0, self._first_at - self._started_at)
        if self._first_at is not None and self._last_at is not None:
            span = self._last_at - self._first_at
            tokens = counters["eval_count"] or self._output_chunks
            if span > 0 and tokens > 1:
                tps = (tokens - 1) / span
        context = final.get("context")
        thinking, content = "".join(self._thinking), "".join(self._content)
        self._thinking, self._content = [thinking], [content]  # joined once
        return ChatResult(
            model=self._model,
            thinking=thinking,
            content=content,
            tool_calls=tuple(copy.deepcopy(self._tool_calls)),
            done=self.done,
            done_reason=_str(final.get("done_reason")),
            cancelled=self._cancelled,
            time_to_first_token=ttft,
            tokens_per_second=tps,
            context=tuple(context)
            if type(context) is list and all(type(x) is int for x in context)
            else None,
            logprobs=tuple(self._logprobs),
            chunk_count=self._chunks,
            remote_model=_str(final.get("remote_model")),
            remote_host=_str(final.get("remote_host")),
            extra={k: v for k, v in final.items() if k not in _KNOWN},
            **counters,
            **self.fields,
        )


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    return value if type(value) is int and value >= 0 else None


_STAGES: tuple[tuple[str, Stage], ...] = (
    (r"^success$", "success"),
    (r"^writing manifest", "writing"),
    (r"manifest$", "manifest"),  # pulling/retrieving/pushing manifest
    (r"^(pulling |downloading)", "downloading"),
    (r"^pushing ", "uploading"),
    (r"^verifying", "verifying"),
    (r"^removing|unused layers", "cleanup"),
    (
        r"^(parsing|converting|creating|using existing|copying|writing layer|"
        r"quantizing|updating)",
        "creating",
    ),
)

SPEED_HALF_LIFE = 2.0
"""Seconds after which an old speed sample counts half (the EWMA's memory)."""
STABLE_AFTER = 1.0
"""Seconds of transfer before ``bytes_per_second`` and ``eta`` are reported."""


def stage_of(status: str) -> Stage:
    """The stage a status text names ("pulling 8eeb52dfb3bb" is downloading)."""
    text = status.strip().lower()
    return next((stage for p, stage in _STAGES if re.search(p, text)), "other")


class ProgressState(Watched[Progress]):
    """A pull, push or create's latest ``Progress``, over every layer seen; a retry
    keeps the figures (Ollama resumes), so a fraction shown never goes back."""

    voids_on_retry = False
    """Progress is never shown twice: a retry after it is safe."""

    def __init__(
        self, model: str, operation: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.model, self.operation, self._clock = model, operation, clock
        self._started = clock()
        self._layers: dict[str, tuple[int, int | None]] = {}
        self._last = Progress()
        self._fraction: float | None = None
        self._speed: float | None = None
        self._speed_since: float | None = None
        self._sample: tuple[float, int] | None = None
        self.has_output = self.done = self._cancelled = False

    def start(self, now: float) -> None:
        """An attempt began (figures are kept across retries)."""

    def reset(self) -> None:
        """Nothing to forget: a retried operation resumes where it was."""

    def feed(
        self, chunks: list[dict[str, Any]], now: float
    ) -> tuple[list[Progress], ProtocolError | None]:
        """Take one read's progress lines; return a ``Progress`` per line."""
        events: list[Progress] = []
        error = None
        with self._lock:
            for chunk in chunks:
                status = chunk.get("status")
                if not isinstance(status, str):
                    error = ProtocolError(
                        f"progress line without a 'status': {chunk!r:.200}"
                    )
                    break
                self.has_output = True
                self._last = self._take(chunk, status, now)
                events.append(self._last)
                self.done = self.done or self._last.done
        self.notify()
        return events, error

    def _take(self, chunk: dict[str, Any], status: str, now: float) -> Progress:
        digest = _str(chunk.get("digest"))
        layer_total, layer_done = _int(chunk.get("total")), _int(chunk.get("completed"))
        if digest and (layer_total is not None or layer_done is not None):
            seen_done, seen_total = self._layers.get(digest, (0, None))
            # A resumed or repeated layer reports again: keep the furthest.
            self._layers[digest] = (
                max(seen_done, layer_done or 0),
                seen_total if layer_total is None else layer_total,
            )
        completed = sum(done for done, _ in self._layers.values())
        totals = [total for _, total in self._layers.values() if total is not None]
        total = sum(totals) if totals else None
        stage = stage_of(status)
        if stage == "success":
            self._fraction = 1.0
        elif total:
            self._fraction = max(self._fraction or 0.0, min(1.0, completed / total))
        self._measure(now, completed)
        stable = (
            self._speed_since is not None and now - self._speed_since >= STABLE_AFTER
        )
        speed = self._speed if stable else None
        eta = None
        if speed and total is not None:
            eta = max(0.0, (total - completed) / speed)
        return Progress(
            status=status,
            stage=stage,
            digest=digest,
            layer_completed=layer_done,
            layer_total=layer_total,
            completed=completed,
            total=total,
            fraction=self._fraction,
            bytes_per_second=speed,
            eta=eta,
            elapsed=max(0.0, now - self._started),
            done=stage == "success",
        )

    def _measure(self, now: float, completed: int) -> None:
        """An exponentially weighted speed, sampled at most every 0.2 s."""
        if self._sample is None:
            self._sample = (now, completed)
            return
        then, before = self._sample
        span = now - then
        if span < 0.2:
            return
        rate = max(0, completed - before) / span
        if self._speed is None:
            self._speed, self._speed_since = rate, then
        else:
            weight = 0.5 ** (span / SPEED_HALF_LIFE)
            self._speed = weight * self._speed + (1 - weight) * rate
        self._sample = (now, completed)

    def snapshot(self) -> Progress:
        """The latest ``Progress`` (from any thread)."""
        with self._lock:
            return self._last

    def result(self) -> ModelResult:
        """The outcome so far, as a ``ModelResult``."""
        with self._lock:
            return ModelResult(
                model=self.model,
                operation=self.operation,
                status=self._last.status,
                seconds=max(0.0, self._clock() - self._started),
                cancelled=self._cancelled,
                progress=self._last,
            )

    def cancelled_result(self) -> ModelResult:
        """The result of a cancelled operation."""
        with self._lock:
            self._cancelled = True
        self.notify()
        return self.result()
