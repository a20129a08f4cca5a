"""The small interface the worker drives, whichever HTTP stack is underneath."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any, Protocol

MAX_ERROR_BODY = 64 * 1024
"""How much of an error body we read: enough for any message, bounded for proxies."""


class OpenStream(Protocol):
    """A response whose status was 2xx; iterating yields body bytes as they arrive."""

    def __iter__(self) -> Iterator[bytes]: ...

    def close(self) -> None: ...


class Transport(Protocol):
    """Sends one streaming request. Implementations map their errors into our tree.

    A transport owns no connections: the client closes the SDK clients it
    created, and a caller's session or client stays the caller's.

    ``open`` runs on the worker thread inside a bound ``AbortScope`` and attaches
    every socket it blocks on to that scope, so an abort wakes it.
    """

    def open(
        self, path: str, body: dict[str, Any], *, connect_timeout: float | None
    ) -> OpenStream:
        """Send ``body`` as JSON to ``path``; return once 2xx headers arrived.

        Raises:
            StreamError: a mapped transport error; ``ServerError`` for a non-2xx.
            Aborted: the bound scope was aborted.
        """
        ...

    def get_json(self, path: str, *, timeout: float | None) -> Any:
        """GET ``path`` and decode its JSON body (health checks).

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
