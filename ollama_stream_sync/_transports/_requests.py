"""Streaming over a caller's ``requests.Session``: their proxies, CA bundle, auth.

Requests go through the session as ``Session.request`` sends them, so its auth,
hooks, cookies, proxies and adapters apply. To let a cancel reach the socket in
every phase, the pool the adapter picks for our URL gets (through its public
``ConnectionCls``) a class derived from its own that, on a thread running one of
our streams, lets the scope claim the connection when the pool hands it out and
while it resolves, connects (a dup of the socket covers the TLS or tunnel
handshake, since wrapping detaches it), sends and waits; elsewhere it is its base.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import threading
import traceback
from collections.abc import Iterator, Mapping
from typing import Any

import requests
import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    NameResolutionError,
    NewConnectionError,
)

from ollama_stream_sync import _cancel
from ollama_stream_sync._cancel import (
    AbortScope,
    SocketClaim,
    connect,
    current_scope,
    disown,
    resolve,
)
from ollama_stream_sync._errors import error_from_body
from ollama_stream_sync._result import Headers

from . import _compat
from ._base import MAX_ERROR_BODY, is_loopback, reraise

READ_SIZE = 65536
_LIBRARY_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError)

log = logging.getLogger("ollama_stream_sync")

# Guards _classes: transports are built on many threads.
_classes_lock = threading.Lock()
_classes: dict[type[Any], type[Any]] = {}


class _Tracking:
    """Mixed into a copy of a pool's connection class; idle on other threads."""

    owner: AbortScope | None = None
    _oss_abort_sock: socket.socket | None = None
    _oss_response_sock: socket.socket | None = None
    _oss_dup = False
    _oss_pid = 0  # made before tracking began (or in a parent): never reused
    _oss_base: type[Any]  # the pool's own class, set per tracking class

    sock: Any

    def shutdown(self) -> None:
        """Wake whoever blocks on this connection (its owner's abort)."""
        sock = self._oss_abort_sock or self.sock or self._oss_response_sock
        if isinstance(sock, socket.socket):
            _cancel.shutdown_socket(sock)

    def _oss_claim(self) -> AbortScope | None:
        scope = current_scope()
        if scope is not None and self.owner is not scope:
            scope.claim(self)
        return scope

    @property
    def is_connected(self) -> bool:
        # Asked as the pool hands the connection out: ownership changes hands. A
        # stale abort of the last owner came before (the socket reads closed:
        # not reused) or is refused.
        if self._oss_pid != os.getpid():
            return False  # inherited across fork(): shared with the parent
        if current_scope() is not None:
            try:
                self._oss_claim()
            except BaseException:
                self.close()  # urllib3 drops it without closing it
                raise
        else:
            disown(self)
        return bool(super().is_connected)  # type: ignore[misc]

    def _new_conn(self) -> socket.socket:  # see _compat.NEW_CONN
        self._oss_pid = os.getpid()
        scope = current_scope()
        base = getattr(self._oss_base, _compat.NEW_CONN)
        if scope is None or base is not urllib3.connection.HTTPConnection._new_conn:
            sock: socket.socket = base(self)
            if scope is not None:
                # A class with its own _new_conn (SOCKS...) gave us no socket
                # to shut down while it connected: check the scope now.
                try:
                    self._oss_claim()
                    scope.check()
                except BaseException:
                    sock.close()
                    raise
            return sock
        return self._oss_connect(scope)

    def _oss_connect(self, scope: AbortScope) -> socket.socket:
        """urllib3's ``create_connection``, the socket claimed before it blocks."""
        conn: Any = self
        timeout = conn.timeout
        try:
            infos = resolve(
                conn.host.strip("[]"),
                conn.port,
                urllib3.util.connection.allowed_gai_family(),
                timeout=timeout if isinstance(timeout, (int, float)) else None,
            )
        except socket.gaierror as exc:
            raise NameResolutionError(conn.host, conn, exc) from exc
        except TimeoutError as exc:
            raise ConnectTimeoutError(conn, f"resolving {conn.host} timed out") from exc
        error: OSError | None = None
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            try:
                self._oss_abort_via(sock)
                scope.claim(self)
                for option in conn.socket_options or ():
                    sock.setsockopt(*option)
                if isinstance(timeout, (int, float)) or timeout is None:
                    sock.settimeout(timeout)
                if conn.source_address:
                    sock.bind(conn.source_address)
                connect(sock, address)  # a cancel ends it, whenever it lands
            except BaseException as exc:
                self._oss_abort_via(None)
                sock.close()
                scope.check()  # a cancel: nothing more to try
                if isinstance(exc, TimeoutError):
                    raise ConnectTimeoutError(
                        conn, f"Connection to {conn.host} timed out ({timeout}s)"
                    ) from exc
                if not isinstance(exc, OSError):
                    raise
                error = exc
                continue
            sys.audit("http.client.connect", self, conn.host, conn.port)
            if isinstance(self, urllib3.connection.HTTPSConnection) or (
                conn.proxy_is_tunneling
            ):
                # TLS wrapping detaches this socket object before its handshake;
                # a duplicate keeps it reachable until connect() ends.
                self._oss_abort_via(sock.dup(), dup=True)
            return sock
        raise NewConnectionError(conn, f"Failed to establish a new connection: {error}")

    def _oss_abort_via(self, sock: socket.socket | None, dup: bool = False) -> None:
        """The socket an abort shuts down while connecting (None: ``self.sock``)."""
        with _cancel.owner_lock():
            self._oss_abort_sock, self._oss_dup = sock, dup

    def connect(self) -> None:
        try:
            super().connect()  # type: ignore[misc]
        finally:
            with _cancel.owner_lock():
                sock, self._oss_abort_sock = self._oss_abort_sock, None
                dup, self._oss_dup = self._oss_dup, False
            if dup and sock is not None:
                sock.close()  # the handshake is over: self.sock is reachable now

    def request(self, *args: Any, **kwargs: Any) -> Any:
        self._oss_claim()
        return super().request(*args, **kwargs)  # type: ignore[misc]

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        scope = self._oss_claim()
        if scope is not None:
            scope.on_sent()  # the request is out: now the model loads
        # A ``Connection: close`` response takes the socket over and http.client
        # drops ``self.sock``: keep it, so an abort still reaches the stream.
        self._oss_response_sock = self.sock
        return super().getresponse(*args, **kwargs)  # type: ignore[misc]

    def close(self) -> None:
        disown(self)
        super().close()  # type: ignore[misc]


