"""Streaming over a caller's ``requests.Session``: their proxies, CA bundle, auth.

Legacy and corporate code often has a configured session (a proxy, a CA bundle,
Kerberos or NTLM auth, mounted adapters) that httpx knows nothing of. This
transport sends our requests through it: ``prepare_request``,
``merge_environment_settings`` and ``send``, exactly what ``Session.request``
does, so its auth, hooks, cookies and adapters all apply.

Cancel must reach the socket in every phase, including before the response
headers (a model loading), and only the stream's own socket. Before sending,
we ask the session's adapter for the connection pool it will use for our URL
(``get_connection_with_tls_context``) and give that one pool a connection class
derived from its own: it behaves exactly like its base, except that on a
thread running one of our streams (a bound ``AbortScope``) the scope claims the
connection when the pool hands it out (atomically with urllib3's liveness
check), while it resolves and connects (name resolution cancellable), during
the TLS handshake (through a duplicate of the socket, since wrapping detaches
the original), while sending and while waiting for the response. On every
other thread it does nothing at all. Nothing else in the process is touched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Mapping
from typing import Any

import requests
import urllib3
from urllib3 import connection as u3conn
from urllib3.exceptions import (
    ConnectTimeoutError,
    NameResolutionError,
    NewConnectionError,
)

from ollama_stream_sync._abort import (
    Aborted,
    AbortScope,
    SocketClaim,
    _lock,
    connect,
    current_scope,
    disown,
    resolve,
    shutdown_socket,
)
from ollama_stream_sync._errors import translate
from ollama_stream_sync._ndjson import error_from_body

from ._base import MAX_ERROR_BODY, is_loopback

READ_SIZE = 65536

log = logging.getLogger("ollama_stream_sync")

_classes: dict[type[Any], type[Any]] = {}
# Guards _classes and the one-time setup below.
_classes_lock = threading.Lock()
_plain_new_conn = u3conn.HTTPConnection._new_conn


class _Tracking:
    """Mixed into a copy of a pool's connection class; idle on other threads."""

    _oss_tracking = True
    owner: AbortScope | None = None
    _oss_abort_sock: socket.socket | None = None
    _oss_dup = False
    _oss_pid = 0  # connections made before tracking began: never reused here
    _oss_base_new_conn: Any = None  # set per class: the base's _new_conn

    sock: Any

    def shutdown(self) -> None:
        """Wake whoever blocks on this connection (its owner's abort)."""
        sock = self._oss_abort_sock or self.sock
        if isinstance(sock, socket.socket):
            shutdown_socket(sock)

    def _oss_claim(self) -> AbortScope | None:
        scope = current_scope()
        if scope is not None and self.owner is not scope:
            scope.claim(self)
        return scope

    @property
    def is_connected(self) -> bool:
        # urllib3 asks this when its pool hands the connection out: the one
        # moment ownership changes hands. A stale abort from the last owner
        # either happened before (the socket reads as closed: not reused) or
        # is refused after.
        if self._oss_pid != os.getpid():
            return False  # inherited across fork(): shared with the parent
        if current_scope() is not None:
            try:
                self._oss_claim()
            except Aborted:
                # A cancelled stream took it: urllib3 drops a connection whose
                # check raises without closing it, so close it here.
                self.close()
                raise
        else:
            disown(self)
        return bool(super().is_connected)  # type: ignore[misc]

    def _new_conn(self) -> socket.socket:
        self._oss_pid = os.getpid()
        scope = current_scope()
        if scope is None or type(self)._oss_base_new_conn is not _plain_new_conn:
            sock: socket.socket = super()._new_conn()  # type: ignore[misc]
            if scope is not None:
                # A class with its own _new_conn (SOCKS...) gave us no socket to
                # shut down while it connected: a cancel then found nothing to
                # wake and the scope may already own this connection (claimed
                # in request()), so check it here, and close what it made.
                try:
                    self._oss_claim()
                    scope.check()
                except BaseException:
                    sock.close()
                    raise
            return sock
        return self._oss_connect(scope)

    def _oss_connect(self, scope: AbortScope) -> socket.socket:
        """urllib3's ``create_connection``, with the socket claimed before it blocks."""
        conn: Any = self
        host: str = conn._dns_host
        if host.startswith("["):
            host = host.strip("[]")
        timeout = conn.timeout
        wait = timeout if isinstance(timeout, (int, float)) else None
        try:
            infos = resolve(
                host,
                conn.port,
                urllib3.util.connection.allowed_gai_family(),
                timeout=wait,
            )
        except socket.gaierror as exc:
            raise NameResolutionError(conn.host, conn, exc) from exc
        except TimeoutError as exc:
            raise ConnectTimeoutError(
                conn, f"Connection to {conn.host} timed out (resolving its name)."
            ) from exc
        error: OSError | None = None
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            try:
                self._oss_set_abort_sock(sock)
                scope.claim(self)
                for option in conn.socket_options or ():
                    sock.setsockopt(*option)
                if isinstance(timeout, (int, float)) or timeout is None:
                    sock.settimeout(timeout)
                if conn.source_address:
                    sock.bind(conn.source_address)
                connect(sock, address)  # a cancel ends it, whenever it lands
            except BaseException as exc:
                self._oss_set_abort_sock(None)
                sock.close()
                scope.check()  # a cancel: nothing more to try
                if isinstance(exc, TimeoutError):
                    raise ConnectTimeoutError(
                        conn,
                        f"Connection to {conn.host} timed out. "
                        f"(connect timeout={timeout})",
                    ) from exc
                if not isinstance(exc, OSError):
                    raise
                error = exc
                continue
            sys.audit("http.client.connect", self, conn.host, conn.port)
            if isinstance(self, u3conn.HTTPSConnection) or conn._tunnel_host:
                # TLS wrapping detaches this socket object before its
                # handshake; a duplicate keeps the connection reachable until
                # connect() ends.
                self._oss_set_abort_sock(sock.dup(), dup=True)
            return sock
        raise NewConnectionError(
            conn, f"Failed to establish a new connection: {error or 'no address'}"
        )

    def _oss_set_abort_sock(
        self, sock: socket.socket | None, dup: bool = False
    ) -> None:
        """The socket an abort shuts down while connecting (None: ``self.sock``)."""
        with _lock:
            self._oss_abort_sock = sock
            self._oss_dup = dup

    def connect(self) -> None:
        try:
            super().connect()  # type: ignore[misc]
        finally:
            with _lock:
                sock, self._oss_abort_sock = self._oss_abort_sock, None
                dup, self._oss_dup = self._oss_dup, False
            if dup and sock is not None:
                sock.close()  # the handshake is over: self.sock is reachable now

    def request(self, *args: Any, **kwargs: Any) -> Any:
        self._oss_claim()
        return super().request(*args, **kwargs)  # type: ignore[misc]

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        scope = self._oss_claim()
        hook = scope.phase_hook if scope is not None else None
        if hook is not None:
            hook()  # the request is out: now we wait for the model
        return super().getresponse(*args, **kwargs)  # type: ignore[misc]

    def close(self) -> None:
        disown(self)
        super().close()  # type: ignore[misc]


