"""Streaming over the SDK's own ``httpx.Client``, with sockets an abort can reach.

``CancellableTransport`` is an httpx transport like ``httpx.HTTPTransport`` whose
connection pool uses ``TrackingBackend``: every connection's socket stream lets
the stream's ``AbortScope`` claim it before it blocks (resolving the name,
connecting, the TLS handshake, sending, receiving), so a cancel from any thread
shuts it down at once, in every phase. The claim is released before httpcore
can hand the connection to another request, so a late cancel never reaches a
socket another stream uses. It is built only from the public httpx and httpcore
APIs.

``HttpxStreamTransport`` adapts an ``httpx.Client`` (the one inside ``ollama.Client``,
so its base URL, headers and auth apply) to our ``Transport`` interface. Once the
headers arrived it reads the body straight from httpcore's stream (our transport)
and decodes ``Content-Encoding`` itself, bounded. With a transport of the user's
own, a cancel reaches the socket once the response headers have arrived (through
httpx's ``network_stream`` extension).
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

import httpcore
import httpx

from ollama_stream_sync._abort import (
    Aborted,
    AbortScope,
    SocketClaim,
    connect,
    current_scope,
    disown,
    resolve,
    shutdown_socket,
)
from ollama_stream_sync._decode import BodyDecoder, accept_encoding
from ollama_stream_sync._errors import translate
from ollama_stream_sync._ndjson import error_from_body

from ._base import MAX_ERROR_BODY, socket_readable

_EXC_MAP: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


@contextlib.contextmanager
def _httpcore_to_httpx() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        for core_cls, httpx_cls in _EXC_MAP:
            if isinstance(exc, core_cls):
                raise httpx_cls(str(exc)) from exc
        raise


_UNSET = object()
_BODY = "ollama_stream_sync.body"
"""The response extension that carries our body stream (the light path)."""


class _SocketStream(httpcore.NetworkStream):
    """One connection's socket as httpcore sees it, claimable by a stream's scope.

    Every read and write lets the calling thread's scope claim it first, so an
    abort reaches it in every phase; the first read after a write tells the
    scope that the request was sent.
    """

    __slots__ = ("_drain_until", "_pid", "_sock", "_timeout", "_wrote", "owner")

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.owner: AbortScope | None = None
        self._timeout: object = _UNSET
        self._wrote = False
        self._drain_until: float | None = None
        self._pid = os.getpid()

    def _claim(self) -> AbortScope | None:
        scope = current_scope()
        if scope is not None and self.owner is not scope:
            scope.claim(self)
        return scope

    def _settimeout(self, timeout: float | None) -> None:
        until = self._drain_until
        if until is not None:
            remaining = max(0.0, until - time.monotonic())
            timeout = remaining if timeout is None else min(timeout, remaining)
        if timeout != self._timeout:  # a syscall or two saved per read
            self._sock.settimeout(timeout)
            self._timeout = timeout

    def shutdown(self) -> None:
        """Wake whoever blocks on this connection (claimed scope's abort)."""
        shutdown_socket(self._sock)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        scope = self._claim()
        if self._wrote:
            self._wrote = False
            hook = scope.phase_hook if scope is not None else None
            if hook is not None:
                hook()  # the request is out: now we wait for the model
        try:
            self._settimeout(timeout)
            return self._sock.recv(max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ReadError(str(exc)) from exc

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        self._claim()
        self._wrote = True
        try:
            self._settimeout(timeout)
            self._sock.sendall(buffer)
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.WriteError(str(exc)) from exc

    def close(self) -> None:
        self._sock.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        # The handshake is done as a step of its own, on a socket the scope
        # already owns, so a cancel during a stalled handshake wakes it too.
        try:
            tls = ssl_context.wrap_socket(
                self._sock,
                server_hostname=server_hostname,
                do_handshake_on_connect=False,
            )
            self._sock = tls
            self._timeout = _UNSET
            self._claim()
            self._settimeout(timeout)
            tls.do_handshake()
        except TimeoutError as exc:
            self.close()
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except OSError as exc:
            self.close()
            _raise_if_aborted()
            raise httpcore.ConnectError(str(exc)) from exc
        except BaseException:
            self.close()
            raise
        return self

    def get_extra_info(self, info: str) -> Any:
        sock = self._sock
        if info == "ssl_object" and isinstance(sock, ssl.SSLSocket):
            return sock._sslobj  # type: ignore[attr-defined]  # httpcore does the same
        if info == "client_addr":
            return sock.getsockname()
        if info == "server_addr":
            return sock.getpeername()
        if info == "socket":
            return sock
        if info == "is_readable":
            # Inherited across fork(), shared with the parent: report it dead
            # so that this process never reuses it.
            #
            # httpcore asks this, without a lock, of a connection it saw idle
            # a moment ago, and closes it if readable (the server hung up).
            # A request may have taken it since: it claimed the connection
            # before writing, so if its answer is what makes the socket
            # readable, the claim shows; read the socket first, then the owner.
            return os.getpid() != self._pid or (
                socket_readable(sock) and self.owner is None
            )
        return None

    def drain_within(self, seconds: float | None) -> None:
        """Bound every later read to finish within ``seconds`` from now.

        ``None`` lifts the bound: a drained connection goes back to the pool,
        and the next request on it must not inherit a limit that has passed.
        """
        self._drain_until = None if seconds is None else time.monotonic() + seconds


def _raise_if_aborted() -> None:
    scope = current_scope()
    if scope is not None:
        scope.check()


def _connect(
    sock: socket.socket,
    address: Any,
    timeout: float | None,
    options: Iterable[Any] | None,
    local_address: str | None = None,
) -> _SocketStream:
    """Claim ``sock`` for the caller's scope, then connect it; close it on failure."""
    stream = _SocketStream(sock)
    try:
        stream._claim()
        for option in options or ():
            sock.setsockopt(*option)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if local_address is not None:
            sock.bind((local_address, 0))
        stream._settimeout(timeout)
        connect(sock, address)  # a cancel ends it, whenever it lands
    except TimeoutError as exc:
        sock.close()
        _raise_if_aborted()
        raise httpcore.ConnectTimeout(str(exc)) from exc
    except OSError as exc:
        sock.close()
        _raise_if_aborted()
        raise httpcore.ConnectError(str(exc)) from exc
    except BaseException:
        sock.close()
        raise
    return stream


class TrackingBackend(httpcore.NetworkBackend):
    """Creates socket streams that the caller's ``AbortScope`` can claim."""

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            infos = resolve(host, port, 0, socket.SOCK_STREAM, timeout=timeout)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ConnectError(f"{host}: {exc}") from exc
        error: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            try:
                return _connect(sock, address, timeout, socket_options, local_address)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc  # try the next address, as socket.create_connection does
        raise error or httpcore.ConnectError(f"no address for {host}")

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        return _connect(sock, path, timeout, socket_options)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class _ResponseStream(httpx.SyncByteStream):
    """httpcore's body stream; closing it ends the connection's claim *first*."""

    def __init__(
        self, stream: Iterable[bytes], conn: object, done: Callable[[], None]
    ) -> None:
        self._stream = stream
        self._conn = conn if isinstance(conn, _SocketStream) else None
        self._done: Callable[[], None] | None = done

    def __iter__(self) -> Iterator[bytes]:
        with _httpcore_to_httpx():
            yield from self._stream

    def raw_chunks(self) -> Iterator[bytes]:
        """The body as httpcore yields it, errors mapped (the light path)."""
        with _httpcore_to_httpx():
            yield from self._stream

    def close(self) -> None:
        # Closing hands the connection back to the pool, where another request
        # may take it at once: no scope may own it after that, and no drain
        # bound may stay on it (httpx's iter_raw closes at the end of the body,
        # inside a drain).
        if self._conn is not None:
            disown(self._conn)
            self._conn.drain_within(None)
        close = getattr(self._stream, "close", None)
        try:
            if close is not None:
                close()
        finally:
            done, self._done = self._done, None
            if done is not None:
                done()


SHARD_STREAMS = 16
"""Concurrent requests one httpcore pool serves before the next pool takes more.

httpcore's pool re-examines every connection under one lock on each request
and each release, which is quadratic in the connections: hundreds of
concurrent streams in one pool spend their time there. A client with fewer
streams than this uses one pool, and reuses its connections fully."""


class CancellableTransport(httpx.BaseTransport):
    """An ``httpx.HTTPTransport`` look-alike whose sockets a cancel can shut down.

    It has no connection limit by default: each stream holds its connection for
    its whole life, so a limit would only queue streams. Requests fill one
    httpcore pool up to ``SHARD_STREAMS`` at once, then the next (unless
    ``limits`` sets a connection limit, which one pool enforces).
    """

    def __init__(
        self,
        *,
        verify: ssl.SSLContext | str | bool = True,
        cert: Any = None,
        trust_env: bool = True,
        http1: bool = True,
        http2: bool = False,
        limits: httpx.Limits | None = None,
        uds: str | None = None,
        local_address: str | None = None,
        retries: int = 0,
        socket_options: Iterable[Any] | None = None,
    ) -> None:
        self._shard = limits is None or limits.max_connections is None
        limits = limits or httpx.Limits(
            max_connections=None, max_keepalive_connections=SHARD_STREAMS
        )
        ssl_context = httpx.create_ssl_context(
            verify=verify, cert=cert, trust_env=trust_env
        )

        def new_pool() -> httpcore.ConnectionPool:
            return httpcore.ConnectionPool(
                ssl_context=ssl_context,
                max_connections=limits.max_connections,
                max_keepalive_connections=limits.max_keepalive_connections,
                keepalive_expiry=limits.keepalive_expiry,
                http1=http1,
                http2=http2,
                uds=uds,
                local_address=local_address,
                retries=retries,
                socket_options=socket_options,
                network_backend=TrackingBackend(),
            )

        self._new_pool = new_pool
        # Guards _pools and _busy: requests start and end on many threads.
        self._lock = threading.Lock()
        self._pools = [new_pool()]
        self._busy = [0]

    def _take_pool(self) -> int:
        """The pool for the next request: the first with room (``SHARD_STREAMS``)."""
        with self._lock:
            for index, busy in enumerate(self._busy):
                if busy < SHARD_STREAMS or not self._shard:
                    self._busy[index] = busy + 1
                    return index
            self._pools.append(self._new_pool())
            self._busy.append(1)
            return len(self._pools) - 1

    def _give_pool(self, index: int) -> None:
        with self._lock:
            self._busy[index] -= 1

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if not isinstance(request.stream, httpx.SyncByteStream):
            raise TypeError("CancellableTransport needs a synchronous request body")
        req = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        index = self._take_pool()
        try:
            with _httpcore_to_httpx():
                resp = self._pools[index].handle_request(req)
        except BaseException:
            self._give_pool(index)
            raise
        if not isinstance(resp.stream, Iterable):
            self._give_pool(index)
            raise TypeError("httpcore returned an asynchronous stream")
        body = _ResponseStream(
            resp.stream,
            resp.extensions.get("network_stream"),
            lambda: self._give_pool(index),
        )
        return httpx.Response(
            status_code=resp.status,
            headers=resp.headers,
            stream=body,
            # httpx wraps `stream` in its own; this key finds ours again.
            extensions={**resp.extensions, _BODY: body},
        )

    def close(self) -> None:
        with self._lock:
            pools = list(self._pools)
        for pool in pools:
            pool.close()

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        self.close()


class _HttpxOpenStream:
    __slots__ = ("_chunks", "_decoder", "_foreign", "_response", "_url")

    def __init__(
        self, response: httpx.Response, url: str, foreign: SocketClaim | None
    ) -> None:
        self._response = response
        self._url = url
        self._foreign = foreign
        self._decoder = BodyDecoder(response.headers.get("Content-Encoding", ""))
        body = response.extensions.get(_BODY)
        self._chunks: Iterator[bytes] = (
            body.raw_chunks()
            if isinstance(body, _ResponseStream)
            else response.iter_raw()
        )

    def __iter__(self) -> Iterator[bytes]:
        decoder = self._decoder
        try:
            if decoder.identity:
                yield from self._chunks
                return
            for data in self._chunks:
                yield from decoder.decode(data)
            yield from decoder.finish()
        except httpx.HTTPError as exc:
            raise translate(exc, url=self._url) from exc
        finally:
            self.close()  # at the end of the body: back to the pool

    def drain(self, timeout: float) -> None:
        sock = self._response.extensions.get("network_stream")
        if isinstance(sock, _SocketStream):
            sock.drain_within(timeout)
            try:
                with contextlib.suppress(Exception):
                    for _ in self._chunks:
                        pass
            finally:
                sock.drain_within(None)
        self.close()

    def close(self) -> None:
        if self._foreign is not None:
            disown(self._foreign)
        self._response.close()


class HttpxStreamTransport:
    """Our ``Transport`` over an ``httpx.Client`` (normally the SDK's own)."""

    def __init__(self, client: httpx.Client) -> None:
        self._client = client
        self._url = str(client.base_url).rstrip("/")
        self._accept_encoding = accept_encoding()

    def open(
        self,
        path: str,
        payload: bytes,
        *,
        connect_timeout: float | None,
        model: str | None = None,
    ) -> _HttpxOpenStream:
        request = self._client.build_request(
            "POST",
            path,
            content=payload,
            headers={
                "Accept": "application/x-ndjson",
                "Accept-Encoding": self._accept_encoding,
            },
            # Silences between chunks are policed by our own timers (they know the
            # phase), so httpx's read timeout stays off; connect stays bounded.
            timeout=httpx.Timeout(
                connect=connect_timeout, read=None, write=connect_timeout, pool=None
            ),
        )
        try:
            response = self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise translate(exc, url=self._url) from exc
        try:
            if response.status_code >= 300:
                raise error_from_body(
                    response.status_code,
                    _read_bounded(response),
                    response.reason_phrase,
                    retry_after=response.headers.get("Retry-After"),
                    url=self._url,
                    model=model,
                )
            foreign = _claim_response_socket(response)
        except BaseException:
            response.close()
            raise
        return _HttpxOpenStream(response, self._url, foreign)

    def get_json(self, path: str, *, timeout: float | None) -> Any:
        try:
            response = self._client.get(path, timeout=timeout)
            if response.status_code >= 300:
                raise error_from_body(
                    response.status_code,
                    response.content[:MAX_ERROR_BODY],
                    response.reason_phrase,
                    url=self._url,
                )
            return response.json()
        except httpx.HTTPError as exc:
            raise translate(exc, url=self._url) from exc
        except ValueError as exc:
            raise translate(exc, url=self._url) from exc


def _read_bounded(response: httpx.Response) -> bytes:
    """At most ``MAX_ERROR_BODY`` decoded bytes of an error body."""
    parts: list[bytes] = []
    size = 0
    decoder = BodyDecoder(response.headers.get("Content-Encoding", ""))
    with contextlib.suppress(httpx.HTTPError, Exception):
        for data in response.iter_raw():
            for piece in decoder.decode(data):
                parts.append(piece)
                size += len(piece)
                if size >= MAX_ERROR_BODY:
                    return b"".join(parts)[:MAX_ERROR_BODY]
    return b"".join(parts)[:MAX_ERROR_BODY]


def _claim_response_socket(response: httpx.Response) -> SocketClaim | None:
    """Reach the socket of a transport that is not ours, once headers arrived."""
    stream = response.extensions.get("network_stream")
    if isinstance(stream, _SocketStream):
        return None  # ours: already claimed on every read
    get_info = getattr(stream, "get_extra_info", None)
    scope = current_scope()
    if get_info is None or scope is None:
        return None
    sock = get_info("socket")
    if not isinstance(sock, socket.socket):
        return None
    foreign = SocketClaim(sock)
    scope.claim(foreign)
    return foreign


__all__ = ["Aborted", "CancellableTransport", "HttpxStreamTransport", "TrackingBackend"]
