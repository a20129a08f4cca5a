"""Several Ollama servers behind one client: which host serves each attempt.

``Hosts`` keeps what the client knows of each host (streams in flight, a breaker,
its models, its last time to first token) and asks a ``Router`` which healthy one
serves. Model lists are refreshed on background threads, never in a pick.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import itertools
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Literal, Protocol, cast

from ._errors import (
    ConnectionFailed,
    ModelNotFound,
    ServerError,
    StreamError,
    StreamTimeout,
)
from ._transports._base import Transport

log = logging.getLogger("ollama_stream_sync")

DEFAULT_COOLDOWN = 30.0
"""Seconds an open breaker keeps its host out before one probe may try it."""
FAILURES_TO_OPEN = 3
"""Consecutive failures (connection, 5xx) that open a breaker; a refused
connection opens it at once (nothing listens there)."""
MODELS_TTL = 10.0
"""Seconds a host's model lists serve routing before a background refresh."""

BreakerState = Literal["closed", "open", "half_open"]
Lister = Callable[["Host"], tuple[Iterable[str], Iterable[str]]]
"""Asks one host for its models: (loaded in memory, available on disk)."""


@functools.lru_cache(maxsize=1024)
def model_key(name: str) -> str:
    """A model name as Ollama matches it: ``qwen3`` is ``qwen3:latest``, case
    does not count, nor the default registry, nor a ``:cloud``/``:local``
    source suffix (``modelref.ParseRef`` in Ollama's source)."""
    name = name.strip().lower()
    base, colon, suffix = name.rpartition(":")
    if colon and suffix in ("cloud", "local"):
        name = base
    elif colon and "/" not in suffix and suffix.endswith("-cloud"):
        name = f"{base}:{suffix.removesuffix('-cloud')}"
    name = name.removeprefix("registry.ollama.ai/").removeprefix("library/")
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def same_model(a: str, b: str) -> bool:
    """Whether two model names mean the same model (``qwen3`` is ``qwen3:latest``)."""
    return model_key(a) == model_key(b)


def _holds(names: Iterable[str] | None, model: str) -> bool:
    key = model_key(model)
    return names is not None and any(model_key(n) == key for n in names)


def _drop(names: tuple[str, ...] | None, model: str) -> tuple[str, ...] | None:
    key = model_key(model)
    return None if names is None else tuple(n for n in names if model_key(n) != key)


@dataclass(frozen=True)
class HostHealth:
    """One host as the client knows it: from ``StreamingClient.health()``, or
    as a ``Router`` sees it when choosing (then ``reachable`` means its breaker
    lets it be tried, and ``version``, ``latency`` and ``error`` are ``None``).

    Attributes:
        url: the host's base URL.
        reachable: it answered ``/api/version``.
        version: Ollama's version string, when reachable.
        latency: seconds the version request took, when reachable.
        cooling_down: its breaker is open: it is skipped for now.
        error: why it was not reachable.
        breaker: "closed" (in use), "open" (skipped until its cool-down ends)
            or "half_open" (one stream may try it; its outcome decides).
        in_flight: this client's streams on it now.
        models_loaded: the models in its memory (``/api/ps``); ``None``: unknown.
        models_available: the models it has (``/api/tags``); ``None``: unknown.
        last_ttft: seconds to the first token of its last stream that succeeded.
    """

    url: str
    reachable: bool
    version: str | None = None
    latency: float | None = None
    cooling_down: bool = False
    error: str | None = None
    breaker: BreakerState = "closed"
    in_flight: int = 0
    models_loaded: tuple[str, ...] | None = None
    models_available: tuple[str, ...] | None = None
    last_ttft: float | None = None


