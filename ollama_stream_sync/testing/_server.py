"""A real loopback HTTP server that speaks Ollama's API, scripted per test.

One thread accepts; each connection gets its own named daemon thread (daemon so a
forgotten server never keeps a test process alive; ``close()`` still ends and
joins every one). Waits use ``selectors`` (poll), never ``select.select``, so the
server works in a process with more than 1024 open files.
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import json
import selectors
import socket
import socketserver
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import TracebackType
from typing import Any

from . import _models as models_
from ._play import JSON_UTF8, Outcome, Player, Response
from ._render import CHAT, GENERATE, load_answer
from ._steps import ErrorLine as _ErrorLine
from ._steps import Progress as _Progress
from ._steps import (
    Script,
    Step,
    check_script,
    create_script,
    pull_not_found_script,
    pull_script,
    push_script,
    reply,
)
from ._wire import go_json, keep_alive_seconds, now_utc

PULL = "/api/pull"
PUSH = "/api/push"
CREATE = "/api/create"
SHOW = "/api/show"
SCRIPTED = {
    "chat": CHAT,
    "generate": GENERATE,
    "pull": PULL,
    "push": PUSH,
    "create": CREATE,
}
"""The endpoints that play scripts, by the short names ``enqueue`` takes."""

_Selector: type[selectors.BaseSelector] = getattr(
    selectors, "PollSelector", selectors.SelectSelector
)  # poll has no 1024-descriptor ceiling; Windows has no poll, but no ceiling either
_connections = itertools.count(1)


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake server received, as it arrived.

    ``body`` is the parsed JSON (None when it was not JSON; ``None`` for GET).
    ``headers`` keep the client's spelling of each name (httpx, so the SDK,
    sends them in lower case).

    Example::

        (request,) = server.stream_requests()
        assert request.path == "/api/chat" and request.body["stream"] is True
        assert request.headers["authorization"] == "Bearer key"
    """

    method: str
    path: str
    headers: Mapping[str, str]
    body: Any


def _hung_up(conn: socket.socket) -> bool | None:
    """Why a stalled connection became readable: hang-up (True), data (False).

    None means a partial TLS record arrived: wait for the rest.
    """
    try:
        # The raw socket's recv, even on TLS: peeking needs no TLS record.
        data = socket.socket.recv(conn, 1, socket.MSG_PEEK)
    except OSError:
        return True  # reset
    if not data:
        return True
    if not isinstance(conn, ssl.SSLSocket):
        return False  # the client sent something: not a hang-up
    # A TLS record arrived: a close_notify alert reads as the end of the stream.
    # Application data here would be a pipelined request; losing one byte of it
    # is acceptable for a test server.
    conn.setblocking(False)
    try:
        return conn.recv(1) == b""
    except ssl.SSLWantReadError:
        return None
    except OSError:
        return True
    finally:
        conn.setblocking(True)


