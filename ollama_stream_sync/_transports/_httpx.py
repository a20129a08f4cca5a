"""Streaming over the SDK's own ``httpx.Client``, with sockets an abort can reach.

``CancellableTransport`` is an httpx transport like ``httpx.HTTPTransport`` whose
connection pool uses ``TrackingBackend``: every socket it creates attaches itself
to the calling thread's ``AbortScope`` before it blocks (connect, send, receive),
so a cancel from any thread shuts it down at once, in every phase. It is built
only from the public httpx and httpcore APIs.

``HttpxStreamTransport`` adapts an ``httpx.Client`` (the one inside ``ollama.Client``,
so its base URL, headers and auth apply) to our ``Transport`` interface. With a
transport of the user's own, a cancel still reaches the socket once the
response headers have arrived (through httpx's ``network_stream`` extension).
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import ssl
import time
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any

import httpcore
import httpx

from ollama_stream_sync._abort import current_scope
from ollama_stream_sync._errors import translate
from ollama_stream_sync._ndjson import error_from_body

from ._base import MAX_ERROR_BODY

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


def _attach(sock: socket.socket) -> None:
    scope = current_scope()
    if scope is not None:
        scope.attach_if_new(sock)


class _SocketStream(httpcore.NetworkStream):
    """A socket as httpcore sees it; attaches to the caller's scope before blocking."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        _attach(self._sock)
        try:
            self._sock.settimeout(timeout)
            return self._sock.recv(max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ReadError(str(exc)) from exc

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        _attach(self._sock)
        try:
            self._sock.settimeout(timeout)
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
        try:
            self._sock.settimeout(timeout)
            tls = ssl_context.wrap_socket(self._sock, server_hostname=server_hostname)
        except TimeoutError as exc:
            self.close()
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except OSError as exc:
            self.close()
            raise httpcore.ConnectError(str(exc)) from exc
        _attach(tls)
        return _SocketStream(tls)

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object" and isinstance(self._sock, ssl.SSLSocket):
            return self._sock._sslobj  # type: ignore[attr-defined]  # httpcore does the same
        if info == "client_addr":
            return self._sock.getsockname()
        if info == "server_addr":
            return self._sock.getpeername()
        if info == "socket":
            return self._sock
        if info == "is_readable":
            return _is_readable(self._sock)
        return None


def _is_readable(sock: socket.socket) -> bool:
    """True if the peer closed or sent data (an idle pooled socket must not be)."""
    if sock.fileno() == -1:
        return True
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


def _connect(
    sock: socket.socket,
    address: Any,
    timeout: float | None,
    options: Iterable[Any] | None,
    local_address: str | None = None,
) -> _SocketStream:
    """Attach ``sock`` to the caller's scope, then connect it; close it on failure."""
    try:
        _attach(sock)
        for option in options or ():
            sock.setsockopt(*option)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if local_address is not None:
            sock.bind((local_address, 0))
        sock.settimeout(timeout)
        sock.connect(address)
    except TimeoutError as exc:
        sock.close()
        raise httpcore.ConnectTimeout(str(exc)) from exc
    except OSError as exc:
        sock.close()
        raise httpcore.ConnectError(str(exc)) from exc
    except BaseException:
        sock.close()
        raise
    return _SocketStream(sock)


class TrackingBackend(httpcore.NetworkBackend):
    """Creates sockets that attach to the caller's ``AbortScope`` before connecting."""

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        error: httpcore.ConnectError | None = None
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            try:
                return _connect(sock, address, timeout, socket_options, local_address)
            except httpcore.ConnectError as exc:
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
    def __init__(self, stream: Iterable[bytes]) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        with _httpcore_to_httpx():
            yield from self._stream

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


class CancellableTransport(httpx.BaseTransport):
    """An ``httpx.HTTPTransport`` look-alike whose sockets a cancel can shut down."""

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
        limits = limits or httpx.Limits(
            max_connections=100, max_keepalive_connections=20
        )
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(
                verify=verify, cert=cert, trust_env=trust_env
            ),
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
        with _httpcore_to_httpx():
            resp = self._pool.handle_request(req)
        if not isinstance(resp.stream, Iterable):
            raise TypeError("httpcore returned an asynchronous stream")
        return httpx.Response(
            status_code=resp.status,
            headers=resp.headers,
            stream=_ResponseStream(resp.stream),
            extensions=resp.extensions,
        )

    def close(self) -> None:
        self._pool.close()

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        self.close()


class _HttpxOpenStream:
    __slots__ = ("_response",)

    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._response.iter_bytes()
        except httpx.HTTPError as exc:
            raise translate(exc) from exc

    def close(self) -> None:
        self._response.close()


class HttpxStreamTransport:
    """Our ``Transport`` over an ``httpx.Client`` (normally the SDK's own)."""

    def __init__(self, client: httpx.Client) -> None:
        self._client = client

    def open(
        self, path: str, body: dict[str, Any], *, connect_timeout: float | None
    ) -> _HttpxOpenStream:
        request = self._client.build_request(
            "POST",
            path,
            content=json.dumps(body, ensure_ascii=False).encode(),
            headers={"Accept": "application/x-ndjson"},
            # Silences between chunks are policed by our own timers (they know the
            # phase), so httpx's read timeout stays off; connect stays bounded.
            timeout=httpx.Timeout(
                connect=connect_timeout, read=None, write=connect_timeout, pool=None
            ),
        )
        try:
            response = self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise translate(exc) from exc
        try:
            if response.status_code >= 300:
                body_bytes = _read_bounded(response)
                raise error_from_body(
                    response.status_code,
                    body_bytes,
                    response.reason_phrase,
                    retry_after=response.headers.get("Retry-After"),
                )
            _attach_response_socket(response)
        except BaseException:
            response.close()
            raise
        return _HttpxOpenStream(response)

    def get_json(self, path: str, *, timeout: float | None) -> Any:
        try:
            response = self._client.get(path, timeout=timeout)
            response.raise_for_status()
            return response.json()
        except httpx.HTTPError as exc:
            raise translate(exc) from exc
        except ValueError as exc:
            raise translate(exc) from exc


def _read_bounded(response: httpx.Response) -> bytes:
    parts: list[bytes] = []
    size = 0
    with contextlib.suppress(httpx.HTTPError):
        for data in response.iter_bytes():
            parts.append(data)
            size += len(data)
            if size >= MAX_ERROR_BODY:
                break
    return b"".join(parts)[:MAX_ERROR_BODY]


def _attach_response_socket(response: httpx.Response) -> None:
    """Reach the socket of a transport that is not ours, once headers arrived."""
    stream = response.extensions.get("network_stream")
    get_info = getattr(stream, "get_extra_info", None)
    if get_info is None:
        return
    sock = get_info("socket")
    if isinstance(sock, socket.socket):
        _attach(sock)
