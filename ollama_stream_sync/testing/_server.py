"""A real loopback HTTP server that speaks Ollama's streaming API, scripted per test."""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

# -- script steps --------------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    """One streamed chunk; rendered as a chat or generate line by the endpoint."""

    content: str = ""
    thinking: str = ""
    tool_calls: Sequence[Mapping[str, Any]] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Done:
    """The final ``done: true`` chunk: counters, and optionally text and tool calls."""

    done_reason: str | None = "stop"
    content: str = ""
    thinking: str = ""
    tool_calls: Sequence[Mapping[str, Any]] = ()
    counters: Mapping[str, int] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Raw:
    """Bytes written as one line as they are (say, a line that is not JSON)."""

    data: bytes


@dataclass(frozen=True)
class ErrorLine:
    """Ollama's in-band ``{"error": ...}`` line; the server then closes the stream."""

    message: str


@dataclass(frozen=True)
class Status:
    """Answer with this status and body instead of a stream (must come first)."""

    code: int
    body: bytes | Mapping[str, Any] = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str = "application/json; charset=utf-8"


@dataclass(frozen=True)
class Delay:
    """Pause the server for this many seconds (pacing, never synchronisation)."""

    seconds: float


@dataclass(frozen=True)
class Stall:
    """Go silent until the client disconnects or ``FakeOllama.release()`` is called.

    Before any output it stalls before the response headers (a model loading).
    """


@dataclass(frozen=True)
class Cut:
    """Close the connection abruptly, mid-body."""


Step = Chunk | Done | Raw | ErrorLine | Status | Delay | Stall | Cut
Script = list[Step]


def _pieces(text: str) -> list[str]:
    """Split text into token-like pieces that keep their spaces."""
    out: list[str] = []
    for word in text.split(" "):
        out.append(word if not out else " " + word)
    return [p for p in out if p]


def tool_call(
    name: str,
    arguments: Mapping[str, Any] | None = None,
    *,
    index: int = 0,
    id: str = "",
) -> dict[str, Any]:
    """A tool call as Ollama streams it (``id`` and ``function.index`` included)."""
    return {
        "id": id or f"call_{name[:8]}{index:02d}",
        "function": {"index": index, "name": name, "arguments": dict(arguments or {})},
    }


def reply(
    content: str = "",
    *,
    thinking: str = "",
    tool_calls: Sequence[Mapping[str, Any]] = (),
    tools_on_done: bool = False,
    done_reason: str | None = "stop",
    mixed_switch: bool = False,
) -> Script:
    """A normal streamed answer: thinking pieces, content pieces, tool calls, done.

    Args:
        content: the answer, streamed word by word.
        thinking: the reasoning, streamed before the answer.
        tool_calls: whole tool calls (see ``tool_call``).
        tools_on_done: put the tool calls on the final chunk (as newer servers do).
        done_reason: the final ``done_reason``; ``None`` leaves the key out.
        mixed_switch: send the last thinking piece and the first content piece in
            one chunk, as Ollama does at the switch from reasoning to answer.
    """
    steps: Script = []
    think_parts, content_parts = _pieces(thinking), _pieces(content)
    if mixed_switch and think_parts and content_parts:
        last_think, first_content = think_parts.pop(), content_parts.pop(0)
        steps += [Chunk(thinking=t) for t in think_parts]
        steps.append(Chunk(thinking=last_think, content=first_content))
    else:
        steps += [Chunk(thinking=t) for t in think_parts]
    steps += [Chunk(content=c) for c in content_parts]
    if tool_calls and not tools_on_done:
        steps.append(Chunk(tool_calls=tuple(tool_calls)))
    steps.append(
        Done(
            done_reason=done_reason,
            tool_calls=tuple(tool_calls) if tools_on_done else (),
        )
    )
    return steps


def http_error(status: int, message: str, **headers: str) -> Script:
    """An error answered before any output, as Ollama does (``{"error": ...}``)."""
    return [Status(status, {"error": message}, headers=headers)]