class _Handler(BaseHTTPRequestHandler):
    """One client connection: parses requests and answers them like Ollama."""

    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read what they need from ``requests``."""

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

    @property
    def owner(self) -> FakeOllama:
        return self.server.owner

    def _response(self) -> Response:
        return Response(self, self.owner.content_encoding)

    def _read_body(self) -> bytes:
        """The request body, by ``Content-Length`` or chunked."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline(65537).split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    # -- GET and HEAD ----------------------------------------------------------------

    def do_HEAD(self) -> None:
        self._get(head=True)

    def do_GET(self) -> None:
        self.owner._record(RecordedRequest("GET", self.path, dict(self.headers), None))
        self._get(head=False)

    def _get(self, head: bool) -> None:
        owner = self.owner
        path = self.path.split("?", 1)[0]
        response = self._response()
        if path == "/":
            text = b"Ollama is running"
            response.whole(200, text, "text/plain; charset=utf-8", head=head)
            return
        if path == "/api/version":
            data: Any = {"version": owner.version}
        elif path == "/api/tags":
            data = {"models": owner._tags()}
        elif path == "/api/ps" and not head:
            data = {"models": owner._ps()}
        else:
            response.whole(404, go_json({"error": "404 page not found"}), JSON_UTF8)
            return
        response.whole(200, go_json(data), JSON_UTF8, head=head)

    # -- POST --------------------------------------------------------------------------

    def do_POST(self) -> None:
        owner = self.owner
        raw = self._read_body()
        body: Any = {}  # recorded as {} when empty, as it always was
        problem = "" if raw.strip() else "missing request body"
        try:
            body = json.loads(raw) if raw.strip() else body
        except ValueError as exc:
            body, problem = None, f"invalid request body: {exc}"
        owner._record(RecordedRequest("POST", self.path, dict(self.headers), body))
        path = self.path.split("?", 1)[0]
        response = self._response()
        if path not in (*SCRIPTED.values(), SHOW):
            response.json(404, {"error": "404 page not found"})
            return
        if problem or not isinstance(body, dict):
            # Each handler's ShouldBindJSON: io.EOF, or a decoding error.
            response.json(400, {"error": problem or "invalid request body"})
            return
        if path in (CHAT, GENERATE):
            self._inference(path, body, response)
        elif path == SHOW:
            self._show(body, response)
        else:
            self._progress(path, body, response)

    def _play(
        self,
        path: str,
        body: dict[str, Any],
        script: Sequence[Step],
        on_output: Callable[[], None] | None = None,
    ) -> Outcome:
        owner = self.owner
        player = Player(
            self, owner, path, body, owner.content_encoding, on_output=on_output
        )
        return player.play(script)

    def _inference(self, path: str, body: dict[str, Any], response: Response) -> None:
        owner = self.owner
        model = body.get("model")
        if not model or not isinstance(model, str):
            response.json(400, {"error": "model is required"})
            return
        script = owner._next_script(path, body)
        keep_alive = body.get("keep_alive")
        if script is None:
            empty = not body.get("messages") if path == CHAT else not body.get("prompt")
            if empty:
                unload = keep_alive is not None and keep_alive_seconds(keep_alive) == 0
                reason = "unload" if unload else "load"
                response.json(200, load_answer(path, model, reason))
                owner._note_loaded(model, body)
                return
            script = list(owner.default_reply)
        # Ollama lists the model while it generates: from its first output on.
        outcome = self._play(
            path,
            body,
            script,
            on_output=lambda: owner._note_loaded(model, body, answering=True),
        )
        if outcome.status == 200:
            owner._note_loaded(model, body)

    def _show(self, body: dict[str, Any], response: Response) -> None:
        name = body.get("model") or body.get("name")
        if not name or not isinstance(name, str):
            response.json(400, {"error": "model is required"})
            return
        record = self.owner._show(name)
        if record is None:
            shortest = models_.ModelName.parse(name).display_shortest()
            response.json(404, {"error": f"model '{shortest}' not found"})
            return
        response.json(200, record)

    def _progress(self, path: str, body: dict[str, Any], response: Response) -> None:
        owner = self.owner
        name = body.get("model") or body.get("name")
        if not name or not isinstance(name, str):
            # PushHandler says "model is required"; pull and create fail to
            # parse the empty name.
            message = "model is required" if path == PUSH else "invalid model name"
            response.json(400, {"error": message})
            return
        script = owner._next_script(path, body)
        if script is None:
            script = owner._default_progress(path, name, body)
            if script is None:
                # CreateHandler: neither `from` nor `files`, before any output.
                text = "neither 'from' or 'files' was specified"
                response.json(400, {"error": text}, "application/json")
                return
        outcome = self._play(path, body, script)
        if outcome.succeeded and path == PULL:
            owner._add_model(name)
        elif outcome.succeeded and path == CREATE:
            base = body.get("from")
            if isinstance(base, str) and base and owner._is_pullable(base):
                owner._add_model(base)  # a create from a missing base pulls it first
            owner._add_model(name, body)