def track_pool(pool: Any) -> None:
    """Give ``pool`` a connection class that streams can claim (one per base)."""
    base = getattr(pool, "ConnectionCls", None)
    if base is None or issubclass(base, _Tracking):
        return
    with _classes_lock:
        cls = _classes.get(base)
        if cls is None:
            cls = _classes[base] = type(
                f"Tracking{base.__name__}",
                (_Tracking, base),
                {"__module__": __name__, "_oss_base": base},
            )
    pool.ConnectionCls = cls
    _compat.drop_idle(pool, keep=cls)


class _PoolFullFilter(logging.Filter):
    """Turns urllib3's "Connection pool is full" for our streams into one advice
    per host (more streams than the session's pool keeps is normal)."""

    def __init__(self) -> None:
        super().__init__()
        self.advised: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if current_scope() is None or not str(record.msg).startswith(
            "Connection pool is full"
        ):
            return True
        host = str(record.args[0]) if isinstance(record.args, tuple) else "?"
        if host not in self.advised:
            self.advised.add(host)
            log.warning(
                "more concurrent streams to %s than the requests.Session's pool "
                "keeps connections: extra ones are closed after use; mount "
                "requests.adapters.HTTPAdapter(pool_maxsize=N) to keep more",
                host,
            )
        return False


_pool_full = _PoolFullFilter()


class _Stream:
    __slots__ = ("_decode", "_response", "_url", "headers")

    def __init__(self, response: requests.Response, url: str) -> None:
        self._response = response
        self._url = url
        encoding = response.headers.get("Content-Encoding", "")
        self._decode = bool(encoding) and encoding.lower() != "identity"
        self.headers = Headers(response.headers.items())

    def __iter__(self) -> Iterator[bytes]:
        read1 = self._response.raw.read1
        try:
            # urllib3 >= 2.6 bounds decoded output by the size asked for.
            while data := read1(READ_SIZE, decode_content=self._decode):
                yield data
        except (*_LIBRARY_ERRORS, OSError) as exc:
            _drop_locals(exc)
            reraise(exc, self._url)

    def drain(self) -> None:
        with contextlib.suppress(Exception):
            for _ in self:
                pass
        self.close()

    def close(self) -> None:
        _close(self._response)