# -- the server -------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake server received."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: Any


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        # Like Ollama (Go sets TCP_NODELAY by default): without it, Nagle holds
        # each line until the client's delayed ACK, ~40 ms on a reused connection.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.owner._connection_opened()

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.owner._connection_closed()

    def _send_json(self, code: int, data: Any, *, head: bool = False) -> None:
        body = json.dumps(data).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self._root(head=True)

    def _root(self, head: bool = False) -> None:
        body = b"Ollama is running"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def do_GET(self) -> None:
        owner = self.server.owner
        owner._record(RecordedRequest("GET", self.path, dict(self.headers), None))
        if self.path == "/":
            self._root()
        elif self.path == "/api/version":
            self._send_json(200, {"version": owner.version})
        elif self.path == "/api/tags":
            models = [{"name": m, "model": m, "size": 1} for m in owner.models]
            self._send_json(200, {"models": models})
        else:
            self._send_json(404, {"error": "404 page not found"})

    def do_POST(self) -> None:
        owner = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        owner._record(RecordedRequest("POST", self.path, dict(self.headers), body))
        if self.path not in ("/api/chat", "/api/generate"):
            self._send_json(404, {"error": "404 page not found"})
            return
        if not isinstance(body, dict) or not body.get("model"):
            self._send_json(400, {"error": "model is required"})
            return
        script = owner._next_script(self.path, body)
        _Stream(self, body, self.path == "/api/chat").play(script)