class _Server(HTTPServer):
    """The listening socket: accepts, wraps TLS, hands each connection a thread."""

    allow_reuse_address = True
    # Go's net.Listen (so Ollama) uses the system's limit; socketserver's 5 lets
    # a burst of concurrent connects overflow the accept queue, which with SYN
    # cookies can end in a reset on a busy machine.
    request_queue_size = socket.SOMAXCONN

    def __init__(
        self,
        owner: FakeOllama,
        address: tuple[str, int],
        tls: ssl.SSLContext | None,
    ) -> None:
        self.owner = owner
        self.tls = tls
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host up with getfqdn(): a reverse DNS
        # query that may leave loopback and stall. The name is not needed.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, address = self.socket.accept()
        if self.tls is not None:
            # The handshake happens on the connection's own thread (see setup).
            conn = self.tls.wrap_socket(
                conn, server_side=True, do_handshake_on_connect=False
            )
        return conn, address

    def process_request(self, request: Any, client_address: Any) -> None:
        self.owner._spawn(self, request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hanging up mid-response is what the tests do; stay quiet."""


class FakeOllama:
    """An Ollama look-alike on loopback for tests and demos, scripted per request.

    Serves ``/api/chat`` and ``/api/generate`` (streaming, or one object for
    ``"stream": false``), ``/api/pull``, ``/api/push`` and ``/api/create``
    (NDJSON progress), ``/api/show``, ``/api/tags``, ``/api/ps``,
    ``/api/version`` and ``GET``/``HEAD /``. Each chat or generate request plays
    the next queued script; with none queued it answers ``default_reply``.

    Example::

        with FakeOllama() as server:
            server.enqueue(reply("Hello there", thinking="Greet them."))
            client = StreamingClient(server.url)

    Args:
        host: the loopback address to bind (``"::1"`` for IPv6).
        port: the port; 0 picks a free one.
        models: the pulled models that ``/api/tags`` and ``/api/show`` know: names,
            or dicts with a ``name`` and any fields to show instead of the
            invented ones (``details``, ``capabilities``, ``model_info``, ``size``,
            ``digest``...). Chat and generate accept any model name regardless.
        version: what ``/api/version`` answers.
        tls: serve https with a certificate from a throwaway CA (needs
            ``trustme``, in the ``test`` extra); see ``ca_file`` and
            ``client_ssl_context()``.
        content_encoding: ``"gzip"`` or ``"deflate"`` encodes every response body
            (streams line by line with ``Z_SYNC_FLUSH``), as a compressing proxy
            would; Ollama itself never does. ``ContentEncoding`` overrides it
            per script.
        unknown_models: names the registry does not have: an unscripted pull of
            one streams Ollama's in-band "file does not exist" error.

    Attributes (all settable, also while serving):
        default_reply: the script a chat or generate request plays when no
            script is queued for it (``reply("Hello from the fake Ollama
            server.")`` at first), e.g. ``server.default_reply = reply("Hi.")``.
        models: as the argument; a successful pull or create adds to it.
        loaded: what ``/api/ps`` lists, as names or dicts (fields shown instead
            of the invented ones, e.g. ``{"name": "m", "size_vram": 0}``). A
            chat or generate request answered with 200 loads its model for its
            ``keep_alive`` (``expires_at``; ``options.num_ctx`` becomes
            ``context_length``); ``keep_alive: 0`` unloads it.
        unknown_models: as the argument.
        version: what ``/api/version`` answers.
        content_encoding: as the argument.
        requests: every GET and POST received, as ``RecordedRequest``, in order.

    A request with no messages (chat) or no prompt (generate) and no script
    queued gets Ollama's one-object answer with ``done_reason`` ``"load"``, or
    ``"unload"`` with ``keep_alive: 0``. With no script queued, a pull plays
    ``pull_script()`` (every layer already complete for a pulled model) or, for
    ``unknown_models``, ``pull_not_found_script()``; a push plays
    ``push_script()`` for a pulled model, else Ollama's in-band "no such file"
    error; a create plays ``create_script()`` from ``from`` (pulling a missing
    base first, as Ollama does) or ``files``, else answers 400.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        models: Sequence[str | Mapping[str, Any]] = ("fake-model",),
        version: str = "0.13.0-fake",
        tls: bool = False,
        content_encoding: str | None = None,
        unknown_models: Sequence[str] = (),
    ) -> None:
        if content_encoding not in (None, "identity", "gzip", "deflate"):
            raise ValueError(f"unknown content encoding {content_encoding!r}")
        self.models: list[str | Mapping[str, Any]] = list(models)
        self.loaded: list[str | Mapping[str, Any]] = []
        self.unknown_models: set[str] = set(unknown_models)
        self.version = version
        self.content_encoding = content_encoding
        self.default_reply: Script = reply("Hello from the fake Ollama server.")
        self.requests: list[RecordedRequest] = []
        # Guards the queues, the request log, the model lists, the counters, the
        # open connections and the stalled responses.
        self._cond = threading.Condition()
        self._queues: dict[str | None, deque[Script]] = {}
        self._load_info: dict[str, tuple[float | None, int | None]] = {}
        self._open = 0
        self._disconnects = 0
        self._stalled: dict[socket.socket, socket.socket] = {}
        self._conns: dict[socket.socket, threading.Thread] = {}
        self._closing = threading.Event()
        self._started_at = now_utc()
        self._tls: Any = None
        context = None
        if tls:
            from ._tls import TLSMaterial  # noqa: PLC0415  # trustme only when asked

            self._tls = TLSMaterial(("127.0.0.1", "localhost", "::1"))
            context = self._tls.server_context()
        try:
            self._httpd = _Server(self, (host, port), context)
        except BaseException:
            if self._tls is not None:
                self._tls.remove()  # no server, so no close() to remove it later
            raise
        self._thread: threading.Thread | None = None

    # -- control --------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:54321`` (``https://`` with TLS)."""
        host, port = self._httpd.server_address[:2]
        host = f"[{host!s}]" if ":" in str(host) else str(host)
        scheme = "https" if self._tls is not None else "http"
        return f"{scheme}://{host}:{port}"

    @property
    def ca_file(self) -> str:
        """Path of the PEM file of the CA that signed the TLS certificate.

        For ``requests`` (``verify=server.ca_file``) and other clients that take
        a CA bundle path. httpx (so ``ollama.Client``) wants a context instead:
        ``verify=server.client_ssl_context()``.

        Raises:
            RuntimeError: the server was made without ``tls=True``.
        """
        if self._tls is None:
            raise RuntimeError("ca_file: this FakeOllama serves plain http (tls=False)")
        return str(self._tls.ca_file)

    def client_ssl_context(self) -> ssl.SSLContext:
        """A new client ``ssl.SSLContext`` that trusts this server's certificate.

        Example::

            client = ollama.Client(server.url, verify=server.client_ssl_context())

        Raises:
            RuntimeError: the server was made without ``tls=True``.
        """
        if self._tls is None:
            raise RuntimeError("client_ssl_context: this FakeOllama serves plain http")
        context: ssl.SSLContext = self._tls.client_context()
        return context

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

    def close(self, timeout: float = 5.0) -> None:
        """Stop serving, end every response (stalled, delayed or idle), join threads.

        Args:
            timeout: the longest wait for all the server's threads together.
        """
        self._closing.set()
        self._wake_stalls()
        if self._thread is not None:
            self._httpd.shutdown()  # returns once serve_forever has stopped
        self._httpd.server_close()
        with self._cond:
            conns = list(self._conns.items())
        for conn, _ in conns:
            with contextlib.suppress(OSError):
                # The raw shutdown wakes a thread blocked in a read, a write or a
                # TLS handshake at once.
                socket.socket.shutdown(conn, socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for thread in [t for _, t in conns] + [self._thread] * bool(self._thread):
            if thread is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
        if self._tls is not None:
            self._tls.remove()

    def __enter__(self) -> FakeOllama:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def enqueue(self, *scripts: Sequence[Step], endpoint: str | None = None) -> None:
        """Queue scripts; each matching request plays the next one.

        Without ``endpoint``, scripts go to the shared queue that chat and
        generate requests take from in order (as before endpoints existed). With
        ``endpoint`` (``"chat"``, ``"generate"``, ``"pull"``, ``"push"``,
        ``"create"``, or the path such as ``"/api/pull"``) they go to that
        endpoint's own queue. A request plays from its endpoint's queue first,
        then (chat and generate only) from the shared queue, then its default.

        Example::

            server.enqueue(reply("For chat or generate, whichever asks first."))
            server.enqueue(reply("Only for generate."), endpoint="generate")
            server.enqueue(pull_script("llama3.2"), endpoint="pull")

        Raises:
            ValueError: an unknown endpoint, or a step that can never play
                where it is (``Status``, ``Body`` or ``ContentEncoding`` after
                output).
        """
        key = None if endpoint is None else _endpoint_path(endpoint)
        checked = [check_script(s) for s in scripts]
        with self._cond:
            self._queues.setdefault(key, deque()).extend(checked)

    def release(self) -> None:
        """End every current ``Stall`` (each stream then goes on with its script)."""
        self._wake_stalls()

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

    def wait_for(
        self, predicate: Callable[[FakeOllama], bool], timeout: float = 5.0
    ) -> bool:
        """Wait until ``predicate(self)`` is true; False if ``timeout`` passes first.

        The predicate is re-checked on every server event (a request recorded, a
        connection opened or closed, a response stalled or released, a
        hang-up), under the server's lock: keep it short and do not call
        blocking server methods from it.

        Example::

            assert server.wait_for(lambda s: s.disconnects_seen == 1)
            assert server.wait_for(lambda s: len(s.requests) == 2)
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def wait_stalled(self, count: int = 1, timeout: float = 5.0) -> bool:
        """Wait until ``count`` responses are in a ``Stall``.

        This returns once the SERVER has written everything before the stall,
        not once the client has read or delivered it: bytes may still be in
        flight, and a client's callbacks may not have run yet. To act on what
        the client shows, wait on the client side (an event set in a callback).

        Example::

            server.enqueue([Chunk(content="x"), Stall()])
            handle = client.start_chat("m", msgs, on_content=lambda t: seen.set())
            assert server.wait_stalled() and seen.wait(5)
        """
        return self.wait_for(lambda s: len(s._stalled) >= count, timeout)

    def wait_closed(self, timeout: float = 5.0) -> bool:
        """Wait until no client connection is open."""
        return self.wait_for(lambda s: s._open == 0, timeout)

    def stream_requests(self) -> list[RecordedRequest]:
        """The chat and generate requests received so far, in arrival order.

        Example::

            client.chat("m", msgs)
            (request,) = server.stream_requests()
            assert request.body["messages"] == msgs
        """
        with self._cond:
            return [
                r
                for r in self.requests
                if r.method == "POST" and r.path.split("?")[0] in (CHAT, GENERATE)
            ]

    # -- handler side -------------------------------------------------------------

    def _spawn(self, httpd: _Server, conn: socket.socket, address: Any) -> None:
        """Serve one accepted connection on its own thread."""
        with self._cond:
            if self._closing.is_set():
                httpd.shutdown_request(conn)
                return
            thread = threading.Thread(
                target=self._serve_connection,
                args=(httpd, conn, address),
                name=f"fake-ollama-conn-{next(_connections)}",
                daemon=True,
            )
            self._conns[conn] = thread  # before it runs, so close() can end it
            self._open += 1
            self._cond.notify_all()
        thread.start()

    def _serve_connection(
        self, httpd: _Server, conn: socket.socket, address: Any
    ) -> None:
        try:
            httpd.finish_request(conn, address)
        except Exception:  # noqa: BLE001, S110  # hang-ups, failed handshakes: expected
            pass
        finally:
            httpd.shutdown_request(conn)
            with self._cond:
                self._conns.pop(conn, None)
                self._open -= 1
                self._cond.notify_all()

    def _record(self, request: RecordedRequest) -> None:
        with self._cond:
            self.requests.append(request)
            self._cond.notify_all()

    def _next_script(
        self, path: str, body: Mapping[str, Any] | None = None
    ) -> Script | None:
        """The script for the next request to ``path`` (``body`` is its JSON body,
        for a subclass that picks scripts by model); None: the default answer."""
        with self._cond:
            keys: tuple[str | None, ...] = (
                (path, None) if path in (CHAT, GENERATE) else (path,)
            )
            for key in keys:
                queue = self._queues.get(key)
                if queue:
                    return queue.popleft()
        return None

    def _wake_stalls(self) -> None:
        with self._cond:
            wakers = list(self._stalled.values())
        for waker in wakers:
            with contextlib.suppress(OSError):
                waker.send(b"x")

    def _stall(self, conn: socket.socket) -> bool:
        """Block until release (False), or a hang-up or close (True)."""
        wake_r, wake_w = socket.socketpair()
        try:
            with self._cond:
                if self._closing.is_set():
                    return True
                self._stalled[conn] = wake_w
                self._cond.notify_all()
            with _Selector() as selector:
                selector.register(conn, selectors.EVENT_READ)
                selector.register(wake_r, selectors.EVENT_READ)
                while True:
                    ready = {key.fileobj for key, _ in selector.select()}
                    if wake_r in ready:
                        return self._closing.is_set()
                    verdict = _hung_up(conn)
                    if verdict is None:
                        continue
                    if verdict:
                        with self._cond:
                            self._disconnects += 1
                    return verdict
        finally:
            with self._cond:
                self._stalled.pop(conn, None)
                self._cond.notify_all()
            wake_r.close()
            wake_w.close()

    def _pause(self, seconds: float) -> bool:
        """Sleep for a ``Delay``; True if the server closes meanwhile."""
        return self._closing.wait(seconds)

    # -- model state ----------------------------------------------------------------

    def _record_for(self, entry: str | Mapping[str, Any]) -> dict[str, Any]:
        return models_.model_record(entry, self._started_at)

    def _tags(self) -> list[dict[str, Any]]:
        with self._cond:
            entries = list(self.models)
        return [models_.pick(self._record_for(e), models_.TAGS_KEYS) for e in entries]

    def _show(self, name: str) -> dict[str, Any] | None:
        with self._cond:
            entry = models_.find_entry(self.models, name)
        if entry is None:
            return None
        return models_.pick(self._record_for(entry), models_.SHOW_KEYS)

    def _ps(self) -> list[dict[str, Any]]:
        now = now_utc()
        with self._cond:
            loaded = list(self.loaded)
            pulled = list(self.models)
            info = dict(self._load_info)
        out = []
        for entry in loaded:
            name = models_.entry_name(entry)
            keep_alive, num_ctx = info.get(_key(name), (None, None))
            record = self._record_for(models_.find_entry(pulled, name) or name)
            record |= {
                "name": name,
                "model": name,
                "size_vram": record["size"],
                "expires_at": models_.expires_at(now, keep_alive),
                "context_length": num_ctx or models_.DEFAULT_CONTEXT_LENGTH,
            }
            if not isinstance(entry, str):
                record |= dict(entry)
            out.append(models_.pick(record, models_.PS_KEYS))
        # PsHandler: the longest time left first.
        return sorted(out, key=lambda m: _when(m.get("expires_at")), reverse=True)

    def _note_loaded(
        self, model: str, body: Mapping[str, Any], *, answering: bool = False
    ) -> None:
        """A chat or generate request loaded its model, or unloaded it (0).

        ``answering``: its first output is being written, so the model is loaded
        (listed by ``/api/ps`` while it generates), whatever its ``keep_alive``.
        """
        value = body.get("keep_alive")
        keep_alive = None if value is None else keep_alive_seconds(value)
        if answering and keep_alive == 0:
            keep_alive = None
        options = body.get("options")
        num_ctx = options.get("num_ctx") if isinstance(options, Mapping) else None
        with self._cond:
            entry = models_.find_entry(self.loaded, model)
            if keep_alive == 0:
                if entry is not None:
                    self.loaded.remove(entry)
                self._load_info.pop(_key(model), None)
            else:
                if entry is None:
                    self.loaded.append(model)
                self._load_info[_key(model)] = (
                    keep_alive,
                    num_ctx if isinstance(num_ctx, int) else None,
                )
            self._cond.notify_all()

    def _is_pullable(self, name: str) -> bool:
        with self._cond:
            known = models_.find_entry(self.models, name) is not None
            unknown = models_.find_entry(sorted(self.unknown_models), name) is not None
        return not known and not unknown

    def _add_model(self, name: str, body: Mapping[str, Any] | None = None) -> None:
        """A pull or create finished: the model is now listed."""
        entry: str | dict[str, Any] = name
        if body is not None:
            extra = {
                k: body[k]
                for k in ("system", "template")
                if isinstance(body.get(k), str)
            }
            if isinstance(body.get("license"), (str, list)):
                lic = body["license"]
                extra["license"] = (
                    lic if isinstance(lic, str) else "\n".join(map(str, lic))
                )
            if extra:
                entry = {"name": name, **extra}
        with self._cond:
            old = models_.find_entry(self.models, name)
            if old is not None:
                self.models.remove(old)
            self.models.append(entry)
            self._cond.notify_all()

    def _default_progress(
        self, path: str, name: str, body: Mapping[str, Any]
    ) -> Script | None:
        """What an unscripted pull, push or create plays, from the server's state."""
        if path == PULL:
            return self._default_pull(name)
        if path == PUSH:
            return self._default_push(name)
        return self._default_create(name, body)

    def _default_pull(self, name: str) -> Script:
        with self._cond:
            known = models_.find_entry(self.models, name) is not None
            unknown = models_.find_entry(sorted(self.unknown_models), name) is not None
        if unknown:
            return pull_not_found_script()
        return pull_script(name, cached=known)  # a re-pull finds every layer on disk

    def _default_push(self, name: str) -> Script:
        with self._cond:
            known = models_.find_entry(self.models, name) is not None
        if known:
            return push_script(name)
        # PushModel: the manifest is read from disk, and os.Open fails.
        manifest = models_.ModelName.parse(name).manifest_path()
        return [
            _Progress("retrieving manifest"),
            _Progress("couldn't retrieve manifest"),
            _ErrorLine(f"open {manifest}: no such file or directory"),
        ]

    def _default_create(self, name: str, body: Mapping[str, Any]) -> Script | None:
        """CreateHandler's progress; None for its 400 (no ``from``, no ``files``)."""
        base = body.get("from")
        files = body.get("files")
        # Layers Ollama writes for this model, in createModel's order.
        new = [
            models_.digest_of(key, body[key])
            for key in ("template", "system", "license", "parameters", "messages")
            if body.get(key)
        ]
        if isinstance(base, str) and base:
            with self._cond:
                unknown = models_.find_entry(sorted(self.unknown_models), base)
            if unknown is not None:
                return pull_not_found_script()
            # parseFromModel pulls a missing base first through the same stream,
            # its "success" line included.
            steps: Script = pull_script(base) if self._is_pullable(base) else []
            count = len(models_.DEFAULT_LAYER_SIZES) - 1  # the config is no layer
            existing = models_.layer_digests(base, count)
            return steps + create_script(name, existing=existing, new=new)
        if isinstance(files, Mapping) and files:
            existing = [str(d) for d in files.values()]
            return create_script(name, existing=existing, new=new, parsing_gguf=True)
        return None


def _key(name: str) -> str:
    return models_.ModelName.parse(name).display_shortest().lower()


def _when(value: Any) -> datetime.datetime:
    """An ``expires_at`` for sorting; unreadable ones sort last."""
    utc = datetime.timezone.utc
    try:
        moment = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:  # Python 3.10 reads only 3 or 6 fraction digits
        return datetime.datetime.min.replace(tzinfo=utc)
    return moment if moment.tzinfo else moment.replace(tzinfo=utc)


def _endpoint_path(endpoint: str) -> str:
    """``"pull"`` or ``"/api/pull"`` → ``"/api/pull"``; ValueError otherwise."""
    path = SCRIPTED.get(endpoint, endpoint)
    if path not in SCRIPTED.values():
        names = ", ".join(sorted(SCRIPTED))
        raise ValueError(f"unknown endpoint {endpoint!r}: use one of {names}")
    return path


@contextlib.contextmanager
def serve(*scripts: Sequence[Step], **options: Any) -> Iterator[FakeOllama]:
    """Start a ``FakeOllama`` with scripts queued, and stop it afterwards.

    Keyword arguments go to ``FakeOllama`` (``tls=True``, ``models=[...]``...).

    Example::

        with serve(reply("One."), reply("Two.")) as server:
            client = StreamingClient(server.url)
    """
    with FakeOllama(**options) as server:
        server.enqueue(*scripts)
        yield server
