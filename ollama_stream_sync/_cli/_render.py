"""Terminal output shared by the commands: word-wrapped streaming text, colour.

On a terminal: grey thinking, bold labels, text wrapped as it streams, and a
status line ("loading qwen3…") that the answer replaces. Piped or with
``NO_COLOR``: plain labelled sections, no status line.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import unicodedata
from collections.abc import Callable
from typing import TextIO

from ollama_stream_sync import ChatResult, StreamHandle

GREY, BOLD, RESET = "\x1b[90m", "\x1b[1m", "\x1b[0m"
SHOW_SECONDS_AFTER = 2.0
"""A status line counts the seconds of its phase once it has lasted this long."""


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is a terminal (a pipe or a file is not)."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def color_wanted(stream: TextIO) -> bool:
    """Colour on a terminal, unless ``NO_COLOR`` is set (https://no-color.org)."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return is_terminal(stream)


def _cells(text: str) -> int:
    """Terminal columns ``text`` takes: wide East Asian characters take two."""
    return sum(
        0 if unicodedata.combining(c) else 1 + (unicodedata.east_asian_width(c) in "WF")
        for c in text
    )


class StreamWrapper:
    """Word-wraps text that arrives in pieces, on a terminal ``width`` columns wide.

    Each character shows as it arrives; a word that passes the edge is blanked
    out (backspaces, spaces) and moves whole to the next line. Spaces before a
    word are dropped at a line's start only. Lines stop one column short of the
    edge: a backspace is unreliable in the terminal's pending-wrap state.
    ``width=0`` writes straight through.
    """

    def __init__(self, out: TextIO, width: int = 0) -> None:
        self.out = out
        self.width = width
        self.column = 0
        self._spaces = ""  # whitespace after the last word, not written yet
        self._word: list[str] = []  # the word being received, all of it shown
        self._word_start = 0  # the column where the shown word begins

    def write(self, text: str) -> None:
        """Write a piece of the stream."""
        if self.width <= 0:
            self.out.write(text)
            _, newline, tail = text.rpartition("\n")
            self.column = len(tail) + (0 if newline else self.column)
            return
        for char in text:
            if char == "\n":
                self._break()
            elif char in " \t":
                self._word.clear()
                self._spaces += " " if char == " " else "    "
            elif char != "\r":
                self._add(char)

    def newline(self) -> None:
        """End the current line, if anything is on it."""
        self._word.clear()
        self._spaces = ""
        if self.column:
            self._break()

    def _break(self) -> None:
        self.out.write("\n")
        self.column = 0
        self._spaces = ""
        self._word.clear()

    def _fits(self, cells: int) -> bool:
        return self.column + cells < self.width

    def _add(self, char: str) -> None:
        cells = _cells(char)
        if not self._word:  # a new word: after its spaces, or on a new line
            spaces = _cells(self._spaces)
            if self.column and not self._fits(spaces + cells):
                self._break()
            elif self._fits(spaces + cells):
                self.out.write(self._spaces)
                self.column += spaces
            self._spaces = ""
            self._word_start = self.column
        elif not self._fits(cells):
            if self._word_start:  # blank the word out, show it on a line of its own
                word = "".join(self._word)
                shown = self.column - self._word_start
                self.out.write("\b" * shown + " " * shown)
                self._break()
                self._word = list(word)
                self.out.write(word)
                self.column, self._word_start = shown, 0
            if not self._fits(cells):  # longer than a line (a URL): cut it
                self.out.write("\n")
                self.column = 0
        self._word.append(char)
        self.out.write(char)
        self.column += cells


class Transcript(StreamWrapper):
    """A streamed chat on ``out``: labelled sections, thinking apart from the answer.

    ``wrap`` (a terminal): wrapped at its width, with a status line; ``color``:
    grey thinking, bold labels. A lock keeps the worker's callbacks and the
    main thread's status line apart.
    """

    def __init__(self, out: TextIO, *, color: bool = False, wrap: bool = False) -> None:
        super().__init__(out)
        self.color, self.wrap = color, wrap
        self.section = ""
        self._status = ""
        self._lock = threading.RLock()  # reentrant: the methods call one another

    @classmethod
    def for_stream(cls, out: TextIO) -> Transcript:
        """Colour and wrapping when ``out`` is a terminal."""
        return cls(out, color=color_wanted(out), wrap=is_terminal(out))

    def _style(self, code: str) -> None:
        if self.color:
            self.out.write(code)

    def _measure(self) -> None:  # the terminal may have been resized
        if self.wrap:
            self.width = max(20, shutil.get_terminal_size().columns)

    def status(self, text: str) -> None:
        """Show ``text`` as the status line, or clear it with ``""``.

        Only on a terminal, never inside streaming text; cleared with spaces,
        not escape codes, so ``NO_COLOR`` stays plain.
        """
        with self._lock:
            if not self.wrap or text == self._status:
                return
            self._clear_status()
            if not text or self.section in ("Thinking", "Answer"):
                return
            self.newline()
            room = max(20, shutil.get_terminal_size().columns) - 1
            while _cells(text) > room:
                text = text[:-2] + "…"
            self._style(GREY)
            self.out.write(text)
            self._style(RESET)
            self.out.flush()
            self._status = text

    def _clear_status(self) -> None:
        if self._status:
            self.out.write(f"\r{' ' * _cells(self._status)}\r")
            self._status = ""

    def text(self, section: str, text: str, *, dim: bool = False) -> None:
        """Text in a labelled section, started unless it is the current one."""
        with self._lock:
            self._clear_status()
            if self.section != section:
                self._style(RESET)
                self.newline()
                if self.section:
                    self.out.write("\n")
                self.section = section
                self._measure()
                self._style(GREY if dim else BOLD)
                self.out.write(f"{section}:\n")
                self._style(GREY if dim else RESET)
            self.write(text)
            self.out.flush()

    def thinking(self, delta: str) -> None:
        """``on_thinking``: grey on a terminal."""
        self.text("Thinking", delta, dim=True)

    def content(self, delta: str) -> None:
        """``on_content``: plain text."""
        self.text("Answer", delta)

    def note(self, text: str, *, dim: bool = True) -> None:
        """Lines of their own after the section: grey, or plain if not ``dim``."""
        with self._lock:
            self.end()
            self._measure()
            if dim:
                self._style(GREY)
            self.write(text)
            self.end()

    def end(self) -> None:
        """Close the section: clear the status, reset the style, end the line."""
        with self._lock:
            self._clear_status()
            self._style(RESET)
            self.newline()
            self.section = ""
            self.out.flush()


def phase_status(phase: str, model: str) -> str:
    """The status line for a stream's phase ("" when its text speaks for itself)."""
    return {
        "connecting": "connecting…",
        "waiting": f"waiting for {model}…",
        "loading": f"loading {model}…",
        "thinking": "thinking…",
        "tool_call": "calling a tool…",
        "retrying": "retrying…",
    }.get(phase, "")


def follow(
    handle: StreamHandle,
    view: Transcript,
    model: str,
    until: Callable[[ChatResult], bool] | None = None,
) -> None:
    """Show ``handle``'s phase on ``view``'s status line until the stream ends or
    ``until(snapshot)`` holds; a shown status counts its seconds ("loading
    qwen3… 12 s"). Ctrl-C (any exception) cancels the stream and propagates.
    """
    phase, since = "", time.monotonic()
    try:
        while not handle.done() and not (until and until(handle.snapshot())):
            if handle.phase != phase:
                phase, since = handle.phase, time.monotonic()
            label = phase_status(phase, model)
            waited = time.monotonic() - since
            if label and waited >= SHOW_SECONDS_AFTER:
                label += f" {waited:.0f} s"
            view.status(label)

            def moved(result: ChatResult, shown: str = phase) -> bool:
                return handle.phase != shown or bool(until and until(result))

            handle.wait_for(moved, 1.0 if label else None)
    except BaseException:
        handle.cancel()
        raise
    finally:
        view.status("")


def result_summary(result: ChatResult) -> str:
    """``[qwen3 · done: stop · 42 tokens · first token 80 ms · 35 tokens/s]``."""
    parts = [result.model or "?"]
    if result.done_reason:
        parts.append(f"done: {result.done_reason}")
    if result.eval_count is not None:
        parts.append(f"{result.eval_count} tokens")
    if result.time_to_first_token is not None:
        parts.append(f"first token {result.time_to_first_token * 1000:.0f} ms")
    if result.tokens_per_second:
        parts.append(f"{result.tokens_per_second:.0f} tokens/s")
    return "[" + " · ".join(parts) + "]"
