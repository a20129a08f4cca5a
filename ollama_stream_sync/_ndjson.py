"""NDJSON framing and chunk validation, shared by every transport.

Ollama streams one JSON object per line. Network reads cut lines anywhere, so
``LineSplitter`` reassembles them (bounded, so a runaway line cannot eat memory)
and ``parse_line`` turns one line into a chunk dict or a typed error.
"""

from __future__ import annotations

import email.utils
import json
import time
from typing import Any

from ._errors import ProtocolError, StreamError, server_error

DEFAULT_MAX_LINE_BYTES = 8 * 1024 * 1024
"""A chunk is normally under a kilobyte; a line past this is not Ollama talking."""


class LineSplitter:
    """Split a byte stream into lines, bounded by ``max_line_bytes``.

    Linear in the input: a line cut across many reads is joined once, when its
    newline arrives.
    """

    __slots__ = ("_buf", "_buffered", "max_line_bytes")

    def __init__(self, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        self.max_line_bytes = max_line_bytes
        self._buf: list[bytes] = []
        self._buffered = 0

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; return the complete, non-blank lines they finish."""
        if b"\n" not in data:
            if data:
                self._buf.append(data)
                self._buffered += len(data)
                self._check(self._buffered)
            return []
        lines = data.split(b"\n")
        if self._buf:
            self._buf.append(lines[0])
            lines[0] = b"".join(self._buf)
            self._buf = []
        tail = lines.pop()
        self._buffered = len(tail)
        if tail:
            self._buf.append(tail)
        limit = self.max_line_bytes
        out = []
        for line in lines:
            if len(line) > limit:
                self._check(len(line))
            if line.strip():
                out.append(line)
        self._check(self._buffered)
        return out

    def finish(self) -> bytes:
        """Return what is left after the last newline (normally nothing)."""
        rest = b"".join(self._buf)
        self._buf = []
        self._buffered = 0
        return rest if rest.strip() else b""

    def _check(self, size: int) -> None:
        if size > self.max_line_bytes:
            raise ProtocolError(
                f"a response line exceeded max_line_bytes={self.max_line_bytes} "
                f"({size} bytes so far); the server is not sending Ollama NDJSON"
            )


def parse_line(line: bytes) -> dict[str, Any]:
    """Decode one NDJSON line into a chunk, or raise the matching typed error.

    Raises:
        ServerError: the line is Ollama's in-band ``{"error": ...}``.
        ProtocolError: the line is not a JSON object.
    """
    try:
        chunk = json.loads(line)
    except ValueError as exc:
        raise ProtocolError(f"response line is not JSON: {_preview(line)}") from exc
    if not isinstance(chunk, dict):
        raise ProtocolError(f"response line is not a JSON object: {_preview(line)}")
    if "error" in chunk:
        raise server_error(str(chunk["error"]), None)
    return chunk


def error_from_body(
    status_code: int, body: bytes, reason: str = "", retry_after: str | None = None
) -> StreamError:
    """Build the error for a non-2xx response from its (possibly non-JSON) body."""
    message = ""
    try:
        data = json.loads(body)
        if isinstance(data, dict) and data.get("error"):
            message = str(data["error"])
    except ValueError:
        pass
    if not message:
        text = body.decode("utf-8", "replace").strip()
        message = _preview(body) if text else (reason or f"HTTP {status_code}")
    return server_error(
        message, status_code, retry_after=parse_retry_after(retry_after)
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


def _preview(data: bytes, limit: int = 200) -> str:
    text = data[:limit].decode("utf-8", "replace")
    return repr(text) + (f" … ({len(data)} bytes)" if len(data) > limit else "")