def tracking_class(base: type[Any]) -> type[Any]:
    """``base`` with stream tracking mixed in (one class per base, cached)."""
    if getattr(base, "_oss_tracking", False):
        return base
    with _classes_lock:
        cls = _classes.get(base)
        if cls is None:
            cls = type(
                f"Tracking{base.__name__}",
                (_Tracking, base),
                {"_oss_base_new_conn": base._new_conn, "__module__": __name__},
            )
            _classes[base] = cls
        return cls


def track_pool(pool: Any) -> None:
    """Give ``pool`` (and the connections it already holds) the tracking class."""
    base = getattr(pool, "ConnectionCls", None)
    if base is None or getattr(base, "_oss_tracking", False):
        return
    cls = tracking_class(base)
    pool.ConnectionCls = cls
    queue = getattr(pool, "pool", None)
    mutex = getattr(queue, "mutex", None)
    if queue is None or mutex is None:
        return
    with mutex:
        for conn in list(queue.queue):
            if conn is not None and type(conn) is base:
                conn.__class__ = cls  # only adds behaviour on our threads


class _PoolFullFilter(logging.Filter):
    """Mutes urllib3's "Connection pool is full" for our own streams, once advised.

    A client running more streams than the session's pool keeps is normal; the
    advice (mount an ``HTTPAdapter(pool_maxsize=...)``) is logged once instead.
    """

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


