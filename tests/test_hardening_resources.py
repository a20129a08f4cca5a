"""Sockets and descriptors: closed after any cancel, many at once, past fd 1024."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from typing import Any

import pytest
import requests
import urllib3
from requests.adapters import HTTPAdapter

from ollama_stream_sync import StreamingClient
from ollama_stream_sync.testing import Chunk, FakeOllama, Stall

from .conftest import USER, WAIT, MakeClient, assert_all_closed
from .support.hostile import Gate, Hold, Hostile, Send, answer, chunked_response

pytestmark = pytest.mark.transport

# -- 2. after a cancel in any phase, every socket the stream opened is closed --


class ConnectHook:
    """Runs ``action`` on a stream's worker when it starts connecting to ``port``.

    ``socket.socket.connect`` and ``connect_ex`` are wrapped for the test only
    (monkeypatch), and do nothing different on any other thread or port.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, port: int) -> None:
        self.entered = threading.Event()
        self.action: Callable[[], None] = lambda: None
        for name in ("connect", "connect_ex"):
            monkeypatch.setattr(socket.socket, name, self._hook(name, port))

    def _hook(self, name: str, port: int) -> Callable[..., Any]:
        original = getattr(socket.socket, name)

        def hooked(sock: socket.socket, address: Any) -> Any:
            if (
                isinstance(address, tuple)
                and address[1] == port
                and threading.current_thread().name.startswith("ollama-stream-")
            ):
                self.entered.set()
                self.action()
            return original(sock, address)

        return hooked


@pytest.mark.parametrize("moment", ["before-the-syscall", "during-the-syscall"])
def test_cancel_while_connecting_ends_at_once_and_closes_the_socket(
    unaccepting_port: int,
    make_client: MakeClient,
    worker_sockets: list[socket.socket],
    monkeypatch: pytest.MonkeyPatch,
    moment: str,
) -> None:
    """A cancel that lands after the socket was made but before (or while)
    ``connect()`` blocks ends the stream at once, whatever the connect timeout.

    "before-the-syscall" holds the worker at the start of ``connect()`` until
    the cancel has returned: the one moment a shutdown() cannot wake it.
    """
    hook = ConnectHook(monkeypatch, unaccepting_port)
    cancelled = threading.Event()
    if moment == "before-the-syscall":
        hook.action = lambda: assert_(cancelled.wait(WAIT))
    url = f"http://127.0.0.1:{unaccepting_port}"
    with make_client(url, connect_timeout=60) as client:
        handle = client.start_chat("m", USER)
        assert hook.entered.wait(WAIT)
        handle.cancel()
        cancelled.set()
        assert handle.result(WAIT).cancelled  # far less than the 60 s timeout
        assert handle.join(WAIT)
    assert_all_closed(worker_sockets)


def assert_(condition: bool) -> None:
    assert condition


@pytest.mark.parametrize("phase", ["before-headers", "mid-body"])
def test_cancel_after_connecting_closes_every_socket(
    server: FakeOllama,
    make_client: MakeClient,
    worker_sockets: list[socket.socket],
    phase: str,
) -> None:
    script = [Stall()] if phase == "before-headers" else [Chunk(content="x"), Stall()]
    server.enqueue(script)
    with make_client(server.url) as client:
        handle = client.start_chat("m", USER)
        assert server.wait_stalled()
        handle.cancel()
        assert handle.result(WAIT).cancelled
        assert handle.join(WAIT)
        assert_all_closed(worker_sockets)  # before the client or session closes
    assert server.wait_for(lambda s: s.disconnects_seen == 1)


def test_cancel_while_a_custom_connection_class_connects(
    hostile: Hostile, worker_sockets: list[socket.socket]
) -> None:
    """requests only: an adapter whose connection class makes its own socket.

    Such classes (SOCKS proxies, for one) override ``_new_conn``, so no socket
    is reachable while they connect. A cancel that lands then must end the
    stream as soon as they return (not when a slow model answers), and the
    socket they made must be closed.
    """
    hostile.enqueue([Hold()])  # were the request sent: no answer, ever
    holder: dict[str, Any] = {}
    ready = threading.Event()

    class OwnConnection(urllib3.connection.HTTPConnection):
        def _new_conn(self) -> socket.socket:
            sock = super()._new_conn()
            assert ready.wait(WAIT)
            holder["handle"].cancel()  # lands while this class connects
            return sock

    class OwnPool(urllib3.HTTPConnectionPool):
        ConnectionCls = OwnConnection

    class OwnAdapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = {"http": OwnPool}

    session = requests.Session()
    session.mount("http://", OwnAdapter())
    with StreamingClient(hostile.url, session=session) as client:
        holder["handle"] = handle = client.start_chat("m", USER)
        ready.set()
        assert handle.result(WAIT).cancelled
        assert handle.join(WAIT)
        assert_all_closed(worker_sockets)
    session.close()
    assert hostile.stream_requests() == []  # nothing was sent after the cancel


