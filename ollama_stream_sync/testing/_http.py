"""The HTTP layer: a loopback server that hands requests to an app, nothing of Ollama.

A daemon thread per connection (a forgotten server never keeps a test process
alive), ended and joined by ``close()``; waits use poll (no 1024-descriptor limit).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import selectors
import shutil
import socket
import socketserver
import ssl
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from ._wire import JSON_UTF8, NDJSON, go_json

# Windows has no poll, but no descriptor ceiling either.
_Selector = getattr(selectors, "PollSelector", selectors.SelectSelector)
_connections = itertools.count(1)


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake server received, as it arrived.

    Attributes:
        method: ``"GET"`` or ``"POST"`` (``HEAD`` requests are not recorded).
        path: the request target as sent, query string included.
        headers: the request headers, each name spelled as the client sent it
            (httpx, so the SDK, sends lower case); a repeated one keeps its last.
        body: a POST's parsed JSON body; ``{}`` when empty, None when not JSON,
            None for a GET.

    Example::

        (request,) = server.stream_requests()
        assert request.body["stream"] and request.headers["authorization"] == "k"
    """

    method: str
    path: str
    headers: Mapping[str, str]
    body: Any


App = Callable[["Handler", RecordedRequest, str], None]  # str: what is wrong with it
_WBITS = {"gzip": 31, "deflate": 15}  # HTTP "deflate" is the zlib format


