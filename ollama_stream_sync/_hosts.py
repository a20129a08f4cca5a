"""Several Ollama servers behind one client: spread streams, skip dead ones a while."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ._errors import ConnectionFailed
from ._transports._base import Transport

log = logging.getLogger("ollama_stream_sync")

DEFAULT_COOLDOWN = 30.0
"""Seconds a host that refused a connection is skipped."""


@dataclass(frozen=True)
class HostHealth:
    """One host's state as ``StreamingClient.health()`` found it.

    Attributes:
        url: the host's base URL.
        reachable: it answered ``/api/version``.
        version: Ollama's version string, when reachable.
        latency: seconds the version request took, when reachable.
        cooling_down: it is being skipped after a refused connection.
        error: why it was not reachable.
    """

    url: str
    reachable: bool
    version: str | None = None
    latency: float | None = None
    cooling_down: bool = False
    error: str | None = None


class Host:
    """One server: its URL and the transport that reaches it."""

    __slots__ = ("cooldown_until", "transport", "url")

    def __init__(self, url: str, transport: Transport) -> None:
        self.url = url
        self.transport = transport
        self.cooldown_until = 0.0

    def __repr__(self) -> str:
        return f"<Host {self.url}>"


class HostPool:
    """Picks the host for each attempt: round robin, skipping hosts in cool-down."""

    def __init__(
        self,
        hosts: Sequence[Host],
        *,
        cooldown: float = DEFAULT_COOLDOWN,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not hosts:
            raise ValueError("at least one host is needed")
        self.hosts = list(hosts)
        self.cooldown = cooldown
        self._clock = clock
        # Guards the rotation and every host's cooldown_until.
        self._lock = threading.Lock()
        self._next = itertools.cycle(range(len(self.hosts)))

    def pick(self, after: Host | None = None) -> Host:
        """The host for the next attempt: after ``after`` when retrying."""
        hosts = self.hosts
        if len(hosts) == 1:
            return hosts[0]
        now = self._clock()
        with self._lock:
            start = (
                (hosts.index(after) + 1) % len(hosts)
                if after is not None
                else next(self._next)
            )
            order = hosts[start:] + hosts[:start]
            for host in order:
                if host.cooldown_until <= now:
                    chosen = host
                    break
            else:  # all cooling down: the one that recovers first
                chosen = min(order, key=lambda h: h.cooldown_until)
        if after is not None and chosen is not after:
            log.info("failing over from %s to %s", after.url, chosen.url)
        return chosen

    def has_other(self, host: Host | None) -> bool:
        """Whether a host other than ``host`` is available now."""
        now = self._clock()
        with self._lock:
            return any(h is not host and h.cooldown_until <= now for h in self.hosts)

    def failed(self, host: Host, error: BaseException) -> None:
        """Note a failure; a refused connection puts the host in cool-down."""
        if isinstance(error, ConnectionFailed) and error.during_connect:
            with self._lock:
                host.cooldown_until = self._clock() + self.cooldown
            log.warning(
                "host %s refused the connection; skipping it for %.0fs",
                host.url,
                self.cooldown,
            )

    def cooling_down(self, host: Host) -> bool:
        """Whether ``host`` is being skipped now."""
        with self._lock:
            return host.cooldown_until > self._clock()