_filter: _PoolFullFilter | None = None


def _install_filter() -> None:
    global _filter  # noqa: PLW0603  # once per process, on first use
    with _classes_lock:
        if _filter is None:
            _filter = _PoolFullFilter()
            logging.getLogger("urllib3.connectionpool").addFilter(_filter)


class _RequestsOpenStream:
    __slots__ = ("_decode", "_response", "_url")

    def __init__(self, response: requests.Response, url: str) -> None:
        self._response = response
        self._url = url
        encoding = response.headers.get("Content-Encoding", "")
        self._decode = bool(encoding) and encoding.lower() != "identity"

    def __iter__(self) -> Iterator[bytes]:
        raw = self._response.raw
        read1 = raw.read1
        decode = self._decode
        try:
            while True:
                # urllib3 >= 2.6 bounds decoded output by the size asked for.
                data = read1(READ_SIZE, decode_content=decode)
                if not data:
                    return
                yield data
        except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as e:
            _drop_locals(e)
            raise translate(e, url=self._url) from e

    def drain(self, timeout: float) -> None:
        raw = self._response.raw
        conn = raw.connection
        sock = getattr(conn, "sock", None)
        if isinstance(sock, socket.socket):
            # A socket timeout bounds each read; the deadline bounds them all
            # (a server trickling bytes after done would otherwise hold us).
            deadline = time.monotonic() + timeout
            with contextlib.suppress(Exception):
                while (remaining := deadline - time.monotonic()) > 0:
                    sock.settimeout(remaining)
                    if not raw.read1(READ_SIZE, decode_content=self._decode):
                        break
        self.close()

    def close(self) -> None:
        _close(self._response)


