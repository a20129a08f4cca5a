"""Pull, push and create progress: pure state fed a read's chunks at a time.

Ollama streams ``{"status", "digest", "total", "completed"}`` per layer and then
``{"status": "success"}``. ``ProgressTracker`` turns that into ``Progress``
snapshots with overall figures across every layer seen so far: a fraction that
never goes backwards (a new layer grows the total), a smoothed speed and an ETA.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Final, Literal

from ._changes import Changes
from ._errors import ProtocolError

PROGRESS: Final = 3
"""The event kind of a progress update (after thinking, content, tool call)."""

Stage = Literal[
    "manifest",
    "downloading",
    "uploading",
    "verifying",
    "writing",
    "cleanup",
    "creating",
    "success",
    "other",
]
"""What the server is doing, read from its status text."""

_STAGES: tuple[tuple[re.Pattern[str], Stage], ...] = (
    (re.compile(r"^success$"), "success"),
    (re.compile(r"manifest$"), "manifest"),  # pulling/retrieving/pushing manifest
    (re.compile(r"^writing manifest"), "writing"),
    (re.compile(r"^pulling "), "downloading"),
    (re.compile(r"^downloading"), "downloading"),
    (re.compile(r"^pushing "), "uploading"),
    (re.compile(r"^verifying"), "verifying"),
    (re.compile(r"^removing|unused layers"), "cleanup"),
    (
        re.compile(
            r"^(parsing|converting|creating|using existing|copying|writing layer|"
            r"quantizing|updating)"
        ),
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
    if text == "writing manifest":
        return "writing"
    for pattern, stage in _STAGES:
        if pattern.search(text):
            return stage
    return "other"


@dataclass(frozen=True)
class Progress:
    """Where a pull, push or create is, as of one progress line.

    Attributes:
        status: Ollama's own text ("pulling 8eeb52dfb3bb", "verifying sha256
            digest", "writing manifest", "success"...).
        stage: what that means: "manifest", "downloading", "uploading",
            "verifying", "writing", "cleanup", "creating", "success", "other".
        digest: the layer the line is about, when it is about one.
        layer_completed, layer_total: that layer's bytes.
        completed, total: bytes across every layer seen so far (``total`` is
            ``None`` until a layer's size is known).
        fraction: ``completed / total`` in 0..1; never goes backwards, even
            when a new layer grows the total; ``None`` while no total is known.
        bytes_per_second: the transfer speed, smoothed; ``None`` until stable.
        eta: seconds left at that speed; ``None`` until stable.
        elapsed: seconds since the operation started.
        done: the server said "success".
    """

    status: str = ""
    stage: Stage = "other"
    digest: str | None = None
    layer_completed: int | None = None
    layer_total: int | None = None
    completed: int = 0
    total: int | None = None
    fraction: float | None = None
    bytes_per_second: float | None = None
    eta: float | None = None
    elapsed: float = 0.0
    done: bool = False


@dataclass(frozen=True)
class ModelResult:
    """The outcome of a pull, push, create, preload or unload.

    Attributes:
        model: the model it concerned.
        operation: "pull", "push", "create", "preload" or "unload".
        status: the server's last status ("success"; for preload/unload the
            ``done_reason``).
        seconds: how long it took, as seen by this client.
        cancelled: a ``cancel()`` stopped it (the server keeps what it
            downloaded, and a later pull resumes).
        done_reason: for preload/unload: "load" or "unload".
        progress: the last ``Progress`` (pull, push, create).
    """

    model: str
    operation: str
    status: str = ""
    seconds: float = 0.0
    cancelled: bool = False
    done_reason: str | None = None
    progress: Progress | None = None


def _int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


class ProgressTracker:
    """Collects progress lines; ``snapshot()`` is the latest ``Progress``.

    The consumer of a pull/push/create stream, as ``Accumulator`` is of a chat:
    ``feed`` is called by the worker with one read's chunks, ``snapshot`` by any
    thread. A retried operation keeps its figures (Ollama resumes), so a
    fraction shown never goes back.
    """

    def __init__(
        self, model: str, operation: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.model = model
        self.operation = operation
        self._clock = clock
        # Guards every attribute below: the worker writes, others read.
        self._lock = threading.Lock()
        self._changes = Changes()
        self._started = clock()
        self._layers: dict[str, tuple[int, int | None]] = {}
        self._last = Progress()
        self._fraction: float | None = None
        self._speed: float | None = None
        self._speed_since: float | None = None
        self._sample: tuple[float, int] | None = None
        self._seen = False
        self._done = False
        self._cancelled = False

    # -- the Consumer protocol of the worker -----------------------------------

    def start(self, now: float) -> None:
        """An attempt began (kept across retries: the server resumes)."""

    def reset(self) -> None:
        """Nothing to forget: a retried pull resumes where it was."""

    @property
    def has_output(self) -> bool:
        """True once a progress line arrived (the first-token phase is over)."""
        return self._seen

    @property
    def voids_on_retry(self) -> bool:
        """Progress is never shown twice: a retry after it is safe."""
        return False

    @property
    def done(self) -> bool:
        """True once the server said "success"."""
        return self._done

    def mark_cancelled(self) -> None:
        """Record that a cancel stopped the operation."""
        with self._lock:
            self._cancelled = True
        self.notify()

    def feed(
        self, chunks: list[dict[str, Any]], now: float
    ) -> tuple[list[tuple[int, Any]], ProtocolError | None]:
        """Take one read's progress lines; return their events."""
        events: list[tuple[int, Any]] = []
        error: ProtocolError | None = None
        with self._lock:
            for chunk in chunks:
                status = chunk.get("status")
                if not isinstance(status, str):
                    error = ProtocolError(
                        f"progress line without a 'status': {chunk!r:.200}"
                    )
                    break
                self._seen = True
                progress = self._take(chunk, status, now)
                self._last = progress
                events.append((PROGRESS, progress))
                if progress.done:
                    self._done = True
        self._changes.changed()
        return events, error

    def _take(self, chunk: dict[str, Any], status: str, now: float) -> Progress:
        digest = chunk.get("digest") if isinstance(chunk.get("digest"), str) else None
        layer_total = _int(chunk.get("total"))
        layer_done = _int(chunk.get("completed"))
        if digest and (layer_total is not None or layer_done is not None):
            seen_done, seen_total = self._layers.get(digest, (0, None))
            # A resumed or repeated layer reports again: keep the furthest.
            self._layers[digest] = (
                max(seen_done, layer_done or 0),
                layer_total if layer_total is not None else seen_total,
            )
        completed = sum(done for done, _ in self._layers.values())
        totals = [total for _, total in self._layers.values() if total is not None]
        total = sum(totals) if totals else None
        stage = stage_of(status)
        if stage == "success":
            self._fraction = 1.0
        elif total:
            fraction = min(1.0, completed / total)
            if self._fraction is None or fraction > self._fraction:
                self._fraction = fraction
        self._measure(now, completed)
        speed = self._speed if self._stable(now) else None
        eta = None
        if speed and total is not None and speed > 0:
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

    def _stable(self, now: float) -> bool:
        return self._speed_since is not None and now - self._speed_since >= STABLE_AFTER

    def snapshot(self) -> Progress:
        """The latest ``Progress`` (from any thread)."""
        with self._lock:
            return self._last

    def result(self) -> ModelResult:
        """The outcome so far, as a ``ModelResult``."""
        with self._lock:
            last = self._last
            return ModelResult(
                model=self.model,
                operation=self.operation,
                status=last.status,
                seconds=max(0.0, self._clock() - self._started),
                cancelled=self._cancelled,
                progress=last,
            )

    def cancelled_result(self, result: Any) -> ModelResult:
        """The result of a cancelled operation."""
        self.mark_cancelled()
        base = result if isinstance(result, ModelResult) else self.result()
        return replace(base, cancelled=True)

    # -- waiting ----------------------------------------------------------------

    def notify(self) -> None:
        """Wake ``wait_for`` callers."""
        self._changes.changed()

    def wait_for(
        self,
        predicate: Callable[[Progress], bool],
        timeout: float | None,
        ended: Callable[[], bool],
    ) -> bool:
        """Wait until ``predicate(snapshot)`` holds (event-driven)."""
        return self._changes.wait_until(
            lambda: predicate(self.snapshot()), timeout, ended
        )
