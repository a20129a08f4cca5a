"""The suite's fixtures. Helpers live in ``tests/support/``: import them from there."""

from __future__ import annotations

import gc
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ollama_stream_sync import StreamingClient
from ollama_stream_sync.testing import FakeOllama

# USER, MakeClient and assert_all_closed are imported from here by test files that
# other branches still change (test_conversation, test_models, test_failover,
# test_proxies, test_docs, test_cli_pull...); once merged, they import them from
# tests.support like the rest, and these names go.
from .support import WAIT
from .support.clients import MakeClient, new_client
from .support.dispatchers import Toolkit
from .support.gui import (  # noqa: F401  # GUI test fixtures
    examples_path,
    qt_app,
    tk_root,
    xvfb_display,
)
from .support.hostile import Hostile
from .support.memory import MemoryTransport, memory_client
from .support.network import (  # noqa: F401  # tinyproxy, nginx and SOCKS5 fixtures
    make_nginx,
    make_socks5,
    make_tinyproxy,
    nginx,
    tinyproxy,
)
from .support.sockets import refused_url as _refused_url
from .support.sockets import unaccepting_port as _unaccepting_port
from .support.terminal import long_python, terminal  # noqa: F401  # command-line fixtures

GUI_FIXTURES = {"xvfb_display", "qt_app"}


def _stream_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("ollama-stream-")]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    """After a GUI test, collect its garbage here, on the toolkit's thread.

    Only now, once pytest has let go of the test's fixture values: a Tk root and
    its widgets (a reference cycle) would otherwise be freed by whichever thread
    next triggers a collection, and Tk aborts the process when that is not its
    own thread. A failed test's traceback holds its frames, and so its widgets:
    pytest keeps it in ``sys.last_traceback`` until the next test starts, so it
    is dropped here first (else one failing GUI test aborts a later one).
    """
    gui = bool(GUI_FIXTURES & set(getattr(item, "fixturenames", ())))
    yield
    if gui:
        for name in ("last_type", "last_value", "last_traceback", "last_exc"):
            if hasattr(sys, name):
                delattr(sys, name)
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
    """A ``FakeOllama`` for one test."""
    with FakeOllama() as srv:
        yield srv


@pytest.fixture
def client(server: FakeOllama) -> Iterator[StreamingClient]:
    """A client on ``server`` over the default transport (httpx): engine logic
    runs once; the files that test transports use ``make_client``."""
    with new_client(server.url) as c:
        yield c


@pytest.fixture
def memory() -> MemoryTransport:
    """An in-memory transport (``tests/support/memory.py``)."""
    return MemoryTransport()


@pytest.fixture
def memory_chat(memory: MemoryTransport) -> Iterator[StreamingClient]:
    """A client whose every request goes to ``memory``: no socket at all."""
    with memory_client(memory, verify=False) as c:
        yield c


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
def hostile() -> Iterator[Hostile]:
    """A raw-socket loopback server that plays scripted bytes (see ``hostile.py``)."""
    with Hostile() as srv:
        yield srv


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A loopback URL that refuses connections: bound, never listening."""
    with _refused_url() as url:
        yield url


@pytest.fixture
def unaccepting_port() -> Iterator[int]:
    """A loopback port whose accept queue is full: connects hang (SYNs dropped)."""
    with _unaccepting_port() as port:
        yield port


@pytest.fixture
def toolkit() -> Iterator[Toolkit]:
    """A stand-in GUI thread (``tests/support/dispatchers.py``)."""
    kit = Toolkit()
    yield kit
    kit.close()


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Switch threads far more often than Python's 5 ms: stress tests see
    many more interleavings per trial."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(5e-5)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


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
