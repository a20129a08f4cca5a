"""NDJSON framing and chunk parsing, shared by every transport.

Ollama streams one JSON object per line. Network reads cut lines anywhere, so
``LineParser`` keeps the unfinished tail (bounded by ``max_line_bytes``, so a
runaway line cannot eat memory) and parses each complete line once. With
``orjson`` installed (the ``fast`` extra) lines are parsed from bytes; without
it, each read's complete lines are decoded to ``str`` once and parsed by
``json.loads``, which skips its per-call encoding detection.
"""

from __future__ import annotations

import email.utils
import importlib
import json
import json.scanner
import re
import time
from typing import Any

from ._errors import ProtocolError, StreamError, error_for_status, server_error

_loads_bytes: Any
try:  # pragma: no cover  # depends on the optional extra
    _loads_bytes = importlib.import_module("orjson").loads
except ImportError:  # pragma: no cover
    _loads_bytes = None

DEFAULT_MAX_LINE_BYTES = 8 * 1024 * 1024
"""A chunk is normally under a kilobyte; a line past this is not Ollama talking."""

_PARSE_ERRORS = (ValueError, RecursionError, MemoryError)
"""What a JSON parser raises for a line it cannot take (nesting too deep included)."""

_scan: Any = json.scanner.make_scanner(  # the C scanner json.loads uses
    json.JSONDecoder()  # type: ignore[arg-type]  # typeshed types it oddly
)


def _loads_str(line: str) -> Any:
    """``json.loads`` for one NDJSON line, without its per-call wrappers."""
    try:
        value, end = _scan(line, 0)
    except StopIteration as exc:
        if line[:1].isspace():  # rare: leading whitespace the scanner will not skip
            return json.loads(line)
        raise ValueError(f"Expecting value: column {exc.value}") from None
    if end != len(line) and not line[end:].isspace():
        raise ValueError(f"Extra data: column {end}")
    return value


MAX_DEPTH = 256
"""The deepest nesting parsed. Ollama's lines nest a handful of levels (tool
arguments a few more). The standard parser recurses once per level up to the
interpreter's recursion limit, and a garbage collection that runs a finalizer
on the worker at that depth (urllib3 closes a pool's sockets in one) fails
for lack of stack: a deeper line is refused before it is parsed."""

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(r"[\[\]{}]")


def too_deep(text: str, limit: int = MAX_DEPTH) -> bool:
    """Whether JSON ``text`` nests deeper than ``limit`` (strings ignored).

    Free for ordinary lines: only a line with ``limit`` brackets or more is
    scanned.
    """
    if text.count("[") + text.count("{") < limit:
        return False
    depth = 0
    for match in _BRACKET.finditer(_STRING.sub("", text)):
        if match.group() in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def has_orjson() -> bool:
    """Whether the fast JSON parser is in use."""
    return _loads_bytes is not None


