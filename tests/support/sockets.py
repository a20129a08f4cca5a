"""Loopback sockets that misbehave before any answer, and a wire reader.

``refused_url`` is a port that refuses connections (bound, never listening);
``unaccepting_port`` one whose accept queue is full, so a connect hangs. Each
holds its port until its block ends, so no other socket takes it meanwhile.

``Tarpit`` is a loopback TCP server that accepts connections and never writes a
byte: a TLS handshake with it never completes, and a plain request never gets a
status line. Use it to test what a client does while stuck before any answer
(cancel while the handshake or the request is stalled). It counts what it sees,
and tests wait on those counts, never on sleeps::

    with Tarpit() as tarpit:
        handle = client_for(tarpit.url("https")).start_chat("m", USER)
        assert tarpit.wait_for(lambda t: t.connections == 1)
        handle.cancel()
        assert tarpit.wait_for(lambda t: t.hangups == 1)

``raw_exchange`` sends one request over a plain socket and returns the response
as it was framed on the wire (each HTTP chunk apart), for tests of framing that
a client library would hide.
"""

from __future__ import annotations

import contextlib
import json
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from . import WAIT


@contextlib.contextmanager
def refused_url() -> Iterator[str]:
    """``http://127.0.0.1:<port>`` where a connect is refused at once: the port
    is bound, never listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@contextlib.contextmanager
def unaccepting_port() -> Iterator[int]:
    """A loopback port whose accept queue is full: connects hang (SYNs dropped)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = int(listener.getsockname()[1])
    fillers = []
    for _ in range(8):  # fill the queue; later connects wait in SYN_SENT
        filler = socket.socket()
        # A connect the queue has room for completes within the call on
        # loopback; the first one that does not is the queue being full.
        filler.settimeout(0.1)
        try:
            filler.connect(("127.0.0.1", port))
        except OSError:
            filler.close()
            break
        fillers.append(filler)
    try:
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


class Tarpit:
    """A loopback TCP server that accepts, reads and discards, and never writes.

    Counts ``connections`` accepted, ``hangups`` (a client closed or reset its
    end) and ``received`` bytes. One named daemon thread serves every
    connection with a poll selector; ``close()`` ends it and closes all.
    """

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self._wake_r, self._wake_w = socket.socketpair()
        self._cond = threading.Condition()
        self._conns: list[socket.socket] = []
        self.connections = 0
        self.hangups = 0
        self.received = 0
        self._thread = threading.Thread(target=self._run, name="tarpit", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        """The port it listens on (on 127.0.0.1)."""
        return int(self._listener.getsockname()[1])

    def url(self, scheme: str = "http") -> str:
        """``http://127.0.0.1:<port>``, or with another scheme (``"https"``)."""
        return f"{scheme}://127.0.0.1:{self.port}"

    def wait_for(
        self, predicate: Callable[[Tarpit], bool], timeout: float = WAIT
    ) -> bool:
        """Wait until ``predicate(self)`` holds (re-checked on every event)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def close(self) -> None:
        """Stop, close every connection, and join the thread."""
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        self._thread.join(WAIT)
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()

    def __enter__(self) -> Tarpit:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _run(self) -> None:
        with selectors.PollSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            try:
                while True:
                    for key, _ in selector.select():
                        sock = key.fileobj
                        if sock is self._wake_r:
                            return
                        if sock is self._listener:
                            self._accept(selector)
                        else:
                            assert isinstance(sock, socket.socket)
                            self._read(selector, sock)
            finally:
                for conn in self._conns:
                    conn.close()

    def _accept(self, selector: selectors.BaseSelector) -> None:
        conn, _ = self._listener.accept()
        selector.register(conn, selectors.EVENT_READ)
        with self._cond:
            self._conns.append(conn)
            self.connections += 1
            self._cond.notify_all()

    def _read(self, selector: selectors.BaseSelector, conn: socket.socket) -> None:
        try:
            data = conn.recv(65536)
        except OSError:
            data = b""
        with self._cond:
            if data:
                self.received += len(data)
            else:
                selector.unregister(conn)
                self._conns.remove(conn)
                conn.close()
                self.hangups += 1
            self._cond.notify_all()


@dataclass(frozen=True)
class WireResponse:
    """A response as framed on the wire: status, headers, and each HTTP chunk."""

    status: int
    headers: dict[str, str]
    chunks: list[bytes]
    """The body's chunks in order (one item, the whole body, if not chunked)."""

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


def raw_exchange(
    url: str, method: str, path: str, body: Any = None, timeout: float = WAIT
) -> WireResponse:
    """Send one request on a fresh plain socket (``Connection: close``), read it all.

    ``body`` is sent as JSON. Raises ``ConnectionError`` when the server closes
    before a status line.
    """
    parts = urlsplit(url)
    data = b"" if body is None else json.dumps(body).encode()
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(
        (parts.hostname, parts.port or 80), timeout=timeout
    ) as s:
        s.sendall(head + data)
        received = bytearray()
        while chunk := s.recv(65536):
            received += chunk
    if not received:
        raise ConnectionError("the server closed the connection before answering")
    header_blob, _, rest = bytes(received).partition(b"\r\n\r\n")
    status_line, *header_lines = header_blob.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() != "chunked":
        return WireResponse(int(status_line.split()[1]), headers, [rest])
    chunks = []
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        chunks.append(rest[:size])
        rest = rest[size + 2 :]
    return WireResponse(int(status_line.split()[1]), headers, chunks)
