"""From body bytes to typed events: NDJSON lines, Ollama's error lines, chat chunks.

``Lines`` keeps the unfinished tail of a read (bounded by ``max_line_bytes``) and
parses each complete line once (with ``orjson`` when installed); ``chat_events``
reads one chunk as the public events, thinking first.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from typing import Any

from ._errors import (
    ProtocolError,
    StreamError,
    error_for_status,
    preview,
    server_message,
)
from ._events import Content, Thinking, ToolCall

_loads: Callable[[bytes], Any]
try:  # pragma: no cover  # depends on the optional extra
    _loads = importlib.import_module("orjson").loads
except ImportError:  # pragma: no cover
    _loads = json.loads

DEFAULT_MAX_LINE_BYTES = 8 * 1024 * 1024
"""A chunk is normally under a kilobyte; a line past this is not Ollama talking."""

MAX_DEPTH = 256
"""The deepest nesting parsed: the standard parser recurses per level, and a
finalizer run that deep on the worker (urllib3's) fails for lack of stack."""


class Lines:
    """Turns body bytes into parsed JSON objects, one per line.

    A line that is not a JSON object, or Ollama's ``{"error": ...}`` line, stops
    parsing: the objects before it are returned and ``error`` holds the error.
    """

    __slots__ = ("_tail", "error", "max_line_bytes")

    def __init__(self, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        self.max_line_bytes = max_line_bytes
        self._tail = b""
        self.error: StreamError | None = None

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """Add body bytes; return the objects of the lines they complete."""
        if self.error is not None:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            self._tail += data
            self._check_length(len(self._tail))
            return []
        complete, self._tail = self._tail + data[:end], data[end + 1 :]
        out = self._parse(complete)
        self._check_length(len(self._tail))
        return out

    def finish(self) -> list[dict[str, Any]]:
        """Parse what is left after the last newline (normally nothing)."""
        rest, self._tail = self._tail, b""
        return [] if self.error is not None else self._parse(rest)

    def _check_length(self, size: int) -> None:
        if size > self.max_line_bytes and self.error is None:
            self.error = ProtocolError(
                f"a response line exceeded max_line_bytes={self.max_line_bytes} "
                f"({size} bytes so far); the server is not sending Ollama NDJSON"
            )
            self._tail = b""

    def _parse(self, complete: bytes) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for line in complete.split(b"\n"):
            if not line.strip():
                continue
            if len(line) > self.max_line_bytes:
                self._check_length(len(line))
                return out
            try:
                if line.count(b"[") + line.count(b"{") >= MAX_DEPTH and _too_deep(line):
                    raise RecursionError(f"nested deeper than {MAX_DEPTH} levels")
                chunk = _loads(line)
            except (ValueError, RecursionError) as exc:
                kind = (
                    "too deeply nested"
                    if isinstance(exc, RecursionError)
                    else "not JSON"
                )
                self.error = ProtocolError(f"response line is {kind}: {preview(line)}")
                self.error.__cause__ = exc
                return out
            if type(chunk) is not dict:
                self.error = ProtocolError(
                    f"response line is not a JSON object: {preview(line)}"
                )
                return out
            if "error" in chunk:
                self.error = error_for_status(server_message(chunk["error"]), None)
                return out
            out.append(chunk)
        return out


def _too_deep(line: bytes) -> bool:  # strings skipped
    depth = 0
    in_string = escaped = False
    for byte in line:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in b"[{":
            depth += 1
            if depth > MAX_DEPTH:
                return True
        elif byte in b"]}":
            depth -= 1
    return False


ChatEvent = Thinking | Content | ToolCall


def chat_events(chunk: dict[str, Any]) -> list[ChatEvent]:
    """The output one ``/api/chat`` or ``/api/generate`` chunk carries, in order.

    Raises:
        ProtocolError: a field has the wrong type.
    """
    message = chunk.get("message")
    if message is None:  # /api/generate
        message, content = chunk, chunk.get("response")
    elif type(message) is dict:
        content = message.get("content")
    else:
        raise ProtocolError(f"chunk 'message' is not an object: {message!r:.200}")
    thinking = message.get("thinking")
    calls = message.get("tool_calls")
    for name, value in (("thinking", thinking), ("content", content)):
        if value is not None and type(value) is not str:
            raise ProtocolError(f"chunk {name!r} is not a string: {value!r:.200}")
    if calls is not None and not (
        type(calls) is list
        and all(type(c) is dict and type(c.get("function")) is dict for c in calls)
    ):
        raise ProtocolError(f"chunk 'tool_calls' is malformed: {calls!r:.200}")
    events: list[ChatEvent] = []
    if thinking:
        events.append(Thinking(thinking))
    if content:
        events.append(Content(content))
    if calls:
        events += [ToolCall(call) for call in calls]
    return events
