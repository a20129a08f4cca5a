"""Several Ollama servers behind one client: which host serves each attempt.

``Hosts`` keeps each host's state (in-flight streams, cool-down after a refused
connection) and asks its ``Router`` which one serves the next attempt: the seam
where routing strategies plug in. The default is round robin.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ._errors import ConnectionFailed, StreamError
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
    """One server: its URL, the transport that reaches it, and what the client
    knows of it (all guarded by ``Hosts``' lock)."""

    __slots__ = ("cooldown_until", "in_flight", "transport", "url")

    def __init__(self, transport: Transport) -> None:
        self.url = transport.url
        self.transport = transport
        self.cooldown_until = 0.0
        self.in_flight = 0
        """Streams of this client on this host now."""

    def __repr__(self) -> str:
        return f"<Host {self.url}>"


class Router(Protocol):
    """Chooses the host for an attempt among those not cooling down."""

    def choose(
        self, model: str | None, hosts: Sequence[Host], after: Host | None
    ) -> Host:
        """One of ``hosts`` (never empty) for ``model``; ``after`` is the host of
        the attempt that just failed, if any."""
        ...


class RoundRobin:
    """Each new stream on the next host; a retry on the host after the failed one."""

    def __init__(self) -> None:
        self._turn = itertools.count()

    def choose(
        self, model: str | None, hosts: Sequence[Host], after: Host | None
    ) -> Host:
        """The next host in turn."""
        if after is not None and after in hosts and len(hosts) > 1:
            return hosts[(hosts.index(after) + 1) % len(hosts)]
        if after is not None and len(hosts) > 1:  # the failed one is cooling down
            return hosts[0]
        return hosts[next(self._turn) % len(hosts)]


class Hosts:
    """The hosts of one client: picks one per attempt, counts streams, skips dead ones.

    Thread-safe: attempts on many workers pick and end at once.
    """

    def __init__(
        self,
        hosts: Sequence[Host],
        *,
        cooldown: float = DEFAULT_COOLDOWN,
        router: Router | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hosts = list(hosts)
        self.cooldown = cooldown
        self.router: Router = router or RoundRobin()
        self._clock = clock
        # Guards every host's cooldown_until and in_flight.
        self._lock = threading.Lock()

    def pick(self, model: str | None, after: Host | None = None) -> Host:
        """The host for the next attempt (``after``: the one that just failed)."""
        if len(self.hosts) == 1:
            host = self.hosts[0]
        else:
            now = self._clock()
            with self._lock:
                ready = [h for h in self.hosts if h.cooldown_until <= now]
            host = (
                self.router.choose(model, ready, after)
                if ready
                else min(self.hosts, key=lambda h: h.cooldown_until)
            )
            if after is not None and host is not after:
                log.info("failing over from %s to %s", after.url, host.url)
        with self._lock:
            host.in_flight += 1
        return host

    def done(self, host: Host, error: StreamError | None = None) -> None:
        """An attempt on ``host`` ended; a refused connection cools it down."""
        with self._lock:
            host.in_flight -= 1
            refused = isinstance(error, ConnectionFailed) and error.during_connect
            if refused:
                host.cooldown_until = self._clock() + self.cooldown
        if refused:
            log.warning(
                "host %s refused the connection; skipping it for %.0fs",
                host.url,
                self.cooldown,
            )

    def has_other(self, host: Host | None) -> bool:
        """Whether a host other than ``host`` is available now."""
        now = self._clock()
        with self._lock:
            return any(h is not host and h.cooldown_until <= now for h in self.hosts)

    def cooling_down(self, host: Host) -> bool:
        """Whether ``host`` is being skipped now."""
        with self._lock:
            return host.cooldown_until > self._clock()
