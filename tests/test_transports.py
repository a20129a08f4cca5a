"""What is the transports' own: connections, pools, what follows a done line, URLs.

On both transports: the answer is complete at the done line whatever follows
it (a reset, a silence, garbage), a connection goes back to the pool only when
its body ended cleanly, a pooled connection keeps no bound of the last stream,
a reverse proxy's prefix is kept, loopback ignores proxy variables, descriptors
above 1024 work, and hundreds of streams share one client.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import textwrap
from typing import Any

import ollama
import pytest
import requests

from ollama_stream_sync import StreamingClient
from ollama_stream_sync.testing import Delay, FakeOllama, reply

from .support import USER, WAIT
from .support.clients import MakeClient
from .support.hostile import (
    END,
    Close,
    Gate,
    Hold,
    Hostile,
    Pause,
    Reset,
    Script,
    Send,
    Trickle,
    answer,
    chunk,
    chunked_response,
    head,
    line,
)

pytestmark = pytest.mark.transport

# -- after the done line, the answer is complete --------------------------------------


WHOLE = head() + chunk(answer("Hello", " world"))
"""Headers and every line up to ``done``, the body's end not sent (yet)."""

AFTER_DONE: dict[str, list[Any]] = {
    "reset": [Send(WHOLE), Reset()],
    "fin-mid-body": [Send(WHOLE), Close()],
    "silence": [Send(WHOLE), Hold()],
    "bad-chunk-framing": [Send(WHOLE + b"zz\r\nnot a chunk\r\n"), Hold()],
    "half-a-chunk-then-reset": [Send(WHOLE + b'40\r\n{"partial'), Reset()],
    "half-a-chunk-then-silence": [Send(WHOLE + b'40\r\n{"partial'), Hold()],
    # Never silent for long, never ending: the drain's limit is for the whole
    # drain, not for each read.
    "blank-lines-forever": [Send(WHOLE), Trickle(chunk(b"\n"), every=0.05)],
}


@pytest.mark.parametrize("script", AFTER_DONE.values(), ids=AFTER_DONE.keys())
def test_an_error_or_silence_after_done_returns_the_answer(
    hostile: Hostile, make_client: MakeClient, script: list[Any]
) -> None:
    hostile.enqueue(script)
    # A read timeout far shorter than the wait: a silence after done must not
    # start it (nor anything else that could fail a complete answer).
    with make_client(hostile.url, read_timeout=0.2, retry=None) as client:
        handle = client.start_chat("m", USER)
        result = handle.result(WAIT)
        assert (result.content, result.done, result.done_reason) == (
            "Hello world",
            True,
            "stop",
        )
        assert not result.cancelled
        # The connection was not reused: it is closed, and the next call opens
        # a new one that works.
        assert client.chat("m", USER).content == "hello"
    make_client.release()  # the caller's sessions, if any
    assert hostile.wait_for(lambda s: s.open == 0, WAIT)
    requests = hostile.stream_requests()
    assert [r.connection for r in requests] == [1, 2]
    if any(isinstance(s, (Hold, Trickle)) for s in script):
        assert hostile.hangups == 1  # the client closed it, the server saw it


@pytest.mark.parametrize(
    "tail",
    [
        b'{"error": "a late error line"}\n',
        b"not json at all\n",
        line("more text after done"),
    ],
    ids=["error-line", "not-json", "more-output"],
)
def test_lines_after_done_in_the_same_body_are_ignored(
    hostile: Hostile, make_client: MakeClient, tail: bytes
) -> None:
    hostile.enqueue([Send(head() + chunk(answer("ok") + tail) + END)])
    with make_client(hostile.url) as client:
        result = client.chat("m", USER)
    assert (result.content, result.done) == ("ok", True)


def test_a_clean_body_end_after_done_keeps_the_connection(
    hostile: Hostile, make_client: MakeClient
) -> None:
    """The body's end comes a moment after the done line: the worker waits for
    it, and the connection goes back to the pool for the next call."""
    latch = hostile.latch()
    hostile.enqueue(
        [Send(head() + chunk(answer("first"))), Gate(latch), Send(END)],
        # A pause before the second answer (pacing): the client then reads a
        # socket with nothing to read yet, as it would from a real model.
        [Pause(0.05), Send(chunked_response(answer("second")))],
    )
    with make_client(hostile.url) as client:
        handle = client.start_chat("m", USER, on_content=lambda _: latch.set())
        assert handle.result(WAIT).content == "first"
        assert client.chat("m", USER).content == "second"
    assert [r.connection for r in hostile.stream_requests()] == [1, 1]  # reused


def test_a_reused_connection_forgets_the_last_streams_drain_window(
    server: FakeOllama, make_client: MakeClient
) -> None:
    """After a done line the worker drains for at most ``DRAIN_TIMEOUT`` (0.25
    s); that bound belongs to that stream, never to the next one on the same
    pooled connection, whose server here answers after the window (found by
    the pool stress of test_concurrency.py: the old engine left the bound on the
    httpx connection, and the next read failed at once)."""
    server.enqueue(reply("first"), [Delay(0.4), *reply("second")])
    with make_client(server.url) as client:
        assert client.chat("m", USER).content == "first"
        assert client.chat("m", USER).content == "second"


# -- URLs and proxies --------------------------------------------------------------


def test_a_reverse_proxy_prefix_is_kept(
    hostile: Hostile, make_client: MakeClient
) -> None:
    hostile.enqueue([Send(chunked_response(answer("via the proxy")))])
    with make_client(hostile.url + "/ollama") as client:
        assert client.chat("m", USER).content == "via the proxy"
    assert [r.path for r in hostile.stream_requests()] == ["/ollama/api/chat"]


@pytest.mark.parametrize("var", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
def test_proxy_variables_do_not_break_a_loopback_host(
    server: FakeOllama,
    monkeypatch: pytest.MonkeyPatch,
    var: str,
    make_client: MakeClient,
    refused_url: str,
) -> None:
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.setenv(var, refused_url)
    server.enqueue(reply("direct"))
    with make_client(server.url) as client:  # both transports
        assert client.chat("m", USER).content == "direct"
    # The trap is real: the bare SDK client sends loopback traffic to the proxy.
    with ollama.Client(server.url) as bare, pytest.raises(ConnectionError):
        bare.list()


# -- descriptors and many streams --------------------------------------------------


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
        scripts: list[Script] = [
            [Gate(gate), Send(chunked_response(answer(t)))] for t in texts
        ]
        hostile.enqueue(*scripts)
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
