"""Streaming over the SDK's own ``httpx.Client``, with sockets a cancel can reach.

``CancellableTransport`` is an ``httpx.HTTPTransport`` look-alike whose pool makes
its sockets through ``TrackingBackend``; httpcore's ``trace`` extension tells the
stream when its request was sent, and releases the claim before the connection
goes back to the pool. ``HttpxTransport`` is our ``Transport`` over an
``httpx.Client``; with a caller's own transport a cancel reaches the socket once
the response headers have arrived.
"""

from __future__ import annotations

import contextlib
import importlib
import socket
import ssl
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, cast

import httpcore
import httpx

from ollama_stream_sync._cancel import AbortScope, SocketClaim, current_scope, disown
from ollama_stream_sync._errors import error_from_body
from ollama_stream_sync._result import Headers

from ._base import MAX_ERROR_BODY, reraise
from ._encoding import BodyDecoder, accept_encoding
from ._httpcore import SocketStream, TrackingBackend

_ERRORS: list[tuple[type[Exception], type[httpx.TransportError]]] = [
    (getattr(httpcore, name), getattr(httpx, name))
    for name in """PoolTimeout ConnectTimeout ReadTimeout WriteTimeout ConnectError
    ReadError WriteError ProxyError UnsupportedProtocol RemoteProtocolError
    LocalProtocolError NetworkError TimeoutException ProtocolError""".split()
]
"""httpcore's errors as httpx's (same names), most specific first: what an httpx
transport owes its client."""


@contextlib.contextmanager
def _as_httpx() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        for core, ours in _ERRORS:
            if isinstance(exc, core):
                raise ours(str(exc)) from exc
        raise


class _Body(httpx.SyncByteStream):
    """httpcore's response body, its errors mapped as httpx's."""

    def __init__(self, stream: Iterable[bytes]) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        with _as_httpx():
            yield from self._stream

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            with _as_httpx():
                close()