# -- 7. more than 1024 open files --

CHILD = """
import os, resource, sys
from ollama_stream_sync import StreamingClient
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if soft < 2048:
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(2048, hard), hard))
files = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
assert max(files) > 1024, max(files)
kwargs = {}
if sys.argv[2] == "requests":
    import requests
    kwargs["session"] = requests.Session()
with StreamingClient(sys.argv[1], **kwargs) as client:
    user = [{"role": "user", "content": "hi"}]
    for _ in range(3):  # the second and third reuse the pooled connection
        print(client.chat("m", user).content, flush=True)
    print("health", client.health()[0].reachable, flush=True)
"""


def test_more_than_1024_open_files(server: FakeOllama, transport: str) -> None:
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHILD), server.url, transport],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    text = "Hello from the fake Ollama server."
    assert child.stdout.splitlines() == [text] * 3 + ["health True"]


# -- 11. many concurrent streams on one client --


def test_fake_ollama_takes_many_connections_at_once() -> None:
    """FakeOllama's listen backlog holds a burst of connects.

    With socketserver's default backlog (5), the connects of 16 streams
    started together overflowed it; each dropped SYN cost a retransmit (1 s,
    then 3 s), enough on a busy machine to outlast the tests' 5 s waits
    (test_sixteen_stalled_streams_all_cancel failed so). The server serves
    from construction on, so the backlog is read from the kernel: ``ss`` shows
    a listening socket's backlog as its Send-Q.
    """
    ss = shutil.which("ss")
    if ss is None:
        pytest.skip("reading a listen backlog needs ss (iproute2)")
    with FakeOllama() as server:
        port = server.url.rsplit(":", 1)[1]
        shown = subprocess.run(
            [ss, "-Hltn", f"sport = :{port}"],
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=True,
        ).stdout
    (line,) = shown.splitlines()
    assert int(line.split()[2]) >= 32


STREAMS = 256


def run_concurrently(client: StreamingClient, hostile: Hostile, rounds: int) -> None:
    """``STREAMS`` streams held open together by the server, ``rounds`` times."""
    for round_ in range(rounds):
        gate = hostile.latch()
        texts = {f"r{round_} s{i}" for i in range(STREAMS)}
        hostile.enqueue(
            *[[Gate(gate), Send(chunked_response(answer(t)))] for t in texts]
        )
        handles = [client.start_chat("m", USER) for _ in range(STREAMS)]
        # Every one of them connected and sent its request: all open at once.
        assert hostile.wait_for(lambda s: s.gated == STREAMS, 4 * WAIT)
        gate.set()
        results = []
        for handle in handles:
            results.append(handle.result(4 * WAIT))  # raises any stream's error
        assert {r.content for r in results} == texts
        assert all(r.done for r in results)


def test_256_concurrent_streams_on_one_httpx_client(hostile: Hostile) -> None:
    with StreamingClient(hostile.url) as client:
        run_concurrently(client, hostile, rounds=3)


def test_256_concurrent_streams_on_one_session_log_one_advice(
    hostile: Hostile, caplog: pytest.LogCaptureFixture
) -> None:
    """More streams than the session's pool keeps: no warning per connection."""
    session = requests.Session()
    caplog.set_level(logging.WARNING)
    with StreamingClient(hostile.url, session=session) as client:
        run_concurrently(client, hostile, rounds=1)
    session.close()
    pool_full = [r for r in caplog.records if "Connection pool is full" in r.message]
    advice = [r for r in caplog.records if r.name == "ollama_stream_sync"]
    assert not pool_full
    assert len(advice) <= 1
    assert all("pool_maxsize" in r.getMessage() for r in advice)
