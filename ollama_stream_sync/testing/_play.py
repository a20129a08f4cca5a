"""Plays one script onto one HTTP response: chunked NDJSON, or one JSON answer."""

from __future__ import annotations

import contextlib
import socket
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any, Protocol

from ._render import CHAT, GENERATE, Renderer, progress_line
from ._steps import (
    Body,
    Bytes,
    Chunk,
    ContentEncoding,
    Delay,
    Done,
    ErrorLine,
    Progress,
    Raw,
    Stall,
    Status,
    Step,
)
from ._wire import go_json

NDJSON = "application/x-ndjson"
JSON_UTF8 = "application/json; charset=utf-8"  # what gin's c.JSON sets
JSON_PLAIN = "application/json"  # what waitForStream sets before c.JSON


class Control(Protocol):
    """What a response needs from its server while it plays."""

    def _stall(self, conn: socket.socket) -> bool:
        """Wait for ``release()``; True when the client hung up or the server closes."""

    def _pause(self, seconds: float) -> bool:
        """Sleep ``seconds``; True when the server closes meanwhile."""


def _compressor(encoding: str | None) -> Any:
    """A zlib compressor for a ``Content-Encoding``, or None for a plain body."""
    if encoding == "gzip":
        return zlib.compressobj(wbits=31)
    if encoding == "deflate":
        return zlib.compressobj(wbits=15)  # HTTP "deflate" is the zlib format
    return None


def _header_name(key: str) -> str:
    """``Retry_After`` → ``Retry-After``: keyword arguments cannot hold dashes."""
    return key.replace("_", "-")


class Response:
    """Writes one HTTP response on a handler: a chunked stream or a whole body."""

    def __init__(self, handler: BaseHTTPRequestHandler, encoding: str | None) -> None:
        self.h = handler
        self.encoding = None if encoding == "identity" else encoding
        self.status: int | None = None  # the status line sent, once sent
        self._z: Any = None

    @property
    def started(self) -> bool:
        """Whether the status line and headers went out."""
        return self.status is not None

    def start(self, status: int = 200, content_type: str = NDJSON) -> None:
        """Send the headers of a chunked stream."""
        h = self.h
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        if self.encoding:
            h.send_header("Content-Encoding", self.encoding)
            self._z = _compressor(self.encoding)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        self.status = status

    def chunk(self, data: bytes) -> None:
        """Write ``data`` as one HTTP chunk (compressed and sync-flushed if encoded)."""
        if not self.started:
            self.start()
        if self._z is not None:
            data = self._z.compress(data) + self._z.flush(zlib.Z_SYNC_FLUSH)
        self.h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def end(self) -> None:
        """End the chunked body (after the compressor's tail, if any)."""
        if not self.started:
            self.start()
        tail = self._z.flush() if self._z is not None else b""
        last = b"%x\r\n%s\r\n" % (len(tail), tail) if tail else b""
        self.h.wfile.write(last + b"0\r\n\r\n")

    def whole(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: Mapping[str, str] | None = None,
        *,
        head: bool = False,
    ) -> None:
        """Answer a whole body with a ``Content-Length`` (encoded if set)."""
        z = _compressor(self.encoding)
        if z is not None:
            body = z.compress(body) + z.flush()
        h = self.h
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        if z is not None:
            h.send_header("Content-Encoding", str(self.encoding))
        h.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            h.send_header(_header_name(key), value)
        h.end_headers()
        self.status = status
        if not head:
            h.wfile.write(body)

    def json(self, status: int, data: Any, content_type: str = JSON_UTF8) -> None:
        """Answer one JSON object as Go writes it."""
        self.whole(status, go_json(data), content_type)

    def verbatim(self, step: Body) -> None:
        """Answer a ``Body`` step: its status, its headers, its bytes."""
        h = self.h
        h.send_response(step.status)
        names = {k.lower() for k in step.headers}
        for key, value in step.headers.items():
            h.send_header(key, value)
        if not names & {"content-length", "transfer-encoding"}:
            h.send_header("Content-Length", str(len(step.data)))
        else:
            h.close_connection = True  # the caller framed it: do not reuse
        h.end_headers()
        self.status = step.status
        h.wfile.write(step.data)


@dataclass
class Outcome:
    """What a played script did, for the server's model state."""

    status: int | None = None
    """The HTTP status answered; None when the connection ended first."""
    succeeded: bool = False
    """A ``Progress("success")`` line was sent (a pull or create finished)."""