class CancellableTransport(httpx.BaseTransport):
    """An ``httpx.HTTPTransport`` look-alike whose sockets a cancel can shut down.

    No connection limit by default: a stream holds its connection for its whole
    life, so a limit would only queue streams. ``proxy``: an HTTP proxy (https
    by CONNECT) or, with ``httpx[socks]``, a SOCKS5 one. ``tls=False`` skips the
    TLS context (loading the CA store costs ~15 ms) for a transport that only
    ever talks plain http.
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
        proxy: str | httpx.Proxy | None = None,
        uds: str | None = None,
        local_address: str | None = None,
        retries: int = 0,
        socket_options: Iterable[Any] | None = None,
        tls: bool = True,
    ) -> None:
        limits = limits or httpx.Limits(
            max_connections=None, max_keepalive_connections=16
        )
        options: dict[str, Any] = {
            "ssl_context": httpx.create_ssl_context(
                verify=verify, cert=cert, trust_env=trust_env
            )
            if tls
            else None,
            "max_connections": limits.max_connections,
            "max_keepalive_connections": limits.max_keepalive_connections,
            "keepalive_expiry": limits.keepalive_expiry,
            "http1": http1,
            "http2": http2,
            "retries": retries,
            "network_backend": TrackingBackend(),
        }
        direct: dict[str, Any] = {"uds": uds, "local_address": local_address}
        direct["socket_options"] = socket_options  # not through a SOCKS proxy
        if isinstance(proxy, str):
            # httpcore's SOCKS always lets the proxy resolve the name, so socks5h
            # is socks5 to it; httpx before 0.28 refuses the socks5h spelling.
            if proxy[:10].lower() == "socks5h://":
                proxy = "socks5://" + proxy[10:]
            proxy = httpx.Proxy(proxy)
        self._pool: httpcore.ConnectionPool
        if proxy is None:
            self._pool = httpcore.ConnectionPool(**options, **direct)
        elif proxy.url.scheme in ("socks5", "socks5h"):
            try:
                importlib.import_module("socksio")  # what httpcore's SOCKS needs
            except ImportError as exc:
                raise ImportError(
                    f"the proxy {proxy.url} needs SOCKS support: "
                    "pip install 'httpx[socks]'"
                ) from exc
            self._pool = httpcore.SOCKSProxy(
                proxy_url=_core_url(proxy.url), proxy_auth=proxy.raw_auth, **options
            )
        elif proxy.url.scheme in ("http", "https"):
            self._pool = httpcore.HTTPProxy(
                proxy_url=_core_url(proxy.url),
                proxy_auth=proxy.raw_auth,
                proxy_headers=proxy.headers.raw,
                proxy_ssl_context=proxy.ssl_context,
                **direct,
                **options,
            )
        else:
            raise ValueError(
                f"unsupported proxy scheme in {proxy.url!r}: use http://, "
                "https:// or socks5://"
            )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if not isinstance(request.stream, httpx.SyncByteStream):
            raise TypeError("CancellableTransport needs a synchronous request body")
        core = httpcore.Request(
            method=request.method,
            url=_core_url(request.url),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _as_httpx():
            response = self._pool.handle_request(core)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Body(cast(Iterable[bytes], response.stream)),  # a sync pool
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._pool.close()


def _core_url(url: httpx.URL) -> httpcore.URL:
    return httpcore.URL(
        scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
    )


class _Stream:
    """One streaming response: its raw body, decoded (bounded), errors mapped."""

    __slots__ = ("_foreign", "_raw", "_response", "_url", "headers")

    def __init__(
        self, response: httpx.Response, url: str, foreign: SocketClaim | None
    ) -> None:
        self._response = response
        self._url = url
        self._foreign = foreign
        self._raw = response.iter_raw()
        self.headers = Headers(response.headers.items())

    def __iter__(self) -> Iterator[bytes]:
        decoder = BodyDecoder(self._response.headers.get("Content-Encoding", ""))
        try:
            if decoder.identity:
                yield from self._raw
                return
            for data in self._raw:
                yield from decoder.decode(data)
            yield from decoder.finish()
        except httpx.HTTPError as exc:
            reraise(exc, self._url)

    def drain(self) -> None:
        with contextlib.suppress(Exception):
            for _ in self._raw:
                pass
        self.close()

    def close(self) -> None:
        if self._foreign is not None:
            disown(self._foreign)
        self._response.close()


class HttpxTransport:
    """Our ``Transport`` over an ``httpx.Client`` (normally the SDK's own)."""

    def __init__(self, client: httpx.Client) -> None:
        self._http = client
        self.url = str(client.base_url).rstrip("/")
        self._accept_encoding = accept_encoding()

    def open(
        self,
        path: str,
        payload: bytes,
        *,
        timeout: float | None,
        headers: Mapping[str, str] | None = None,
        model: str | None = None,
    ) -> _Stream:
        scope = current_scope()

        def trace(event: str, info: Mapping[str, Any]) -> None:
            if scope is None:
                return
            if event.endswith(".send_request_body.complete"):
                scope.on_sent()  # now the model loads, or reads the prompt
            elif event.endswith(".response_closed.started"):
                scope.release()  # before the pool can hand the connection on

        request = self._http.build_request(
            "POST",
            path,
            content=payload,
            headers={
                "Accept": "application/x-ndjson",
                "Accept-Encoding": self._accept_encoding,
                **(headers or {}),
            },
            # Silences between chunks are policed by the stream's own timers,
            # which know the phase; connecting and sending stay bounded here.
            timeout=httpx.Timeout(connect=timeout, read=None, write=timeout, pool=None),
            extensions={"trace": trace},
        )
        try:
            response = self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            reraise(exc, self.url)
        except RuntimeError as exc:  # "the client has been closed"
            raise RuntimeError("this StreamingClient is closed") from exc
        try:
            if response.status_code >= 300:
                raise error_from_body(
                    response.status_code,
                    _read_bounded(response),
                    response.reason_phrase,
                    retry_after=response.headers.get("Retry-After"),
                    url=self.url,
                    model=model,
                    headers=response.headers,
                )
            foreign = _claim_foreign(response, scope)
        except BaseException:
            response.close()
            raise
        return _Stream(response, self.url, foreign)

    def request_json(
        self, method: str, path: str, payload: bytes | None, *, timeout: float | None
    ) -> Any:
        try:
            response = self._http.request(
                method, path, content=payload, timeout=timeout
            )
            if response.status_code >= 300:
                raise error_from_body(
                    response.status_code,
                    response.content[:MAX_ERROR_BODY],
                    response.reason_phrase,
                    url=self.url,
                )
            return response.json()
        except (httpx.HTTPError, ValueError) as exc:
            reraise(exc, self.url)
        except RuntimeError as exc:  # "the client has been closed"
            raise RuntimeError("this StreamingClient is closed") from exc


def _read_bounded(response: httpx.Response) -> bytes:
    data = b""
    with contextlib.suppress(Exception):
        decoder = BodyDecoder(response.headers.get("Content-Encoding", ""))
        for raw in response.iter_raw():
            for piece in decoder.decode(raw):
                data += piece
                if len(data) >= MAX_ERROR_BODY:
                    return data[:MAX_ERROR_BODY]
    return data


def _claim_foreign(
    response: httpx.Response, scope: AbortScope | None
) -> SocketClaim | None:
    """Reach the socket of a transport that is not ours, once headers arrived."""
    stream = response.extensions.get("network_stream")
    if isinstance(stream, SocketStream) or scope is None:
        return None  # ours: claimed on every read
    sock = getattr(stream, "get_extra_info", lambda _: None)("socket")
    if not isinstance(sock, socket.socket):
        return None
    foreign = SocketClaim(sock)
    scope.claim(foreign)
    return foreign
