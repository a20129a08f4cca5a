"""The small interface the run drives, whichever HTTP stack is underneath.

A transport moves bytes and nothing else: it sends one request, hands back the
body as it arrives, and maps its library's errors into the ``StreamError`` tree
exactly once, where they happen (``reraise``). A different wire plugs in here.
"""

from __future__ import annotations

import ipaddress
import select
import socket
from collections.abc import Iterator, Mapping
from typing import Any, NoReturn, Protocol

from ollama_stream_sync._cancel import current_scope
from ollama_stream_sync._errors import translate

MAX_ERROR_BODY = 64 * 1024
"""How much of an error body we read: enough for any message, bounded for proxies."""


class OpenStream(Protocol):
    """A response whose status was 2xx; iterating yields its decoded body bytes.

    Iterating, draining and closing run on the worker thread with the stream's
    scope bound, so the connection stays claimed by the stream until it goes
    back to the pool (or is closed).
    """

    @property
    def headers(self) -> Mapping[str, str]:
        """The response headers (names matched without regard to case)."""
        ...

    def __iter__(self) -> Iterator[bytes]: ...

    def drain(self) -> None:
        """Read the rest of the body so the connection can be reused; never raises.

        The answer is complete already: the rest only decides whether the
        connection is reused, and the run bounds how long this may take.
        """
        ...

    def close(self) -> None: ...


class Transport(Protocol):
    """Sends requests to one server (its base URL), for the run and the client.

    ``open`` runs on the worker thread with the stream's ``AbortScope`` bound:
    it lets the scope claim every connection it blocks on (connecting, the TLS
    handshake, sending, waiting for the headers), so an abort wakes it, and it
    calls ``scope.on_sent()`` once the request is out (the model is loading or
    reading the prompt from then on). Errors are ``StreamError`` subclasses,
    or the scope's own stop reason when it was aborted.
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
    """Raise what ``exc`` means for the stream: its scope's stop reason when it
    was aborted (``exc`` is then only the symptom), else ``exc`` translated.

    A reason that has its own cause (a callback's exception) keeps it; the
    symptom stays as ``__context__``.
    """
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
