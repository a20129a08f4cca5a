"""Sockets and descriptors: closed after any cancel, many at once, past fd 1024."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import textwrap

import pytest
import requests

from ollama_stream_sync import StreamingClient
from ollama_stream_sync.testing import FakeOllama

from .conftest import USER, WAIT
from .support.hostile import Gate, Hostile, Send, answer, chunked_response

pytestmark = pytest.mark.transport


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