class LineParser:
    """Turns body bytes into parsed chunks, one JSON object per line.

    ``feed`` returns the chunks of the lines a read completes. A line that is not
    a JSON object, or Ollama's in-band ``{"error": ...}`` line, stops parsing:
    the chunks before it are returned and ``error`` holds the typed error, so
    nothing that arrived before a failure is lost.
    """

    __slots__ = ("_buf", "_buffered", "error", "max_line_bytes")

    def __init__(self, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        self.max_line_bytes = max_line_bytes
        self._buf: list[bytes] = []
        self._buffered = 0
        self.error: StreamError | None = None
        """The error that stopped parsing, if any."""

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """Add body bytes; return the chunks of the lines they complete."""
        if self.error is not None:
            return []
        if not self._buf and data[-1:] == b"\n":  # the usual read: whole lines
            return self._parse(data)
        end = data.rfind(b"\n")
        if end < 0:
            if data:
                self._buf.append(data)
                self._buffered += len(data)
                if self._buffered > self.max_line_bytes:
                    self._too_long(self._buffered)
            return []
        if self._buf:
            self._buf.append(data[: end + 1])
            complete = b"".join(self._buf)
            self._buf = []
        else:
            complete = data[: end + 1] if end + 1 < len(data) else data
        tail = data[end + 1 :]
        self._buffered = len(tail)
        if tail:
            self._buf.append(tail)
            if self._buffered > self.max_line_bytes:
                self._too_long(self._buffered)
        return self._parse(complete)

    def finish(self) -> list[dict[str, Any]]:
        """Parse what is left after the last newline (normally nothing)."""
        rest = b"".join(self._buf)
        self._buf = []
        self._buffered = 0
        if self.error is not None or not rest.strip():
            return []
        return self._parse(rest)

    def _too_long(self, size: int) -> None:
        if self.error is None:
            self.error = ProtocolError(
                f"a response line exceeded max_line_bytes={self.max_line_bytes} "
                f"({size} bytes so far); the server is not sending Ollama NDJSON"
            )
        self._buf = []
        self._buffered = 0

    def _parse(self, complete: bytes) -> list[dict[str, Any]]:
        limit = self.max_line_bytes
        check = len(complete) > limit
        out: list[dict[str, Any]] = []
        if _loads_bytes is not None:
            for line in complete.split(b"\n"):
                if not line or line.isspace():
                    continue
                if check and len(line) > limit:
                    self._too_long(len(line))
                    return out
                try:
                    if line.count(b"[") + line.count(b"{") >= MAX_DEPTH and too_deep(
                        line.decode("utf-8", "replace")
                    ):
                        raise RecursionError(f"nested deeper than {MAX_DEPTH} levels")
                    chunk = _loads_bytes(line)
                except _PARSE_ERRORS as exc:
                    self.error = _not_json(line, exc)
                    return out
                if not self._take(chunk, line, out):
                    return out
            return out
        try:
            text = complete.decode("utf-8")
        except UnicodeDecodeError:
            # Find the offending line, keeping every good one before it.
            for line in complete.split(b"\n"):
                try:
                    self._parse_text(line.decode("utf-8"), check, out)
                except UnicodeDecodeError as exc:
                    self.error = _not_json(line, exc)
                if self.error is not None:
                    break
            return out
        self._parse_text(text, check, out)
        return out

    def _parse_text(self, text: str, check: bool, out: list[dict[str, Any]]) -> None:
        limit = self.max_line_bytes
        loads = _loads_str
        for line in text.split("\n"):
            if not line or line.isspace():
                continue
            if check and len(line) > limit // 4 and len(line.encode()) > limit:
                self._too_long(len(line.encode()))
                return
            try:
                if too_deep(line):
                    raise RecursionError(f"nested deeper than {MAX_DEPTH} levels")
                chunk = loads(line)
            except _PARSE_ERRORS as exc:
                self.error = _not_json(line.encode(), exc)
                return
            if not self._take(chunk, line, out):
                return

    def _take(self, chunk: Any, line: bytes | str, out: list[dict[str, Any]]) -> bool:
        if type(chunk) is not dict:
            raw = line if isinstance(line, bytes) else line.encode()
            self.error = ProtocolError(
                f"response line is not a JSON object: {preview(raw)}"
            )
            return False
        if "error" in chunk:
            self.error = server_error(str(chunk["error"]), None)
            return False
        out.append(chunk)
        return True


def _not_json(line: bytes, exc: BaseException) -> ProtocolError:
    kind = "too deeply nested" if isinstance(exc, RecursionError) else "not JSON"
    error = ProtocolError(f"response line is {kind}: {preview(line)}")
    error.__cause__ = exc
    return error


def parse_object(data: bytes) -> dict[str, Any]:
    """Parse one whole JSON object (a non-streamed body).

    Raises:
        ProtocolError: it is not a JSON object.
        ServerError: it is Ollama's ``{"error": ...}``.
    """
    parser = LineParser(max(len(data) + 1, 1))
    chunks = parser.feed(data + b"\n")
    if parser.error is not None:
        raise parser.error
    if len(chunks) != 1:
        raise ProtocolError(f"expected one JSON object: {preview(data)}")
    return chunks[0]


def error_from_body(
    status_code: int,
    body: bytes,
    reason: str = "",
    retry_after: str | None = None,
    *,
    url: str | None = None,
    model: str | None = None,
) -> StreamError:
    """Build the error for a non-2xx response from its (possibly non-JSON) body."""
    message = ""
    fields: dict[str, Any] = {}
    try:
        text = body.decode("utf-8")
        data = None if too_deep(text) else json.loads(text)
    except (ValueError, RecursionError):
        data = None
    if isinstance(data, dict) and data.get("error"):
        message = str(data["error"])
        fields = data
    if not message:
        text = body.decode("utf-8", "replace").strip()
        message = _text_preview(text) if text else (reason or f"HTTP {status_code}")
    return error_for_status(
        message,
        status_code,
        retry_after=parse_retry_after(retry_after),
        fields=fields,
        url=url,
        model=model,
    )


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def preview(data: bytes, limit: int = 200) -> str:
    """A short, printable view of raw bytes for an error message."""
    text = data[:limit].decode("utf-8", "replace")
    return repr(text) + (f" … ({len(data)} bytes)" if len(data) > limit else "")


def _text_preview(text: str, limit: int = 500) -> str:
    """A non-JSON error body as readable text: whitespace folded, bounded."""
    folded = " ".join(text.split())
    return folded if len(folded) <= limit else folded[:limit] + " …"