_ENVIRONMENT = (
    *("http_proxy", "https_proxy", "all_proxy", "no_proxy"),
    *("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"),
    *("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "REQUEST_METHOD"),
)
"""The variables that decide ``merge_environment_settings`` for an http(s) URL
(``REQUEST_METHOD``: a CGI process ignores ``HTTP_PROXY``)."""


class RequestsTransport:
    """Our ``Transport`` over a ``requests.Session`` the caller configured."""

    def __init__(
        self, session: requests.Session, base_url: str, headers: Mapping[str, str]
    ) -> None:
        logging.getLogger("urllib3.connectionpool").addFilter(_pool_full)
        self._session = session
        self.url = base_url.rstrip("/")
        # The SDK's headers (User-Agent, OLLAMA_API_KEY) unless the session's win.
        own = {h.lower() for h in session.headers}
        self._headers = {
            k: v
            for k, v in headers.items()
            if k.lower() not in own
            and not (k.lower() == "authorization" and session.auth is not None)
            and k.lower() != "accept-encoding"  # requests' own: it decodes those
        }
        self._headers |= {
            "Accept": "application/x-ndjson",
            "Content-Type": "application/json",
        }
        # A loopback Ollama never goes through the environment's proxy: blank
        # entries override it (the session's own proxies still apply).
        loopback = is_loopback(urllib3.util.parse_url(self.url).host or "")
        self._proxies = {k: "" for k in ("http", "https") if loopback}
        self._settings: tuple[Any, Any] | None = None
        """The last ``merge_environment_settings`` answer and what it depends on."""

    def _send(
        self,
        method: str,
        path: str,
        data: bytes | None,
        *,
        timeout: Any,
        stream: bool,
        headers: Mapping[str, str] | None = None,
    ) -> requests.Response:
        session = self._session
        prepared = session.prepare_request(
            requests.Request(
                method,
                self.url + path,
                data=data,
                headers=self._headers | dict(headers or {}),
            )
        )
        url = prepared.url or self.url + path
        settings = self._environment(url, stream)
        adapter = session.get_adapter(url)
        pool_for = getattr(adapter, "get_connection_with_tls_context", None)
        if pool_for is not None:
            with contextlib.suppress(Exception):  # send() below reports errors
                track_pool(
                    pool_for(
                        prepared,
                        settings["verify"],
                        settings["proxies"],
                        settings["cert"],
                    )
                )
        return session.send(prepared, timeout=timeout, allow_redirects=True, **settings)

    def _environment(self, url: str, stream: bool) -> dict[str, Any]:
        """The proxies, verify and cert a request gets, as ``Session.request`` merges
        them, reused while nothing they come from changed: requests scans the
        whole environment several times for them (~85 us a call)."""
        session = self._session
        key = (
            url,
            stream,
            session.trust_env,
            list(session.proxies.items()),
            session.verify,
            session.cert,
            [os.environ.get(name) for name in _ENVIRONMENT],
        )
        cached = self._settings
        if cached is None or cached[0] != key:
            blanks = {k: "" for k in self._proxies if k not in session.proxies}
            merged = session.merge_environment_settings(url, blanks, stream, None, None)
            self._settings = cached = (key, merged)
        settings: dict[str, Any] = dict(cached[1])
        settings["proxies"] = dict(settings["proxies"])  # the caller's own copy
        return settings

    def open(
        self,
        path: str,
        payload: bytes,
        *,
        timeout: float | None,
        headers: Mapping[str, str] | None = None,
        model: str | None = None,
    ) -> _Stream:
        try:
            # Silences between chunks are policed by the stream's own timers.
            response = self._send(
                "POST",
                path,
                payload,
                timeout=(timeout, None),
                stream=True,
                headers=headers,
            )
        except BaseException as exc:
            _drop_locals(exc)  # a stop raised inside urllib3 too: see _drop_locals
            if not isinstance(exc, _LIBRARY_ERRORS):
                raise
            reraise(exc, self.url)
        if response.status_code >= 300:
            error = error_from_body(
                response.status_code,
                _read_bounded(response),
                response.reason or "",
                retry_after=response.headers.get("Retry-After"),
                url=self.url,
                model=model,
                headers=response.headers,
            )
            _close(response)
            del response  # the error's traceback must not keep the connection
            raise error
        try:
            scope = current_scope()
            conn = response.raw.connection
            if scope is not None and conn is not None:
                sock = getattr(conn, "sock", None)
                if isinstance(conn, _Tracking):
                    scope.claim(conn)
                elif isinstance(sock, socket.socket):
                    scope.claim(SocketClaim(sock))
        except BaseException:
            _close(response)
            raise
        return _Stream(response, self.url)

    def request_json(
        self, method: str, path: str, payload: bytes | None, *, timeout: float | None
    ) -> Any:
        try:
            response = self._send(method, path, payload, timeout=timeout, stream=False)
            if response.status_code >= 300:
                raise error_from_body(
                    response.status_code,
                    response.content[:MAX_ERROR_BODY],
                    response.reason or "",
                    url=self.url,
                )
            return response.json()
        except (*_LIBRARY_ERRORS, ValueError) as exc:
            _drop_locals(exc)
            reraise(exc, self.url)


def _drop_locals(exc: BaseException) -> None:
    """Clear the locals of the frames an error (and its causes) went through.

    Their frames hold the connection pool, and since urllib3 2 a pool closes
    its idle connections only once nothing references it. Still printable.
    """
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        traceback.clear_frames(error.__traceback__)
        error = error.__cause__ or error.__context__


def _close(response: requests.Response) -> None:
    """Release a response's connection, then its link to the pool."""
    raw = response.raw
    conn = raw.connection if raw is not None else None
    if isinstance(conn, _Tracking):
        disown(conn)
    response.close()
    _compat.forget_pool(raw)


def _read_bounded(response: requests.Response) -> bytes:
    with contextlib.suppress(*_LIBRARY_ERRORS):
        return bytes(response.raw.read(MAX_ERROR_BODY, decode_content=True) or b"")
    return b""
