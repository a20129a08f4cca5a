"""A tiny raw-socket HTTP/1.1 server on loopback that plays scripted bytes.

``FakeOllama`` speaks Ollama's protocol properly; this one misbehaves on
purpose, byte by byte: gzip bodies, bytes after the ``done`` line, a reset or
a silence after it, bytes trickled before any output, a gate that holds many
responses open at once. Each request plays the next queued script on a real
socket, so the real SDK, httpx and requests stacks read it. Nothing leaves
127.0.0.1. Every wait is event-driven (``wait_for`` re-checks on each server
event) and bounded.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

# -- script steps ------------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    """Write these bytes as they are."""

    data: bytes


class Latch:
    """A one-way gate many server threads can poll: once set, it stays set.

    A socketpair whose read end is never read: after ``set()`` it polls
    readable for every waiter at once.
    """

    def __init__(self) -> None:
        self._r, self._w = socket.socketpair()

    def set(self) -> None:
        with contextlib.suppress(OSError):
            self._w.send(b"x")

    def fileno(self) -> int:
        return self._r.fileno()

    def close(self) -> None:
        self._r.close()
        self._w.close()


@dataclass(frozen=True)
class Gate:
    """Wait until ``latch`` is set (counted in ``gated``); a hang-up ends the script."""

    latch: Latch


@dataclass(frozen=True)
class Notify:
    """Set ``event``: the steps before it were played (written to the socket)."""

    event: threading.Event


@dataclass(frozen=True)
class Hold:
    """Go silent until the client hangs up (counted in ``hangups``)."""


@dataclass(frozen=True)
class Trickle:
    """Write ``data`` every ``every`` seconds (pacing) until the client hangs up."""

    data: bytes
    every: float = 0.02


@dataclass(frozen=True)
class Pause:
    """Pause this many seconds: pacing, like a model thinking; never synchronisation."""

    seconds: float


@dataclass(frozen=True)
class Reset:
    """Abort the connection: the client's next read gets ``ECONNRESET``."""


@dataclass(frozen=True)
class Close:
    """Close the connection (a FIN), whatever the response framing said."""


Step = Send | Gate | Notify | Hold | Trickle | Pause | Reset | Close
Script = list[Step]
"""One response. A script that ends without ``Close``/``Reset`` keeps the
connection open for the next request (HTTP keep-alive)."""


# -- response builders ---------------------------------------------------------------


def head(
    status: int = 200,
    headers: dict[str, str] | None = None,
    *,
    reason: str = "OK",
) -> bytes:
    """A status line and headers (chunked NDJSON unless told otherwise)."""
    fields = {"Content-Type": "application/x-ndjson", "Transfer-Encoding": "chunked"}
    fields.update(headers or {})
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{k}: {v}" for k, v in fields.items() if v]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (empty data would end the body: not allowed)."""
    assert data, "an empty chunk ends the body: use END"
    return b"%x\r\n%s\r\n" % (len(data), data)


END = b"0\r\n\r\n"
"""The last chunk of a chunked body."""