class Host:
    """One server: its URL, the transport that reaches it, and what the client
    knows of it (all guarded by ``Hosts``' lock)."""

    def __init__(self, transport: Transport) -> None:
        self.url, self.transport = transport.url, transport
        self.in_flight = 0  # this client's streams on it now
        self.state: BreakerState = "closed"
        self.failures = 0  # in a row, that count against the breaker
        self.retry_at = 0.0  # while open: when one probe may try it
        self.prober: object = None  # the attempt probing a half-open breaker
        self.loaded: tuple[str, ...] | None = None  # None: not known
        self.available: tuple[str, ...] | None = None
        self.listed_at = float("-inf")  # when the lists held were asked for
        self.refreshing = False
        self.ttft: float | None = None

    def breaker(self, now: float) -> BreakerState:
        """The breaker's state now (an open one whose cool-down passed is half-open)."""
        return (
            "half_open" if self.state == "open" and self.retry_at <= now else self.state
        )

    def ready(self, now: float) -> bool:
        """Whether an attempt may go here now: closed, or a probe is due."""
        state = self.breaker(now)
        return state == "closed" or (state == "half_open" and self.prober is None)

    def view(self, now: float) -> HostHealth:
        state = self.breaker(now)
        return HostHealth(
            self.url,
            self.ready(now),
            cooling_down=state == "open",
            breaker=state,
            in_flight=self.in_flight,
            models_loaded=self.loaded,
            models_available=self.available,
            last_ttft=self.ttft,
        )

    def __repr__(self) -> str:
        return f"<Host {self.url}>"


class Router(Protocol):
    """Chooses which host serves an attempt: give one to ``routing=``.

    Example::

        class Fastest:
            def choose(self, model, hosts):
                return min(hosts, key=lambda h: (h.last_ttft or 0.0, h.in_flight))

        client = StreamingClient(hosts=["http://a:11434", "http://b:11434"],
                                 routing=Fastest())
    """

    def choose(self, model: str | None, hosts: Sequence[HostHealth]) -> HostHealth:
        """One of ``hosts``: the healthy hosts this call has not tried yet, in
        the client's order (never empty). Runs on the stream's worker thread;
        it must be quick and never block."""
        ...


class RoundRobin:
    """Each attempt on the next host in turn: spreads evenly, ignores everything."""

    def __init__(self) -> None:
        self._turn = itertools.count()

    def choose(self, model: str | None, hosts: Sequence[HostHealth]) -> HostHealth:
        return hosts[next(self._turn) % len(hosts)]


class LeastBusy:
    """The host with the fewest streams of this client in flight; on a tie the
    one whose last first token came soonest (unknown counts as instant)."""

    def choose(self, model: str | None, hosts: Sequence[HostHealth]) -> HostHealth:
        return min(hosts, key=lambda h: (h.in_flight, h.last_ttft or 0.0))


class ModelAware:
    """Hosts holding the model in memory first, then hosts that have it, then
    hosts not known yet, then hosts known to lack it; least busy among equals."""

    def choose(self, model: str | None, hosts: Sequence[HostHealth]) -> HostHealth:
        def rank(h: HostHealth) -> tuple[int, int, float]:
            tier = 0
            if model is not None and not _holds(h.models_loaded, model):
                if h.models_available is None:
                    tier = 2
                else:
                    tier = 1 if _holds(h.models_available, model) else 3
            return tier, h.in_flight, h.last_ttft or 0.0

        return min(hosts, key=rank)


RoutingArg = Literal["model_aware", "least_busy", "round_robin"] | Router
"""What ``routing=`` takes: a strategy's name, or a ``Router``."""

ROUTERS: dict[str, Callable[[], Router]] = {
    "round_robin": RoundRobin,
    "least_busy": LeastBusy,
    "model_aware": ModelAware,
}
"""The strategies ``routing=`` names."""


def _counts(error: StreamError) -> bool:
    """Whether a failure says the host is unwell: no connection, a connect or
    write timeout, or a 5xx (a gateway's 504 included)."""
    if isinstance(error, ModelNotFound):
        return False  # the host answered; it lacks one model
    if isinstance(error, ServerError):
        return error.status_code is not None and error.status_code >= 500
    if isinstance(error, StreamTimeout):
        return error.which in ("connect", "write") or error.status_code == 504
    return isinstance(error, ConnectionFailed)