def _misuse(step: Step, path: str) -> str:
    return (
        f"FakeOllama: {type(step).__name__} has no meaning in a non-streaming "
        f"answer on {path}; use Body(...) for an arbitrary body"
    )


class Player:
    """Plays one script for one request; ``play()`` returns what happened."""

    def __init__(
        self,
        handler: BaseHTTPRequestHandler,
        control: Control,
        path: str,
        body: Mapping[str, Any],
        encoding: str | None,
        *,
        on_output: Callable[[], None] | None = None,
    ) -> None:
        self.h = handler
        self._on_output = on_output
        self.control = control
        self.path = path
        self.body = body
        self.stream = body.get("stream") is not False  # true by default on the wire
        self.response = Response(handler, encoding)
        self.renderer = Renderer(path, str(body.get("model") or body.get("name")))
        self.outcome = Outcome()

    def play(self, script: Iterable[Step]) -> Outcome:
        """Play ``script``; a client that goes away just ends it."""
        try:
            if self.stream:
                self._stream(script)
            else:
                self._single(script)
        except OSError:
            self.h.close_connection = True  # the client went away
        self.outcome.status = self.response.status
        return self.outcome

    def _hang_up(self) -> None:
        """Close the connection without another byte (``Cut``)."""
        self.h.close_connection = True
        with contextlib.suppress(OSError):
            # The raw socket's shutdown: on TLS this sends no close_notify, as a
            # crashing server would not.
            socket.socket.shutdown(self.h.connection, socket.SHUT_RDWR)

    def _control(self, step: Step) -> bool:
        """Play a step that writes nothing; True when the response must end now."""
        if isinstance(step, ContentEncoding):
            self.response.encoding = (
                None if step.encoding == "identity" else step.encoding
            )
            return False
        if isinstance(step, Delay):
            ended = self.control._pause(step.seconds)
        elif isinstance(step, Stall):
            ended = self.control._stall(self.h.connection)
        else:  # Cut
            self._hang_up()
            return True
        if ended:
            self.h.close_connection = True
        return ended

    def _stream(self, script: Iterable[Step]) -> None:
        response = self.response
        for step in script:
            if isinstance(step, Status):
                self._status(step)
                return
            if isinstance(step, Body):
                response.verbatim(step)
                return
            if isinstance(step, (Chunk, Done)):
                if self._on_output is not None:
                    self._on_output()  # once: the model is answering
                    self._on_output = None
                response.chunk(go_json(self.renderer.chunk(step)) + b"\n")
            elif isinstance(step, Progress):
                response.chunk(go_json(progress_line(step)) + b"\n")
                self.outcome.succeeded |= step.status == "success"
            elif isinstance(step, Raw):
                response.chunk(step.data + b"\n")
            elif isinstance(step, Bytes):
                response.chunk(step.data)
            elif isinstance(step, ErrorLine):
                response.chunk(go_json({"error": step.message}) + b"\n")
                break
            elif self._control(step):
                return
        response.end()

    def _single(self, script: Iterable[Step]) -> None:
        """Collapse the script into one JSON answer, as for ``"stream": false``."""
        response = self.response
        inference = self.path in (CHAT, GENERATE)
        content_type = JSON_UTF8 if inference else JSON_PLAIN
        parts: list[dict[str, Any]] = []
        latest: dict[str, Any] = {"status": ""}  # Go's zero ProgressResponse
        for step in script:
            if isinstance(step, Status):
                self._status(step)
                return
            if isinstance(step, Body):
                response.verbatim(step)
                return
            if isinstance(step, ErrorLine):
                response.json(500, {"error": step.message}, content_type)
                return
            if isinstance(step, (Chunk, Done)) and inference:
                parts.append(self.renderer.chunk(step))
            elif isinstance(step, Progress) and not inference:
                latest = progress_line(step)
                self.outcome.succeeded |= step.status == "success"
            elif isinstance(step, (Chunk, Done, Progress, Raw, Bytes)):
                response.json(500, {"error": _misuse(step, self.path)}, content_type)
                return
            elif self._control(step):
                return
        if inference:
            tools = bool(self.body.get("tools"))
            response.json(200, self.renderer.collapse(parts, tools), content_type)
        else:
            response.json(200, latest, content_type)

    def _status(self, step: Status) -> None:
        body = step.body
        data = body if isinstance(body, bytes) else go_json(dict(body))
        self.response.whole(step.code, data, step.content_type, step.headers)