class RequestsStreamTransport:
    """Our ``Transport`` over a ``requests.Session`` the caller configured."""

    def __init__(
        self,
        session: requests.Session,
        base_url: str,
        headers: Mapping[str, str],
    ) -> None:
        _install_filter()
        self._session = session
        self._base = base_url.rstrip("/")
        # The SDK's headers (User-Agent, OLLAMA_API_KEY as Authorization) unless
        # the session sets its own: its auth and headers win.
        self._headers = {
            k: v
            for k, v in headers.items()
            if k.lower() not in {h.lower() for h in session.headers}
            and not (k.lower() == "authorization" and session.auth is not None)
            and k.lower() != "accept-encoding"  # requests' own: it decodes those
        }
        self._headers["Accept"] = "application/x-ndjson"
        self._headers["Content-Type"] = "application/json"
        host = urllib3.util.parse_url(self._base).host or ""
        # A proxy never makes sense for a loopback Ollama (proxy variables would
        # otherwise divert it); blank entries override the environment's.
        self._proxies: dict[str, str] = (
            {"http": "", "https": ""} if is_loopback(host) else {}
        )
        # What the environment says for our base URL, read once (as httpx
        # does): requests scans all of os.environ twice per request otherwise.
        self._env_proxies = requests.utils.get_environ_proxies(self._base)
        self._env_verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get(
            "CURL_CA_BUNDLE"
        )
        self._plain_merge = (
            type(session).merge_environment_settings
            is requests.Session.merge_environment_settings
        )

    def _send(
        self, method: str, path: str, *, data: bytes | None, timeout: Any, stream: bool
    ) -> requests.Response:
        session = self._session
        request = requests.Request(
            method, self._base + path, data=data, headers=self._headers
        )
        prepared = session.prepare_request(request)
        url = prepared.url or self._base + path
        settings = self._settings(url, stream)
        adapter = session.get_adapter(url)
        pool_for = getattr(adapter, "get_connection_with_tls_context", None)
        if pool_for is not None:
            with contextlib.suppress(Exception):  # the send below reports errors
                track_pool(
                    pool_for(
                        prepared,
                        settings["verify"],
                        settings["proxies"],
                        settings["cert"],
                    )
                )
        return session.send(prepared, timeout=timeout, allow_redirects=True, **settings)

    def _settings(self, url: str, stream: bool) -> dict[str, Any]:
        """``Session.merge_environment_settings``, with the environment read once.

        A session class that overrides the method keeps its own, per request.
        """
        session = self._session
        if not self._plain_merge:
            return dict(
                session.merge_environment_settings(
                    url, dict(self._proxies), stream, None, None
                )
            )
        proxies = dict(self._proxies)
        verify = None
        if session.trust_env:
            for key, value in self._env_proxies.items():
                proxies.setdefault(key, value)
            verify = self._env_verify
        merge: Any = requests.sessions.merge_setting  # untyped in types-requests
        return {
            "proxies": merge(proxies, session.proxies),
            "stream": merge(stream, session.stream),
            "verify": merge(verify, session.verify),
            "cert": merge(None, session.cert),
        }

    def open(
        self,
        path: str,
        payload: bytes,
        *,
        connect_timeout: float | None,
        model: str | None = None,
    ) -> _RequestsOpenStream:
        try:
            response = self._send(
                "POST",
                path,
                data=payload,
                # Silences between chunks are policed by our own timers.
                timeout=(connect_timeout, None),
                stream=True,
            )
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            _drop_locals(exc)
            raise translate(exc, url=self._base) from exc
        if response.status_code >= 300:
            error = error_from_body(
                response.status_code,
                _read_bounded(response),
                response.reason or "",
                retry_after=response.headers.get("Retry-After"),
                url=self._base,
                model=model,
            )
            _close(response)
            del response  # the error's traceback must not keep the connection
            raise error
        try:
            scope = current_scope()
            conn = response.raw.connection
            if scope is not None and conn is not None:
                if isinstance(conn, _Tracking):
                    scope.claim(conn)
                else:
                    sock = getattr(conn, "sock", None)
                    if isinstance(sock, socket.socket):
                        scope.claim(SocketClaim(sock))
        except BaseException:
            _close(response)
            raise
        return _RequestsOpenStream(response, self._base)

    def get_json(self, path: str, *, timeout: float | None) -> Any:
        try:
            response = self._send("GET", path, data=None, timeout=timeout, stream=False)
            if response.status_code >= 300:
                raise error_from_body(
                    response.status_code,
                    response.content[:MAX_ERROR_BODY],
                    response.reason or "",
                    url=self._base,
                )
            return response.json()
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            _drop_locals(exc)
            raise translate(exc, url=self._base) from exc
        except ValueError as exc:
            raise translate(exc, url=self._base) from exc


def _drop_locals(exc: BaseException) -> None:
    """Clear the locals of the requests and urllib3 frames an error went through.

    Our error keeps theirs as its cause, traceback included, and their frames
    hold the connection pool (and a response): since urllib3 2 a pool closes its
    idle connections only once nothing references it, so a kept error would
    keep them open after ``session.close()``. The traceback stays printable.
    """
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        traceback.clear_frames(error.__traceback__)
        error = error.__cause__ or error.__context__


def _close(response: requests.Response) -> None:
    """Release a response's connection (back to the pool, or closed).

    Then cut the response's link to its pool: a kept error's traceback keeps
    the response (in our frames and urllib3's), and since urllib3 2 a pool
    closes its idle connections only once nothing references it, not on
    ``session.close()``.
    """
    raw = response.raw
    conn = raw.connection if raw is not None else None
    if isinstance(conn, _Tracking):
        disown(conn)
    response.close()
    if raw is not None and hasattr(raw, "_pool"):
        raw._pool = None


def _read_bounded(response: requests.Response) -> bytes:
    with contextlib.suppress(requests.RequestException, urllib3.exceptions.HTTPError):
        return bytes(response.raw.read(MAX_ERROR_BODY, decode_content=True) or b"")
    return b""