def line(
    content: str = "",
    *,
    thinking: str | None = None,
    done: bool = False,
    **extra: Any,
) -> bytes:
    """One /api/chat NDJSON line, newline included."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if thinking is not None:
        message["thinking"] = thinking
    obj: dict[str, Any] = {
        "model": "m",
        "created_at": "2026-01-01T00:00:00Z",
        "message": message,
        "done": done,
    }
    if done:
        obj |= {"done_reason": "stop", "eval_count": 2, "prompt_eval_count": 1}
    obj |= extra
    return json.dumps(obj).encode() + b"\n"


def answer(*contents: str) -> bytes:
    """The NDJSON lines of a whole answer: one line per content piece, then done."""
    return b"".join(line(c) for c in contents) + line(done=True)


def chunked_response(body: bytes, headers: dict[str, str] | None = None) -> bytes:
    """A whole 200 response: headers, ``body`` as one chunk, the last chunk."""
    return head(headers=headers) + chunk(body) + END


class Compressor:
    """gzip or deflate, flushed per piece so each line can be decoded on arrival."""

    def __init__(self, encoding: str) -> None:
        wbits = {"gzip": 31, "deflate": 15, "raw-deflate": -15}[encoding]
        self._obj = zlib.compressobj(9, zlib.DEFLATED, wbits)

    def piece(self, data: bytes) -> bytes:
        return self._obj.compress(data) + self._obj.flush(zlib.Z_SYNC_FLUSH)

    def end(self) -> bytes:
        return self._obj.flush()


def gzip_bomb(decoded_size: int, block: bytes = b"a" * (1 << 20)) -> bytes:
    """A gzip member that inflates to ``decoded_size`` bytes of one long line."""
    obj = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = []
    for _ in range(decoded_size // len(block)):
        parts.append(obj.compress(block))
    parts.append(obj.flush())
    return b"".join(parts)


# -- the server ------------------------------------------------------------------------


@dataclass
class Request:
    """One request the server read."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""
    connection: int = 0
    """Which accepted connection (1, 2...) carried it."""

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class _Conn:
    sock: socket.socket
    number: int
    buffer: bytes = b""
    closed: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class Hostile:
    """A loopback HTTP/1.1 server that plays one scripted byte sequence per request.

    Example::

        with Hostile() as srv:
            srv.enqueue([Send(chunked_response(answer("hi"))), Reset()])
            client = StreamingClient(srv.url)
    """

    def __init__(self, default: Script | None = None) -> None:
        self.default: Script = default or [Send(chunked_response(answer("hello")))]
        self.requests: list[Request] = []
        self.connections = 0
        """Connections accepted so far."""
        self.hangups = 0
        """Times a client hung up while the server held or trickled a response."""
        self.gated = 0
        """Responses waiting at a ``Gate`` now."""
        self.open = 0
        """Connections open now."""
        self._cond = threading.Condition()
        self._scripts: deque[Script] = deque()
        self._closing = False
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(1024)
        self._wake_r, self._wake_w = socket.socketpair()
        self._threads: list[threading.Thread] = []
        self._latches: list[Latch] = []
        self._accepter = threading.Thread(
            target=self._accept, name="hostile-accept", daemon=True
        )

    # -- control -------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Hostile:
        self._accepter.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        if self._accepter.ident is not None:
            self._accepter.join(5)
        for thread in list(self._threads):
            thread.join(5)
        self._wake_r.close()
        self._wake_w.close()
        for latch in self._latches:
            latch.close()

    def latch(self) -> Latch:
        """A new ``Latch``, closed with the server (after its threads ended)."""
        latch = Latch()
        self._latches.append(latch)
        return latch

    def enqueue(self, *scripts: Script) -> None:
        with self._cond:
            self._scripts.extend(list(s) for s in scripts)

    def wait_for(self, predicate: Callable[[Hostile], bool], timeout: float) -> bool:
        """Wait until ``predicate(self)`` holds, re-checked on every server event."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def stream_requests(self) -> list[Request]:
        with self._cond:
            return [r for r in self.requests if r.method == "POST"]

    # -- serving -----------------------------------------------------------------------

    def _event(self, **changes: int) -> None:
        with self._cond:
            for name, delta in changes.items():
                setattr(self, name, getattr(self, name) + delta)
            self._cond.notify_all()

    def _accept(self) -> None:
        number = 0
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            number += 1
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._event(connections=1, open=1)
            thread = threading.Thread(
                target=self._serve,
                args=(_Conn(sock, number),),
                name=f"hostile-conn-{number}",
                daemon=True,
            )
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: _Conn) -> None:
        try:
            while not conn.closed:
                request = self._read_request(conn)
                if request is None:
                    return
                with self._cond:
                    self.requests.append(request)
                    script = self._scripts.popleft() if self._scripts else self.default
                    self._cond.notify_all()
                self._play(conn, script)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                conn.sock.close()
            self._event(open=-1)

    def _recv(self, conn: _Conn) -> bytes:
        if not self._wait_readable(conn, None):
            return b""
        return conn.sock.recv(65536)

    def _read_request(self, conn: _Conn) -> Request | None:
        while b"\r\n\r\n" not in conn.buffer:
            data = self._recv(conn)
            if not data:
                return None
            conn.buffer += data
        raw_head, conn.buffer = conn.buffer.split(b"\r\n\r\n", 1)
        first, *header_lines = raw_head.decode("latin-1").split("\r\n")
        method, path, _ = first.split(" ", 2)
        headers = {}
        for header in header_lines:
            key, _, value = header.partition(":")
            headers[key.strip().lower()] = value.strip()
        length = int(headers.get("content-length") or 0)
        while len(conn.buffer) < length:
            data = self._recv(conn)
            if not data:
                return None
            conn.buffer += data
        body, conn.buffer = conn.buffer[:length], conn.buffer[length:]
        return Request(method, path, headers, body, conn.number)

    def _wait_readable(self, conn: _Conn, timeout: float | None) -> bool:
        """Wait until the client sent something or hung up (True), or timeout.

        ``poll``, not ``select``: no limit on descriptor numbers. Raises
        ``OSError`` when the server is closing.
        """
        poller = select.poll()
        mask = select.POLLIN | select.POLLHUP | select.POLLERR
        poller.register(conn.sock, mask)
        poller.register(self._wake_r, select.POLLIN)
        events = poller.poll(None if timeout is None else timeout * 1000)
        if any(fd == self._wake_r.fileno() for fd, _ in events):
            raise OSError("server closing")
        return bool(events)

    def _hung_up(self, conn: _Conn) -> bool:
        try:
            return conn.sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _play(self, conn: _Conn, script: Iterable[Step]) -> None:
        sock = conn.sock
        for step in script:
            if isinstance(step, Send):
                sock.sendall(step.data)
            elif isinstance(step, Gate):
                if not self._gate(conn, step.latch):
                    return
            elif isinstance(step, Notify):
                step.event.set()
            elif isinstance(step, Hold):
                while not (self._wait_readable(conn, None) and self._hung_up(conn)):
                    sock.recv(65536)  # data while silent: not a hang-up, dropped
                self._hang_up(conn)
                return
            elif isinstance(step, Trickle):
                while True:
                    if self._wait_readable(conn, step.every) and self._hung_up(conn):
                        self._hang_up(conn)
                        return
                    try:
                        sock.sendall(step.data)
                    except OSError:
                        self._hang_up(conn)
                        return
            elif isinstance(step, Pause):
                time.sleep(step.seconds)
            elif isinstance(step, Reset):
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                conn.closed = True
                return
            elif isinstance(step, Close):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                conn.closed = True
                return

    def _hang_up(self, conn: _Conn) -> None:
        conn.closed = True
        self._event(hangups=1)

    def _gate(self, conn: _Conn, latch: Latch) -> bool:
        """Wait for ``latch``; False if the client hung up first."""
        self._event(gated=1)
        watch = True  # the client's socket, until it sends data (not a hang-up)
        try:
            while True:
                poller = select.poll()
                if watch:
                    poller.register(conn.sock, select.POLLIN | select.POLLHUP)
                poller.register(latch, select.POLLIN)
                poller.register(self._wake_r, select.POLLIN)
                ready = {fd for fd, _ in poller.poll()}
                if self._wake_r.fileno() in ready:
                    return False
                if conn.sock.fileno() in ready:
                    if self._hung_up(conn):
                        self._hang_up(conn)
                        return False
                    watch = False
                if latch.fileno() in ready:
                    return True
        finally:
            self._event(gated=-1)
