"""The small interface the worker drives, whichever HTTP stack is underneath."""

from __future__ import annotations

import ipaddress
import select
import socket
from collections.abc import Iterator
from typing import Any, Protocol

MAX_ERROR_BODY = 64 * 1024
"""How much of an error body we read: enough for any message, bounded for proxies."""


class OpenStream(Protocol):
    """A response whose status was 2xx; iterating yields decoded body bytes.

    Iterating and closing run on the worker thread with the stream's scope
    bound, so the connection stays claimed by the stream until it is released
    back to the pool (or closed).
    """

    def __iter__(self) -> Iterator[bytes]: ...

    def drain(self, timeout: float) -> None:
        """Read the rest of the body for at most ``timeout`` seconds, best effort.

        After the answer is complete (its ``done`` line arrived), the rest of
        the body only decides whether the connection can be reused: any error
        or silence closes it instead. Never raises.
        """
        ...

    def close(self) -> None: ...


class Transport(Protocol):
    """Sends one streaming request. Implementations map their errors into our tree.

    A transport owns no connections: the client closes the SDK clients it
    created, and a caller's session or client stays the caller's.

    ``open`` runs on the worker thread with the stream's ``AbortScope`` bound,
    and lets the scope claim every connection it blocks on (connecting, the
    TLS handshake, sending, waiting for headers), so an abort wakes it; it
    calls the scope's ``phase_hook`` once the request is sent.
    """

    def open(
        self,
        path: str,
        payload: bytes,
        *,
        connect_timeout: float | None,
        model: str | None = None,
    ) -> OpenStream:
        """POST ``payload`` (JSON, encoded by the caller) to ``path``; return once
        2xx headers arrived. ``model`` is named in errors.

        Raises:
            StreamError: a mapped transport error; ``ServerError`` for a non-2xx.
            Aborted: the bound scope was aborted.
        """
        ...

    def get_json(self, path: str, *, timeout: float | None) -> Any:
        """GET ``path`` and decode its JSON body (health checks, ``/api/ps``).

        Raises:
            StreamError: mapped as for ``open``.
        """
        ...


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
