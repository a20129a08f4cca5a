"""What every call of one client shares: settings, hosts, timers, live streams.

Every call starts here: ``request`` turns a body and its options into a
``StreamRequest``, ``start`` runs a job on a new handle, tracked until it ends.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ._dispatch import Dispatcher
from ._gate import Gate
from ._handle import BaseHandle, Job
from ._hosts import Hosts
from ._observe import CallInfo, ObserverFactory
from ._request import checking_served
from ._run import LoadProbe, StreamRequest
from ._state import Watched
from ._stream import pending_sink
from ._timers import Watchdog

log = logging.getLogger("ollama_stream_sync")
H = TypeVar("H", bound=BaseHandle[Any, Any])

_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for engine in list(_engines):
        engine.after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class Engine:
    """One client's shared machinery; the internal seam every call goes through."""

    def __init__(
        self,
        hosts: Hosts,
        settings: Mapping[str, Any],
        *,
        dispatcher: Dispatcher,
        close_timeout: float,
        max_line_bytes: int,
        name: str,
        max_in_flight: int | None = None,
    ) -> None:
        self.hosts = hosts
        self.gate = Gate(max_in_flight) if max_in_flight is not None else None
        """At most ``max_in_flight`` streams at once (``None``: no cap)."""
        self.settings = dict(settings)
        """The client's defaults of every per-call setting (timeouts, retry...)."""
        self.dispatcher = dispatcher
        self.close_timeout = close_timeout
        self.max_line_bytes = max_line_bytes
        self.observers: list[ObserverFactory] = []
        """Asked for an observer of each call, on the caller's thread."""
        self.probe: Callable[[Any, str], LoadProbe] | None = None
        """Makes the "loading" probe of a stream (``probe_loading``)."""
        self.watchdog = Watchdog(f"ollama-stream-timers-{name}")
        # Guards handles and closed: streams start and end on many threads, and
        # close() may race them.
        self._lock = threading.Lock()
        self.handles: set[BaseHandle[Any, Any]] = set()
        self.closed = False
        _engines.add(self)

    def option(self, options: Mapping[str, Any], key: str) -> Any:
        """A per-call setting, or the client's."""
        return options.get(key, self.settings.get(key))

    def request(
        self,
        path: str,
        payload: bytes,
        options: Mapping[str, Any],
        *,
        model: str | None = None,
        body: Mapping[str, Any] | None = None,
        deadline_at: float | None = None,
        seal_on_done: Callable[[], bool] | None = None,
        sticky: str | None = None,
    ) -> StreamRequest:
        """One request with the client's settings, overridden by ``options``
        (``body`` is ``payload`` before encoding, for observers)."""
        probe, probed = self.probe, model or ""
        if not (probed and self.option(options, "probe_loading")):
            probe = None
        return StreamRequest(
            hosts=self.hosts,
            watchdog=self.watchdog,
            path=path,
            payload=payload,
            model=model,
            max_line_bytes=self.max_line_bytes,
            connect_timeout=self.option(options, "connect_timeout"),
            first_token_timeout=self.option(options, "first_token_timeout"),
            read_timeout=self.option(options, "read_timeout"),
            deadline=self.option(options, "deadline"),
            deadline_at=deadline_at,
            retry=self.option(options, "retry"),
            headers=dict(options.get("headers") or {}),
            body=body,
            seal_on_done=seal_on_done,
            probe=(lambda host: probe(host, probed)) if probe else None,
            sticky=sticky,
            gate=self.gate,
        )

    def start(
        self,
        handle_class: Callable[..., H],
        job: Job,
        options: Mapping[str, Any],
        *,
        state: Watched[Any],
        call: CallInfo,
        partial: Callable[[], Any] | None = None,
    ) -> H:
        """Run ``job`` on a new handle's worker (``RuntimeError`` once closed)."""
        if call.operation in ("chat", "generate") and call.model:
            job = checking_served(job, call.model)  # the caller's line, here
        observer = None
        for factory in self.observers:
            observer = factory(call) or observer
        handle = handle_class(
            job,
            {k: v for k, v in options.items() if k.startswith("on_")},
            options.get("dispatcher") or self.dispatcher,
            state=state,
            label=f"{call.operation} model={call.model!r}",
            coalesce_interval=self.option(options, "coalesce_interval"),
            sink=pending_sink(),
            partial=partial,
            observer=observer,
            grace=self.close_timeout,
        )
        with self._lock:
            self.check_open()
            self.handles.add(handle)
            # Started under the lock: a close() racing this either sees the
            # handle running (and cancels and joins it) or refuses the start.
            handle.add_done_callback(self._forget)
            handle._start()
        return handle

    def _forget(self, handle: BaseHandle[Any, Any]) -> None:
        with self._lock:
            self.handles.discard(handle)

    def active(self) -> list[BaseHandle[Any, Any]]:
        """The handles still running."""
        with self._lock:
            return list(self.handles)

    def check_open(self) -> None:
        """Raise ``RuntimeError`` once the client is closed."""
        if self.closed:
            raise RuntimeError("this StreamingClient is closed")

    def close(self) -> None:
        """Cancel running streams, wait for their workers, stop the timers."""
        with self._lock:
            self.closed = True
            handles = list(self.handles)
        for handle in handles:
            handle.cancel()
        try:
            for handle in handles:  # not our own thread: see join()
                handle.join(self.close_timeout)
        finally:
            self.watchdog.close(self.close_timeout)

    def after_fork(self) -> None:
        """In a forked child: none of the parent's streams or threads are ours."""
        self._lock = threading.Lock()
        self.handles = set()
        self.watchdog.after_fork()
        if self.gate is not None:  # its lock may be held, its waiters are gone
            self.gate = Gate(self.gate.limit)


@functools.cache
def opentelemetry() -> ObserverFactory | None:
    """The OpenTelemetry factory, if ``opentelemetry-api`` is installed (the import
    is tried once: without the API nothing of OpenTelemetry is loaded)."""
    try:
        from ._telemetry import Telemetry  # noqa: PLC0415  # only with the API
    except ImportError as exc:
        log.debug("no OpenTelemetry API (%s): telemetry is off", exc)
        return None
    return Telemetry()
