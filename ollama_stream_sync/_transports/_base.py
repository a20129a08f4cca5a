"""The small interface the run drives, whichever HTTP stack is underneath.

A transport sends one request, hands back the body as it arrives, and maps its
library's errors into the ``StreamError`` tree once, where they happen.
"""

from __future__ import annotations

import ipaddress
import select
import socket
import sys
from collections.abc import Iterator, Mapping
from typing import Any, NoReturn, Protocol

import httpx

from ollama_stream_sync._cancel import current_scope
from ollama_stream_sync._errors import ConnectionFailed, StreamError, StreamTimeout

MAX_ERROR_BODY = 64 * 1024
"""How much of an error body we read: enough for any message, bounded for proxies."""


class OpenStream(Protocol):
    """A 2xx response; iterating yields its decoded body bytes (worker thread,
    scope bound: the connection stays claimed until it goes back to the pool)."""

    @property
    def headers(self) -> Mapping[str, str]:
        """The response headers (names matched without regard to case)."""
        ...

    def __iter__(self) -> Iterator[bytes]: ...

    def drain(self) -> None:
        """Read the rest of the body so the connection can be reused; never raises."""
        ...

    def close(self) -> None: ...


class Transport(Protocol):
    """Sends requests to one server (its base URL), for the run and the client.

    ``open`` runs with the stream's ``AbortScope`` bound: the scope claims every
    connection it blocks on (connect, TLS, send, headers), and ``scope.on_sent()``
    is called once the request is out. Errors are ``StreamError`` subclasses, or
    the scope's own stop reason when it was aborted.
    """

    url: str
    """The server's base URL, without a trailing slash."""

    def open(
        self,
        path: str,
        payload: bytes,
        *,
        timeout: float | None,
        headers: Mapping[str, str] | None = None,
        model: str | None = None,
    ) -> OpenStream:
        """POST ``payload`` (JSON) to ``path``; return once 2xx headers arrived.

        ``timeout`` bounds connecting and sending; ``model`` is named in errors.
        """
        ...

    def request_json(
        self, method: str, path: str, payload: bytes | None, *, timeout: float | None
    ) -> Any:
        """A short request whose JSON answer is read whole (``/api/ps``...)."""
        ...


def reraise(exc: BaseException, url: str) -> NoReturn:
    """Raise the scope's stop reason if it was aborted (``exc`` is then only the
    symptom, kept as cause unless the reason has its own), else ``exc`` translated."""
    scope = current_scope()
    reason = scope.stopped if scope is not None else None
    if reason is None:
        raise translate(exc, url=url) from exc
    if reason.__cause__ is not None:
        raise reason
    raise reason from exc


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an IP, IPv6 with or without brackets) is loopback."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def socket_readable(sock: socket.socket) -> bool:
    """True if ``sock`` has data or the peer closed (``poll``: no fd limit)."""
    if sock.fileno() == -1:
        return True
    try:
        poller = select.poll()
    except AttributeError:  # pragma: no cover  # Windows: select has no limit there
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable)
    poller.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
    try:
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


def translate(  # noqa: PLR0911  # one case each
    exc: BaseException, *, url: str | None = None
) -> StreamError:
    """Map any lower-level exception into the tree; the caller chains it as cause."""
    if isinstance(exc, StreamError):
        return exc
    if isinstance(exc, httpx.ConnectTimeout):
        return StreamTimeout(f"connect timed out: {exc}", which="connect", url=url)
    if isinstance(exc, httpx.ReadTimeout):
        return StreamTimeout(f"read timed out: {exc}", which="read", url=url)
    if isinstance(exc, httpx.WriteTimeout):
        return StreamTimeout(f"write timed out: {exc}", which="write", url=url)
    if isinstance(exc, httpx.PoolTimeout):
        return StreamTimeout(f"no free connection: {exc}", which="connect", url=url)
    if isinstance(exc, (httpx.ConnectError, ConnectionRefusedError)):
        return ConnectionFailed(_detail(exc), during_connect=True, url=url)
    if isinstance(exc, (httpx.TransportError, ConnectionError)):
        return ConnectionFailed(_detail(exc), url=url)
    mapped = _translate_requests(exc, url)
    if mapped is not None:
        return mapped
    if isinstance(exc, TimeoutError):
        return StreamTimeout(f"timed out: {exc}", which="read", url=url)
    if isinstance(exc, OSError):
        return ConnectionFailed(_detail(exc), url=url)
    return StreamError(f"{type(exc).__name__}: {exc}", url=url)


def _detail(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        return f"TLS certificate verification failed ({text}); pass verify= a CA file"
    if "SSL" in text or "TLS" in text or "WRONG_VERSION_NUMBER" in text:
        return f"TLS handshake failed ({text})"
    return text


def _translate_requests(  # noqa: PLR0911
    exc: BaseException, url: str | None
) -> StreamError | None:
    """requests' and urllib3's errors, if those libraries are in use at all."""
    requests = sys.modules.get("requests")
    urllib3 = sys.modules.get("urllib3")
    if requests is not None and isinstance(exc, requests.RequestException):
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            return StreamTimeout(f"connect timed out: {exc}", which="connect", url=url)
        if isinstance(exc, requests.exceptions.ReadTimeout):
            return StreamTimeout(f"read timed out: {exc}", which="read", url=url)
        inner = exc.args[0] if exc.args else None
        inner = getattr(inner, "reason", inner)  # MaxRetryError wraps the cause
        if isinstance(inner, BaseException) and inner is not exc:
            mapped = _translate_requests(inner, url)
            if mapped is not None:
                return mapped
        if isinstance(exc, requests.exceptions.SSLError):
            return ConnectionFailed(_detail(exc), during_connect=True, url=url)
        return ConnectionFailed(_detail(exc), url=url)
    if urllib3 is not None and isinstance(exc, urllib3.exceptions.HTTPError):
        errors = urllib3.exceptions
        # NewConnectionError subclasses ConnectTimeoutError: test it first.
        if isinstance(exc, (errors.NewConnectionError, errors.NameResolutionError)):
            return ConnectionFailed(_detail(exc), during_connect=True, url=url)
        if isinstance(exc, errors.ConnectTimeoutError):
            return StreamTimeout(f"connect timed out: {exc}", which="connect", url=url)
        if isinstance(exc, errors.ReadTimeoutError):
            return StreamTimeout(f"read timed out: {exc}", which="read", url=url)
        if isinstance(exc, errors.SSLError):
            return ConnectionFailed(_detail(exc), during_connect=True, url=url)
        if isinstance(exc, errors.MaxRetryError) and exc.reason is not None:
            return _translate_requests(exc.reason, url) or translate(
                exc.reason, url=url
            )
        return ConnectionFailed(_detail(exc), url=url)
    return None
