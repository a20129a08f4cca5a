"""Shared fixtures: a scripted loopback Ollama, a client on it, and a leak check."""

from __future__ import annotations

import gc
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from ollama_stream_sync import StreamingClient
from ollama_stream_sync.testing import FakeOllama

from .gui import (  # noqa: F401  # GUI test fixtures
    examples_path,
    qt_app,
    tk_root,
    xvfb_display,
)
from .hostile import Hostile
from .support.network import (  # noqa: F401  # tinyproxy, nginx and SOCKS5 fixtures
    make_nginx,
    make_socks5,
    make_tinyproxy,
    nginx,
    tinyproxy,
)
from .terminal import (  # noqa: F401  # command-line test fixtures
    long_python,
    refused_url,
    terminal,
)

USER = [{"role": "user", "content": "Hello?"}]
WAIT = 5.0  # every wait in the suite is bounded by this; none is a timing assertion


def _stream_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("ollama-stream-")]


GUI_FIXTURES = {"xvfb_display", "qt_app"}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    """After a GUI test, collect its garbage here, on the toolkit's thread.

    Only now, once pytest has let go of the test's fixture values: a Tk root and
    its widgets (a reference cycle) would otherwise be freed by whichever thread
    next triggers a collection, and Tk aborts the process when that is not its
    own thread.
    """
    gui = bool(GUI_FIXTURES & set(getattr(item, "fixturenames", ())))
    yield
    if gui:
        gc.collect()


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Every test must leave no worker thread behind once its streams ended."""
    before = set(_stream_threads())
    yield
    deadline = time.monotonic() + WAIT
    for thread in set(_stream_threads()) - before:
        thread.join(max(0.0, deadline - time.monotonic()))
    leaked = [t.name for t in set(_stream_threads()) - before if t.is_alive()]
    assert not leaked, f"worker threads left running: {leaked}"


@pytest.fixture
def server() -> Iterator[FakeOllama]:
    with FakeOllama() as srv:
        yield srv


class MakeClient:
    """Builds ``StreamingClient``s on the transport under test.

    With requests, each client gets a fresh session, which the caller owns (the
    client never closes it): ``release()`` closes them, as an application would.
    """

    def __init__(self, transport: str) -> None:
        self.transport = transport
        self.sessions: list[requests.Session] = []

    def __call__(self, *args: Any, **kwargs: Any) -> StreamingClient:
        if self.transport == "requests":
            session = requests.Session()
            self.sessions.append(session)
            kwargs.setdefault("session", session)
        return StreamingClient(*args, **kwargs)

    def release(self) -> None:
        for session in self.sessions:
            session.close()


@pytest.fixture(params=["httpx", "requests"])
def transport(request: pytest.FixtureRequest) -> str:
    """Tests that build clients with ``make_client`` run on both transports."""
    return str(request.param)


@pytest.fixture
def make_client(transport: str) -> Iterator[MakeClient]:
    """``StreamingClient(...)`` on the transport under test."""
    maker = MakeClient(transport)
    yield maker
    maker.release()


@pytest.fixture
def client(server: FakeOllama, make_client: MakeClient) -> Iterator[StreamingClient]:
    with make_client(server.url) as c:
        yield c


@pytest.fixture
def hostile() -> Iterator[Hostile]:
    """A raw-socket loopback server that plays scripted bytes (see ``hostile.py``)."""
    with Hostile() as srv:
        yield srv


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Switch threads far more often than Python's 5 ms: stress tests see
    many more interleavings per trial."""
    import sys

    previous = sys.getswitchinterval()
    sys.setswitchinterval(5e-5)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


@pytest.fixture
def unaccepting_port() -> Iterator[int]:
    """A loopback port whose accept queue is full: connects hang (SYNs dropped)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = int(listener.getsockname()[1])
    fillers = []
    for _ in range(8):  # fill the queue; later connects wait in SYN_SENT
        filler = socket.socket()
        filler.settimeout(0.2)
        try:
            filler.connect(("127.0.0.1", port))
        except OSError:
            filler.close()
            break
        fillers.append(filler)
    try:
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


@pytest.fixture
def worker_sockets(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[socket.socket]]:
    """Every socket object created on a stream's worker thread, kept alive.

    Held by strong references on purpose: a socket the library forgot stays
    open here (instead of being closed by the garbage collector with a
    ResourceWarning some time later), so the test sees it at once.
    """
    created: list[socket.socket] = []
    init = socket.socket.__init__

    def recording_init(self: socket.socket, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        if threading.current_thread().name.startswith("ollama-stream-"):
            created.append(self)

    monkeypatch.setattr(socket.socket, "__init__", recording_init)
    yield created
    for sock in created:
        sock.close()


def assert_all_closed(sockets: list[socket.socket]) -> None:
    assert sockets, "the stream opened no socket: the test did not test anything"
    still_open = [s for s in sockets if s.fileno() != -1]
    assert not still_open, f"sockets left open: {still_open}"