class _Stream:
    """Plays one script onto one response, chunked, one line per chunk."""

    def __init__(self, handler: _Handler, body: dict[str, Any], chat: bool) -> None:
        self.h = handler
        self.model = str(body.get("model"))
        self.chat = chat
        self.started = False
        self.outputs = 0
        self.t0 = time.monotonic_ns()

    def _headers(self) -> None:
        if not self.started:
            self.started = True
            self.h.send_response(200)
            self.h.send_header("Content-Type", "application/x-ndjson")
            self.h.send_header("Transfer-Encoding", "chunked")
            self.h.end_headers()

    def _line(self, data: bytes) -> None:
        self._headers()
        data += b"\n"
        self.h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _render(self, step: Chunk | Done) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": self.model,
            "created_at": "2026-01-01T00:00:00.000000Z",
        }
        if self.chat:
            message: dict[str, Any] = {"role": "assistant", "content": step.content}
            if step.thinking:
                message["thinking"] = step.thinking
            if step.tool_calls:
                message["tool_calls"] = [dict(c) for c in step.tool_calls]
            out["message"] = message
        else:
            out["response"] = step.content
            if step.thinking:
                out["thinking"] = step.thinking
            if step.tool_calls:
                out["tool_calls"] = [dict(c) for c in step.tool_calls]
        if step.content or step.thinking:
            self.outputs += 1
        out["done"] = isinstance(step, Done)
        if isinstance(step, Done):
            if step.done_reason is not None:
                out["done_reason"] = step.done_reason
            elapsed = max(1, time.monotonic_ns() - self.t0)
            out |= dict(
                step.counters
                or {
                    "total_duration": elapsed,
                    "load_duration": 1000,
                    "prompt_eval_count": 12,
                    "prompt_eval_duration": 2000,
                    "eval_count": self.outputs,
                    "eval_duration": elapsed,
                }
            )
            if not self.chat:
                out["context"] = [1, 2, 3]
        out |= dict(step.extra)
        return out

    def play(self, script: Iterable[Step]) -> None:
        h, owner = self.h, self.h.server.owner
        try:
            for step in script:
                if isinstance(step, Status):
                    self._status(step)
                    return
                if isinstance(step, (Chunk, Done)):
                    self._line(json.dumps(self._render(step)).encode())
                elif isinstance(step, Raw):
                    self._line(step.data)
                elif isinstance(step, ErrorLine):
                    self._line(json.dumps({"error": step.message}).encode())
                    break
                elif isinstance(step, Delay):
                    time.sleep(step.seconds)
                elif isinstance(step, Stall):
                    if owner._stall(h.connection):
                        h.close_connection = True
                        return
                elif isinstance(step, Cut):
                    h.close_connection = True
                    with contextlib.suppress(OSError):
                        h.connection.shutdown(socket.SHUT_RDWR)
                    return
            self._headers()
            h.wfile.write(b"0\r\n\r\n")
        except OSError:
            h.close_connection = True  # the client went away

    def _status(self, step: Status) -> None:
        body = step.body
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        h = self.h
        h.send_response(step.code)
        h.send_header("Content-Type", step.content_type)
        h.send_header("Content-Length", str(len(data)))
        for key, value in step.headers.items():
            h.send_header(key.replace("_", "-"), value)
        h.end_headers()
        h.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog is 5: a test that opens 16 streams at
    # once overflowed it, and each dropped SYN cost its client a retransmit
    # (1 s, then 3 s), which on a busy machine outlasted the tests' waits.
    request_queue_size = 128
    owner: FakeOllama

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hanging up mid-response is what the tests do; stay quiet."""


class FakeOllama:
    """An Ollama look-alike on loopback for tests and demos, scripted per request.

    Serves ``/api/chat``, ``/api/generate``, ``/api/tags``, ``/api/version`` and
    ``HEAD /``. Each chat or generate request plays the next queued script; with
    none queued it answers ``default_reply``.

    Example::

        with FakeOllama() as server:
            server.enqueue(reply("Hello there", thinking="Greet them."))
            client = StreamingClient(server.url)
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        models: Sequence[str] = ("fake-model",),
        version: str = "0.13.0-fake",
    ) -> None:
        self.models = list(models)
        self.version = version
        self.default_reply: Script = reply("Hello from the fake Ollama server.")
        self.requests: list[RecordedRequest] = []
        # Guards the queue, the request log, the counters and the stalled sockets.
        self._cond = threading.Condition()
        self._scripts: deque[Script] = deque()
        self._open = 0
        self._disconnects = 0
        self._stalled: dict[socket.socket, socket.socket] = {}
        self._httpd = _Server((host, port), _Handler)
        self._httpd.owner = self
        self._thread: threading.Thread | None = None

    # -- control --------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:54321``."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeOllama:
        """Serve on a background thread; returns self."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="fake-ollama",
                daemon=True,
            )
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and end every stalled response."""
        self.release()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> FakeOllama:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def enqueue(self, *scripts: Script) -> None:
        """Queue scripts; each chat or generate request plays the next one."""
        with self._cond:
            self._scripts.extend(list(s) for s in scripts)

    def release(self) -> None:
        """End every current ``Stall`` (the stream then goes on with its script)."""
        with self._cond:
            wakers = list(self._stalled.values())
        for waker in wakers:
            with contextlib.suppress(OSError):
                waker.send(b"x")

    # -- observations -----------------------------------------------------------

    @property
    def open_connections(self) -> int:
        """Client connections the server currently holds open."""
        with self._cond:
            return self._open

    @property
    def disconnects_seen(self) -> int:
        """How many stalled responses saw their client hang up."""
        with self._cond:
            return self._disconnects

    def wait_for(self, predicate: Any, timeout: float = 5.0) -> bool:
        """Wait until ``predicate(self)`` is true (re-checked on every server event)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def wait_stalled(self, count: int = 1, timeout: float = 5.0) -> bool:
        """Wait until ``count`` responses are stalled."""
        return self.wait_for(lambda s: len(s._stalled) >= count, timeout)

    def wait_closed(self, timeout: float = 5.0) -> bool:
        """Wait until no client connection is open."""
        return self.wait_for(lambda s: s._open == 0, timeout)

    def stream_requests(self) -> list[RecordedRequest]:
        """The chat and generate requests received so far."""
        with self._cond:
            return [r for r in self.requests if r.method == "POST"]

    # -- handler side -------------------------------------------------------------

    def _record(self, request: RecordedRequest) -> None:
        with self._cond:
            self.requests.append(request)
            self._cond.notify_all()

    def _next_script(self, path: str, body: dict[str, Any]) -> Script:
        with self._cond:
            if self._scripts:
                return self._scripts.popleft()
        if path == "/api/chat" and body.get("messages") == []:
            return [Done(done_reason="load", counters={})]
        return list(self.default_reply)

    def _connection_opened(self) -> None:
        with self._cond:
            self._open += 1
            self._cond.notify_all()

    def _connection_closed(self) -> None:
        with self._cond:
            self._open -= 1
            self._cond.notify_all()

    def _stall(self, conn: socket.socket) -> bool:
        """Block until release (False) or the client hangs up (True)."""
        wake_r, wake_w = socket.socketpair()
        with self._cond:
            self._stalled[conn] = wake_w
            self._cond.notify_all()
        try:
            readable, _, _ = select.select([conn, wake_r], [], [])
            if conn not in readable:
                return False
            try:
                data = conn.recv(1, socket.MSG_PEEK)
            except OSError:
                data = b""
            if data:
                return False  # the client sent something: not a hang-up
            with self._cond:
                self._disconnects += 1
                self._cond.notify_all()
            return True
        finally:
            with self._cond:
                self._stalled.pop(conn, None)
                self._cond.notify_all()
            wake_r.close()
            wake_w.close()


@contextlib.contextmanager
def serve(*scripts: Script) -> Iterator[FakeOllama]:
    """Start a ``FakeOllama`` with scripts queued, and stop it afterwards."""
    with FakeOllama() as server:
        server.enqueue(*scripts)
        yield server