class Hosts:
    """The hosts of one client: picks one per attempt, learns from each outcome.

    Thread-safe: attempts on many workers pick and end at once. Each attempt
    passes the same ``owner`` to ``pick`` and ``done`` (it may be a breaker's
    one probe).
    """

    def __init__(
        self,
        hosts: Sequence[Host],
        *,
        cooldown: float = DEFAULT_COOLDOWN,
        routing: object = "model_aware",
        lister: Lister | None = None,
        clock: Callable[[], float] = time.monotonic,
        failures_to_open: int = FAILURES_TO_OPEN,
        ttl: float = MODELS_TTL,
    ) -> None:
        if isinstance(routing, str) and routing not in ROUTERS:
            raise ValueError(f"routing must be one of {sorted(ROUTERS)} or a Router")
        router = ROUTERS[routing]() if isinstance(routing, str) else routing
        if not callable(getattr(router, "choose", None)):
            raise TypeError("routing must be a strategy's name or a Router (a .choose)")
        self.router = cast(Router, router)
        # Only a router that reads model lists has them refreshed in the background.
        self._lister = None if isinstance(router, (RoundRobin, LeastBusy)) else lister
        self.hosts, self.cooldown, self._clock = list(hosts), cooldown, clock
        self._failures_to_open, self._ttl = failures_to_open, ttl
        # Guards every Host's fields, _threads and _closed.
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._closed = False

    def pick(
        self,
        model: str | None,
        *,
        owner: object,
        avoid: Collection[Host] = (),
        sticky: str | None = None,
    ) -> Host:
        """The host for the next attempt (``owner``: the attempt) of ``model``:
        not one of ``avoid`` (tried already) if another is ready; the host at
        ``sticky`` (a URL) while its breaker is closed."""
        skipped: set[Host] = set()
        while True:
            host = self._choose(model, avoid, sticky, skipped)
            with self._lock:
                now = self._clock()
                if host is None:  # none ready: the one whose cool-down ends first
                    host = min(self.hosts, key=lambda h: (h.retry_at, h.in_flight))
                elif len(self.hosts) > 1 and not host.ready(now):
                    skipped.add(host)  # its one probe went to another attempt
                    continue
                if host.breaker(now) != "closed" and host.prober is None:
                    host.state, host.prober = "half_open", owner
                host.in_flight += 1
                refreshes = self._refreshes(now)
            for thread in refreshes:
                thread.start()
            if avoid and host not in avoid:
                log.info("failing over to %s", host.url)
            return host

    def _choose(
        self,
        model: str | None,
        avoid: Collection[Host],
        sticky: str | None,
        skipped: set[Host],
    ) -> Host | None:
        if len(self.hosts) == 1:
            return self.hosts[0]
        with self._lock:
            now = self._clock()
            ready = [h for h in self.hosts if h.ready(now) and h not in skipped]
            fresh = [h for h in ready if h not in avoid] or ready
            for host in fresh:
                if host.url == sticky and host.breaker(now) == "closed":
                    return host
            if len(fresh) < 2:  # no choice to make
                return fresh[0] if fresh else None
            views = [h.view(now) for h in fresh]
        chosen = self.router.choose(model, views)  # user code: outside the lock
        for host, view in zip(fresh, views, strict=True):
            if view is chosen:
                return host
        raise ValueError(f"the router chose {chosen!r}, not one of the hosts given")

    def done(
        self,
        host: Host,
        error: StreamError | None,
        *,
        owner: object,
        ok: bool = False,
        model: str | None = None,
        ttft: float | None = None,
    ) -> None:
        """An attempt on ``host`` ended: it succeeded (``ok``), failed with
        ``error``, or neither (cancelled). ``model``: what a chat asked for."""
        with self._lock:
            host.in_flight -= 1
            if host.prober is owner:
                host.prober = None
            if ok or (isinstance(error, ServerError) and not _counts(error)):
                host.state, host.failures = "closed", 0  # it answered: alive
                host.ttft = ttft if ok and ttft is not None else host.ttft
            elif error is not None and _counts(error):
                host.failures += 1
                refused = isinstance(error, ConnectionFailed) and error.during_connect
                if (
                    refused
                    or host.state != "closed"
                    or (host.failures >= self._failures_to_open)
                ):
                    host.state, host.retry_at = "open", self._clock() + self.cooldown
                    log.warning(
                        "host %s failed (%s); skipping it for %.0fs",
                        host.url,
                        type(error).__name__,
                        self.cooldown,
                    )
            # What a stream shows is news: lists asked for before it are stale.
            if model is not None and ok and not _holds(host.loaded, model):
                host.loaded = (*(host.loaded or ()), model)  # it answered: loaded
                host.listed_at = max(host.listed_at, self._clock())
            elif model is not None and isinstance(error, ModelNotFound):
                unknown = host.available is None  # it lacks this one, maybe more
                host.loaded = _drop(host.loaded, model)
                host.available = _drop(host.available, model) or ()
                host.listed_at = float("-inf") if unknown else self._clock()

    def can_fail_over(self, tried: Collection[Host], model: str | None = None) -> bool:
        """Whether a ready host not in ``tried`` exists (and, given ``model``,
        is not known to lack it)."""
        now = self._clock()
        with self._lock:
            return any(
                h.ready(now)
                and h not in tried
                and (model is None or h.available is None or _holds(h.available, model))
                for h in self.hosts
            )

    def view(self, host: Host) -> HostHealth:
        """``host`` as the client knows it now, without asking it."""
        with self._lock:
            return host.view(self._clock())

    def asked(self) -> float:
        """The time to give ``learned`` for lists asked for from now on."""
        return self._clock()

    def learned(
        self,
        host: Host,
        loaded: Iterable[str],
        available: Iterable[str],
        asked_at: float,
    ) -> None:
        """Model lists for ``host`` asked for at ``asked_at`` (a refresh, or
        ``health()``), unless what it holds is newer."""
        with self._lock:
            if asked_at >= host.listed_at:
                host.loaded, host.available = tuple(loaded), tuple(available)
                host.listed_at = asked_at

    def _refreshes(self, now: float) -> list[threading.Thread]:
        """A refresh for each host whose lists are stale (lock held; the caller
        starts them). Daemon, and joined by ``close()``: two short GETs bounded
        by the connect timeout must not keep a program alive on their own."""
        if self._lister is None or self._closed or len(self.hosts) == 1:
            return []
        threads = []
        for host in self.hosts:
            if (
                not host.refreshing
                and host.ready(now)
                and now - host.listed_at > self._ttl
            ):
                host.refreshing = True
                threads.append(
                    threading.Thread(
                        target=self._refresh,
                        args=(host,),
                        name="ollama-hosts-refresh",
                        daemon=True,
                    )
                )
        self._threads.update(threads)
        return threads

    def _refresh(self, host: Host) -> None:
        lister, asked_at = self._lister, self.asked()
        try:
            if lister is not None:
                self.learned(host, *lister(host), asked_at)
        except Exception as exc:  # noqa: BLE001  # a refresh never fails a stream
            log.debug("could not list the models of %s: %s", host.url, exc)
            with self._lock:
                host.listed_at = max(host.listed_at, asked_at)  # again after the TTL
        finally:
            with self._lock:
                host.refreshing = False
                self._threads.discard(threading.current_thread())

    def health(self, lister: Lister, timeout: float) -> list[HostHealth]:
        """Ask every host for ``/api/version`` and its model lists, in parallel."""

        def probe(host: Host) -> HostHealth:
            start = time.monotonic()
            try:
                data = host.transport.request_json(
                    "GET", "/api/version", None, timeout=timeout
                )
            except StreamError as exc:
                return replace(self.view(host), reachable=False, error=str(exc))
            latency, asked_at = time.monotonic() - start, self.asked()
            with contextlib.suppress(StreamError):  # reachable; lists as known
                self.learned(host, *lister(host), asked_at)
            version = str(data.get("version", "")) if isinstance(data, dict) else None
            view = self.view(host)
            return replace(view, reachable=True, version=version, latency=latency)

        with concurrent.futures.ThreadPoolExecutor(
            max_workers=len(self.hosts), thread_name_prefix="ollama-health"
        ) as pool:
            return list(pool.map(probe, self.hosts))

    def close(self, timeout: float) -> None:
        """Start no more refreshes, and wait up to ``timeout`` for running ones."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
