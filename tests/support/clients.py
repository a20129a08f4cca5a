"""Clients on the transport under test, and what a test records of a stream.

``MakeClient`` builds ``StreamingClient``s on httpx or on a ``requests.Session``
(the ``make_client`` fixture), ``new_client`` one on httpx; ``Recorder`` keeps
every callback of a stream; ``bounded`` turns a hang into a failure;
``in_function`` waits until a thread runs a given function;
``assert_all_closed`` checks a stream's sockets.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import pytest
import requests
from requests.adapters import HTTPAdapter

from ollama_stream_sync import StreamingClient
from ollama_stream_sync.testing import FakeOllama

from . import WAIT

T = TypeVar("T")


def new_client(url: str | None = None, **kwargs: Any) -> StreamingClient:
    """``StreamingClient(url, **kwargs)``, with ``verify=False`` when every host
    is plain ``http://`` and the call says nothing of TLS.

    On plain http ``verify`` changes nothing but the client's construction:
    httpx then skips loading the CA store, a few tens of milliseconds per
    client, hundreds of clients per run. TLS tests pass their own ``verify``.
    """
    hosts = [url] if url is not None else list(kwargs.get("hosts") or ())
    if (
        hosts
        and all(str(h).startswith("http://") for h in hosts)
        and not {"client", "verify"} & kwargs.keys()
    ):
        kwargs["verify"] = False
    return StreamingClient(url, **kwargs)


class MakeClient:
    """Builds ``StreamingClient``s on the transport under test.

    With requests, each client gets a fresh session, which the caller owns (the
    client never closes it): ``release()`` closes them, as an application would.
    """

    def __init__(self, transport: str) -> None:
        self.transport = transport
        self.sessions: list[requests.Session] = []

    def __call__(self, url: str | None = None, **kwargs: Any) -> StreamingClient:
        if self.transport == "requests":
            session = requests.Session()
            self.sessions.append(session)
            kwargs.setdefault("session", session)
        return new_client(url, **kwargs)

    def release(self) -> None:
        for session in self.sessions:
            session.close()


def one_connection_client(
    make_client: MakeClient, url: str, **kwargs: Any
) -> StreamingClient:
    """A client whose pool has one connection: each stream reuses the last one's.

    The next stream waits for the connection and takes it the moment the last
    stream hands it back: exactly where a late cancel of that last stream would
    hit a socket that is no longer its own (see test_concurrency.py).
    """
    if make_client.transport == "httpx":
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        return make_client(url, limits=limits, **kwargs)
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=1, pool_block=True)
    session.mount("http://", adapter)
    make_client.sessions.append(session)  # released (closed) by the fixture
    return make_client(url, session=session, **kwargs)


TERMINAL = ("done", "error")


class Recorder:
    """Every callback of one stream, in the order they ran, and their threads.

    ``kwargs()`` gives the callbacks to pass to a call (``phases=True`` adds
    ``on_phase``); ``kinds()``, ``text()`` and ``terminals`` read what ran;
    ``ended`` is set by the terminal callback. Callbacks may run on any thread.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.events: list[tuple[str, Any]] = []
        self.threads: set[int] = set()
        self.ended = threading.Event()

    def add(self, kind: str, value: Any) -> None:
        with self._cond:
            self.events.append((kind, value))
            self.threads.add(threading.get_ident())
            self._cond.notify_all()
        if kind in TERMINAL:
            self.ended.set()

    def kwargs(self, *, phases: bool = False) -> dict[str, Any]:
        callbacks: dict[str, Any] = {
            "on_thinking": lambda t: self.add("thinking", t),
            "on_content": lambda t: self.add("content", t),
            "on_tool_call": lambda c: self.add("tool", c),
            "on_retry": lambda a, e, d: self.add("retry", (a, e, d)),
            "on_reset": lambda a, e: self.add("reset", (a, e)),
            "on_done": lambda r: self.add("done", r),
            "on_error": lambda e: self.add("error", e),
        }
        if phases:
            callbacks["on_phase"] = lambda p: self.add("phase", p)
        return callbacks

    def kinds(self) -> list[str]:
        with self._cond:
            return [k for k, _ in self.events]

    def of(self, kind: str) -> list[Any]:
        """The values of every ``kind`` callback, in order."""
        with self._cond:
            return [v for k, v in self.events if k == kind]

    def text(self, kind: str = "content") -> str:
        return "".join(self.of(kind))

    @property
    def terminals(self) -> list[tuple[str, Any]]:
        with self._cond:
            return [(k, v) for k, v in self.events if k in TERMINAL]

    def wait_for(
        self, predicate: Callable[[Recorder], bool], timeout: float = WAIT
    ) -> bool:
        """Wait until ``predicate(self)`` holds, re-checked after each callback."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)


def more_disconnects_than(count: int) -> Callable[[FakeOllama], bool]:
    """A ``server.wait_for`` predicate: more than ``count`` clients hung up."""
    return lambda server: server.disconnects_seen > count


def bounded(fn: Callable[[], T], timeout: float = WAIT) -> T:
    """``fn()`` on a helper thread: its value or its exception, or a failure if
    it has not returned within ``timeout`` (a hang fails, it does not block)."""
    box: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            box.append((True, fn()))
        except BaseException as exc:
            box.append((False, exc))

    thread = threading.Thread(target=run, name="bounded-call", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        pytest.fail(f"hung: the call did not return within {timeout}s")
    ok, value = box[0]
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


def in_function(thread: threading.Thread | None, *names: str) -> bool:
    """Wait until ``thread`` runs a function named in ``names``.

    Polls the thread's stack: no event exists for "blocked in connect()" or
    "waiting for the pool". Bounded by ``WAIT``.
    """
    assert thread is not None
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        frame = sys._current_frames().get(thread.ident or -1)
        while frame is not None:
            if frame.f_code.co_name in names:
                return True
            frame = frame.f_back
        time.sleep(0.002)
    return False


def assert_all_closed(sockets: list[socket.socket]) -> None:
    """Every socket a stream made is closed (see the ``worker_sockets`` fixture)."""
    assert sockets, "the stream opened no socket: the test did not test anything"
    still_open = [s for s in sockets if s.fileno() != -1]
    assert not still_open, f"sockets left open: {still_open}"
