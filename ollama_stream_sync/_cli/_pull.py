"""``pull``: download a model, with one progress bar on a terminal, lines when piped."""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import os
import sys
import threading
from typing import Any, TextIO

from ollama_stream_sync import (
    ModelNotFound,
    ModelResult,
    Progress,
    ProgressHandle,
    QueueDispatcher,
    StreamError,
)

from ._failure import EXIT_INTERRUPTED, EXIT_OK, NAME, Failure, open_client
from ._render import is_terminal

STAGE_LABELS = {
    "writing": "writing manifest",
    "cleanup": "cleaning up",
    "success": "done",
}
"""The bar's words for a stage its name says badly ("other" shows Ollama's text)."""


def human_bytes(count: float) -> str:
    """``2.0 GB``: decimal units, as Ollama shows sizes."""
    unit = "B"
    for bigger in ("KB", "MB", "GB", "TB"):
        if count < 1000:
            break
        count, unit = count / 1000, bigger
    return f"{count:.0f} B" if unit == "B" else f"{count:.1f} {unit}"


def clock(seconds: float) -> str:
    """``0:42``, ``12:05``, ``1:02:03``: a time left, as a clock shows it."""
    hours, rest = divmod(round(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


def percent(progress: Progress) -> int:
    """Whole percent done, rounded down: 100 only once everything is there."""
    return int((progress.fraction or 0.0) * 100)


def progress_detail(progress: Progress, *, unknown_speed: str = "speed n/a") -> str:
    """``840.0 MB / 2.0 GB · 35.1 MB/s · ETA 0:24``: what is known so far; speed
    and time left while downloading (``unknown_speed`` until steady)."""
    if progress.total is None:
        return ""
    parts = [f"{human_bytes(progress.completed)} / {human_bytes(progress.total)}"]
    if progress.stage == "downloading":
        speed = progress.bytes_per_second
        parts.append(unknown_speed if speed is None else f"{human_bytes(speed)}/s")
        if progress.eta is not None:
            parts.append(f"ETA {clock(progress.eta)}")
    return " · ".join(part for part in parts if part)


class PullLines:
    """Pull progress as plain lines: one per stage, one per ``step`` percent (no
    coalescing: a stage that passes in a blink still gets its line)."""

    coalesce_interval: float | None = None
    step = 10

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.last: Progress | None = None
        self._said = ""
        self._step = -1

    def show(self, progress: Progress) -> None:
        """``on_progress``: print a line if this one says something new."""
        self.last = progress
        if progress.done:
            return  # the command's own last line says so
        if progress.stage == "downloading":
            step = percent(progress) // self.step
            if self._said == "downloading" and step <= self._step:
                return
            self._said, self._step = "downloading", step
            line = f"downloading {percent(progress):3d}%"
            detail = progress_detail(progress, unknown_speed="")
            line += f"  ({detail})" if detail else ""
        elif progress.status == self._said:
            return
        else:
            self._said = line = progress.status
        self.out.write(line + "\n")
        self.out.flush()

    def close(self, *, keep: bool) -> None:
        """Nothing to tidy: every line is whole."""


class PullBar(PullLines):
    """One tqdm bar for the whole pull: the stage, percent, bytes, speed, ETA.

    The figures are the library's ``Progress``, not tqdm's estimates: the bar
    never goes back when a layer grows the total.
    """

    coalesce_interval = 0.1  # redraw at most this often, with the latest figures

    def __init__(self, out: TextIO, bar_class: Any) -> None:
        super().__init__(out)
        self._class = bar_class
        self._bar: Any = None

    def show(self, progress: Progress) -> None:
        """``on_progress``: redraw the bar."""
        self.last = progress
        if self._bar is None:  # drawn from the first line: a failed connect shows none
            self._bar = self._class(
                total=1000,  # thousandths of the whole: the bar moves smoothly
                file=self.out,
                bar_format="{desc:<11} {percentage:3.0f}% |{bar}| {detail}",
                dynamic_ncols=True,
                disable=False,  # we chose to draw it: a terminal, tqdm installed
            )
        self._bar.n = int((progress.fraction or 0.0) * 1000)
        stage = STAGE_LABELS.get(progress.stage, progress.stage)
        if progress.stage == "other":
            stage = progress.status
        self._bar.set_description_str(stage, refresh=False)
        self._bar.detail = progress_detail(progress)
        self._bar.refresh()

    def close(self, *, keep: bool) -> None:
        """End the bar: ``keep`` leaves it on screen, else its line is cleared."""
        if self._bar is not None:
            self._bar.leave = keep
            self._bar.close()
            self._bar = None


def pull_view(out: TextIO) -> PullLines:
    """A bar on a terminal (with tqdm, the ``cli`` extra), plain lines otherwise."""
    if not is_terminal(out) or os.environ.get("TERM") == "dumb":
        return PullLines(out)
    try:
        from tqdm import tqdm  # noqa: PLC0415  # optional: the `cli` extra
    except ImportError:
        return PullLines(out)

    class Bar(tqdm):  # type: ignore[type-arg]  # tqdm[T]: T is what it iterates
        """``{detail}`` in ``bar_format``: tqdm's documented way to add a field."""

        monitor_interval = 0  # no monitor thread: every update redraws
        detail = ""

        @property
        def format_dict(self) -> Any:
            return {**super().format_dict, "detail": self.detail}

    return PullBar(out, Bar)


def run(args: argparse.Namespace) -> int:
    """Download a model to your Ollama, with a progress bar.

    On a terminal: one bar for the whole model, with the stage, speed and time
    left (the bar needs tqdm: pip install 'ollama-stream-sync[cli]'; without
    it, plain lines). Piped: a line per stage and per 10% downloaded. Ctrl-C
    cancels the pull; Ollama keeps the layers it has, so pulling again
    resumes.
    """
    model: str = args.model
    if not model.strip():
        raise Failure("the model name is empty; name one, e.g. qwen3")
    view = pull_view(sys.stdout)
    # Callbacks run here, on the main thread, as it pumps the queue: one thread
    # draws the bar, and coalescing (flushed by the client's timer during a
    # pause, which a queue allows) always shows the latest figures.
    queue = QueueDispatcher()
    ended = threading.Event()
    with open_client(args.host) as client:
        handle = client.start_pull(
            model,
            insecure=bool(args.insecure),
            on_progress=view.show,
            on_done=lambda _: ended.set(),
            on_error=lambda _: ended.set(),
            dispatcher=queue,
            coalesce_interval=view.coalesce_interval,
        )
        try:
            queue.pump_until(ended.is_set, None)
        except KeyboardInterrupt:
            return _interrupted(handle, queue, ended, view, model)
        try:
            result = handle.result()
        except ModelNotFound as exc:  # its own line: there is no --model to pick
            view.close(keep=False)
            raise Failure(str(exc)) from exc
        except StreamError:
            view.close(keep=bool(view.last and view.last.completed))
            raise
        view.close(keep=True)
    sys.stdout.write(_pulled(model, result) + "\n")
    return EXIT_OK


def _pulled(model: str, result: ModelResult) -> str:
    last = result.progress
    size = f" ({human_bytes(last.total)})" if last and last.total else ""
    return f"pulled {model}{size} in {result.seconds:.1f} s"


def _interrupted(
    handle: ProgressHandle,
    queue: QueueDispatcher,
    ended: threading.Event,
    view: PullLines,
    model: str,
) -> int:
    """Ctrl-C: cancel the pull (its socket closes), say where it stopped."""
    handle.cancel()
    # What arrived before the cancel is still delivered: the bar shows it.
    # More Ctrl-C (people press it twice) must not cut that short.
    while True:
        with contextlib.suppress(KeyboardInterrupt):
            queue.pump_until(ended.is_set, 5.0)
            break
    result: ModelResult | None = None
    with contextlib.suppress(StreamError, concurrent.futures.TimeoutError):
        result = handle.result(0)  # else cancelled mid-callback, or still closing
    if result is not None and not result.cancelled:  # it finished first
        view.close(keep=True)
        sys.stdout.write(_pulled(model, result) + "\n")
        return EXIT_OK
    last = view.last
    view.close(keep=bool(last and last.completed))
    with contextlib.suppress(OSError):
        sys.stdout.flush()
    where = ""
    if last is not None and last.total is not None:
        done, total = human_bytes(last.completed), human_bytes(last.total)
        where = f" at {percent(last)}% ({done} of {total})"
    sys.stderr.write(
        f"{NAME}: pull cancelled{where}; Ollama keeps the layers it has "
        f"downloaded, so pulling {model} again resumes\n"
    )
    return EXIT_INTERRUPTED