class Response:
    """Writes one HTTP response on a handler: a chunked stream or a whole body."""

    def __init__(self, handler: Handler, encoding: str | None) -> None:
        self.h, self.encoding = handler, encoding
        self.status: int | None = None  # the status line sent, once sent
        self._z: Any = None

    def _compressor(self) -> Any:
        wbits = _WBITS.get(self.encoding or "")
        return None if wbits is None else zlib.compressobj(wbits=wbits)

    def _head(self, status: int, headers: Mapping[str, str]) -> None:
        self.h.send_response(status)
        for key, value in headers.items():
            self.h.send_header(key, value)
        self.h.end_headers()
        self.status = status

    def chunk(self, data: bytes, last: bool = False) -> None:
        """Write one HTTP chunk of NDJSON (sync-flushed if encoded); ``last`` ends."""
        if self.status is None:
            self._z = self._compressor()
            encoding = {"Content-Encoding": str(self.encoding)} if self._z else {}
            chunked = {"Transfer-Encoding": "chunked"}
            self._head(200, {"Content-Type": NDJSON, **encoding, **chunked})
        if self._z is not None:
            flush = zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH
            data = self._z.compress(data) + self._z.flush(flush)
        framed = b"%x\r\n%s\r\n" % (len(data), data) if data else b""
        self.h.wfile.write(framed + b"0\r\n\r\n" * last)

    def whole(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer a whole body with a ``Content-Length`` (encoded if set)."""
        z = self._compressor()
        body = z.compress(body) + z.flush() if z is not None else body
        fields = {"Content-Type": content_type}
        fields |= {"Content-Encoding": str(self.encoding)} if z is not None else {}
        fields["Content-Length"] = str(len(body))
        # Keyword arguments (``http_error``) hold no dashes: underscores stand in.
        fields |= {k.replace("_", "-"): v for k, v in (headers or {}).items()}
        self._head(status, fields)
        if self.h.command != "HEAD":  # the same headers, never a body
            self.h.wfile.write(body)

    def json(self, status: int, data: Any, content_type: str = JSON_UTF8) -> None:
        """Answer one JSON object as Go writes it."""
        self.whole(status, go_json(data), content_type)

    def verbatim(self, status: int, headers: Mapping[str, str], data: bytes) -> None:
        """Answer exactly these headers and bytes (``Content-Length`` if unframed)."""
        names = {k.lower() for k in headers}
        framed = bool(names & {"content-length", "transfer-encoding"})
        length = {} if framed else {"Content-Length": str(len(data))}
        self.h.close_connection |= framed  # the caller framed it: do not reuse
        self._head(status, {**headers, **length})
        self.h.wfile.write(data)

    def hang_up(self) -> None:
        """Close the connection without another byte."""
        self.h.close_connection = True
        with contextlib.suppress(OSError):  # no TLS close_notify, as in a crash
            socket.socket.shutdown(self.h.connection, socket.SHUT_RDWR)


class TLSMaterial:
    """A throwaway CA (trustme's), a certificate it signed, its file until removed."""

    def __init__(self, hosts: tuple[str, ...]) -> None:
        try:
            import trustme  # noqa: PLC0415  # optional: only TLS tests need it
        except ImportError as exc:
            raise ImportError(
                "FakeOllama(tls=True) needs trustme: "
                "pip install 'ollama-stream-sync[test]' (or pip install trustme)"
            ) from exc
        self._ca: Any = trustme.CA()
        self.server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._ca.issue_cert(*hosts).configure_cert(self.server_context)
        self._dir = tempfile.mkdtemp(prefix="fake-ollama-tls-")
        self.ca_file = os.path.join(self._dir, "ca.pem")
        self._ca.cert_pem.write_to_path(self.ca_file)

    def client_context(self) -> ssl.SSLContext:
        """A new client context that trusts the CA (and verifies the host name)."""
        context = ssl.create_default_context()
        self._ca.configure_trust(context)
        return context

    def remove(self) -> None:
        """Delete the CA file and its directory."""
        shutil.rmtree(self._dir, ignore_errors=True)


def _hung_up(conn: socket.socket) -> bool | None:
    """Why a stalled connection became readable: hang-up (True), data (False), or
    a partial TLS record (None). On TLS a byte is read, not peeked: a pipelined
    request may lose it, as a test allows."""
    conn.setblocking(False)
    try:
        if isinstance(conn, ssl.SSLSocket):
            return conn.recv(1) == b""  # close_notify or EOF: the end
        return conn.recv(1, socket.MSG_PEEK) == b""
    except (ssl.SSLWantReadError, BlockingIOError):
        return None
    except OSError:
        return True  # reset
    finally:
        conn.setblocking(True)


class Handler(BaseHTTPRequestHandler):
    """One client connection: parses each request and hands it to the app."""

    protocol_version = "HTTP/1.1"
    server: LoopbackServer

    def log_message(self, *_: Any) -> None:
        """Quiet: tests read what they need from the recorded requests."""

    def setup(self) -> None:
        conn = self.request
        if isinstance(conn, ssl.SSLSocket):
            conn.do_handshake()  # here, on this thread: a stalled client stalls only it
        # Like Ollama (Go sets TCP_NODELAY by default): without it, Nagle holds
        # each line until the client's delayed ACK, ~40 ms on a reused connection.
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().setup()

    def send_response(self, code: int, message: str | None = None) -> None:
        """The status line and ``Date``; no ``Server`` line, as Go's net/http."""
        self.log_request(code)
        self.send_response_only(code, message)
        self.send_header("Date", self.date_time_string())

    def _read_body(self) -> bytes:
        """The request body, by ``Content-Length`` or chunked."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            while size := int(self.rfile.readline(65537).split(b";")[0].strip(), 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_GET(self) -> None:
        self._serve(None, "")

    do_HEAD = do_GET

    def do_POST(self) -> None:
        raw = self._read_body()
        try:  # an empty body is recorded as {}
            body = json.loads(raw) if raw.strip() else {}
        except ValueError as exc:
            self._serve(None, f"invalid request body: {exc}")
        else:
            self._serve(body, "" if raw.strip() else "missing request body")

    def _serve(self, body: Any, problem: str) -> None:
        request = RecordedRequest(self.command, self.path, dict(self.headers), body)
        self.server.serve(self, request, problem)


class LoopbackServer(socketserver.TCPServer):
    """Listens, gives each connection a thread, lets responses stall or pause.

    Its counters live under the owner's ``cond``, notified on every change."""

    allow_reuse_address = True  # not HTTPServer: its bind looks the name up (DNS)
    # Go's net.Listen (so Ollama) uses the system's limit; socketserver's 5 lets
    # a burst of concurrent connects overflow the accept queue, which with SYN
    # cookies can end in a reset on a busy machine.
    request_queue_size = socket.SOMAXCONN

    def __init__(
        self,
        address: tuple[str, int],
        tls: ssl.SSLContext | None,
        cond: threading.Condition,
        app: App,
        requests: list[RecordedRequest],
    ) -> None:
        self.tls, self.cond, self.app, self.requests = tls, cond, app, requests
        self.open = self.disconnects = 0
        self.in_flight: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self.stalled: dict[socket.socket, socket.socket] = {}
        self._conns: dict[socket.socket, threading.Thread] = {}
        self._closing = threading.Event()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)
        self._thread = threading.Thread(
            target=self.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-ollama",
            daemon=True,
        )
        self._thread.start()

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, address = self.socket.accept()
        if self.tls is not None:
            # The handshake happens on the connection's own thread (see setup).
            conn = self.tls.wrap_socket(
                conn, server_side=True, do_handshake_on_connect=False
            )
        return conn, address

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve one accepted connection on its own thread."""
        with self.cond:
            if self._closing.is_set():
                self.shutdown_request(request)
                return
            thread = threading.Thread(
                target=self._serve_connection,
                args=(request, client_address),
                name=f"fake-ollama-conn-{next(_connections)}",
                daemon=True,
            )
            self._conns[request] = thread  # before it runs, so close() can end it
            self.open += 1
            self.cond.notify_all()
        thread.start()

    def _serve_connection(self, conn: socket.socket, address: Any) -> None:
        try:
            self.finish_request(conn, address)
        except Exception:  # noqa: BLE001, S110  # hang-ups, failed handshakes: expected
            pass
        finally:
            self.shutdown_request(conn)
            with self.cond:
                self._conns.pop(conn, None)
                self.open -= 1
                self.cond.notify_all()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: clients hanging up mid-response is what the tests do."""

    def serve(self, handler: Handler, request: RecordedRequest, problem: str) -> None:
        """Record a request, count it in flight while the app answers it."""
        path = request.path.split("?", 1)[0]
        with self.cond:
            if request.method != "HEAD":
                self.requests.append(request)
            self.in_flight[path] += 1
            self.peak[path] = max(self.peak[path], self.in_flight[path])
            self.cond.notify_all()
        try:
            self.app(handler, request, problem)
        finally:
            with self.cond:
                self.in_flight[path] -= 1
                self.cond.notify_all()

    def stall(self, conn: socket.socket) -> bool:
        """Block until ``release()`` (False), or a hang-up or ``close()`` (True)."""
        wake_r, wake_w = socket.socketpair()
        try:
            with self.cond:
                if self._closing.is_set():
                    return True
                self.stalled[conn] = wake_w
                self.cond.notify_all()
            with _Selector() as selector:
                selector.register(conn, selectors.EVENT_READ)
                selector.register(wake_r, selectors.EVENT_READ)
                while True:
                    ready = {key.fileobj for key, _ in selector.select()}
                    if wake_r in ready:
                        return self._closing.is_set()
                    verdict = _hung_up(conn)
                    if verdict:
                        with self.cond:
                            self.disconnects += 1
                    if verdict is not None:
                        return verdict
        finally:
            with self.cond:
                self.stalled.pop(conn, None)
                self.cond.notify_all()
            wake_r.close()
            wake_w.close()

    def pause(self, seconds: float) -> bool:
        """Sleep for a ``Delay``; True if the server closes meanwhile."""
        return self._closing.wait(seconds)

    def release(self) -> None:
        """End every current stall."""
        with self.cond:
            wakers = list(self.stalled.values())
        for waker in wakers:
            with contextlib.suppress(OSError):
                waker.send(b"x")

    def close(self, timeout: float) -> None:
        """Stop serving, end every response and connection, join the threads."""
        self._closing.set()
        self.release()
        with contextlib.suppress(OSError):  # wakes the accept loop at once
            socket.socket.shutdown(self.socket, socket.SHUT_RDWR)
        self.shutdown()  # returns once serve_forever has stopped
        self.server_close()
        with self.cond:
            conns = list(self._conns.items())
        for conn, _ in conns:
            with contextlib.suppress(OSError):  # wakes a read, write or handshake
                socket.socket.shutdown(conn, socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for thread in [self._thread, *(t for _, t in conns)]:
            thread.join(max(0.0, deadline - time.monotonic()))
