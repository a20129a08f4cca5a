"""The four timeouts, each naming itself, each ending the stream without polling."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from ollama_stream_sync import RetryPolicy, StreamTimeout
from ollama_stream_sync.testing import (
    Chunk,
    Delay,
    Done,
    FakeOllama,
    Stall,
    http_error,
    reply,
)

from .conftest import USER, WAIT, MakeClient

pytestmark = pytest.mark.transport

FAST = RetryPolicy(initial_delay=0.01, jitter=False)
NO_TIMERS: dict[str, Any] = {"first_token_timeout": None, "read_timeout": None}


def test_read_timeout_on_a_silent_stream(
    server: FakeOllama, make_client: MakeClient
) -> None:
    server.enqueue([Chunk(content="partial"), Stall()])
    with make_client(server.url, read_timeout=0.2) as client:
        with pytest.raises(StreamTimeout) as info:
            client.chat("m", USER)
    assert info.value.which == "read"
    assert info.value.partial.content == "partial"
    assert server.wait_for(lambda s: s.disconnects_seen == 1)


def test_read_timeout_after_output_is_not_retried(
    server: FakeOllama, make_client: MakeClient
) -> None:
    server.enqueue([Chunk(content="partial"), Stall()], reply("never"))
    with make_client(server.url, read_timeout=0.2, retry=FAST) as client:
        with pytest.raises(StreamTimeout):
            client.chat("m", USER)
    assert len(server.stream_requests()) == 1


def test_steady_slow_stream_does_not_time_out(
    server: FakeOllama, make_client: MakeClient
) -> None:
    steps = [s for w in "a b c d".split() for s in (Delay(0.05), Chunk(content=w))]
    server.enqueue([*steps, Done()])
    with make_client(server.url, read_timeout=1.0, first_token_timeout=1.0) as c:
        assert c.chat("m", USER).content == "abcd"


def test_first_token_timeout_while_a_model_loads(
    server: FakeOllama, make_client: MakeClient
) -> None:
    server.enqueue([Stall()])
    with make_client(server.url, first_token_timeout=0.2) as client:
        with pytest.raises(StreamTimeout) as info:
            client.chat("m", USER)
    assert info.value.which == "first_token"
    assert server.wait_for(lambda s: s.disconnects_seen == 1)


def test_first_token_timeout_is_retried(
    server: FakeOllama, make_client: MakeClient
) -> None:
    server.enqueue([Stall()], reply("loaded now"))
    errors: list[Any] = []
    # The second attempt must answer within this too: room for a busy machine.
    with make_client(server.url, first_token_timeout=1.0, retry=FAST) as client:
        result = client.chat("m", USER, on_retry=lambda a, e, d: errors.append(e))
    assert result.content == "loaded now"
    assert [e.which for e in errors] == ["first_token"]


def test_deadline_bounds_the_whole_call(
    server: FakeOllama, make_client: MakeClient
) -> None:
    server.enqueue([Chunk(content="so far"), Stall()])
    with make_client(server.url, deadline=0.3, **NO_TIMERS) as client:
        with pytest.raises(StreamTimeout) as info:
            client.chat("m", USER)
    assert info.value.which == "deadline"
    assert info.value.partial.content == "so far"


def test_deadline_cuts_a_retry_backoff_short(
    server: FakeOllama, make_client: MakeClient
) -> None:
    server.enqueue(http_error(503, "busy"), reply("never"))
    slow = RetryPolicy(initial_delay=60.0, jitter=False)
    with make_client(server.url, retry=slow) as client:
        handle = client.start_chat("m", USER, deadline=0.3)  # per call
        with pytest.raises(StreamTimeout) as info:
            handle.result(WAIT)  # far less than the 60 s backoff
    assert info.value.which == "deadline"
    assert len(server.stream_requests()) == 1


def test_per_call_timeouts_override_the_client(
    server: FakeOllama, make_client: MakeClient
) -> None:
    server.enqueue([Chunk(content="x"), Stall()])
    with make_client(server.url, read_timeout=None) as client:
        with pytest.raises(StreamTimeout) as info:
            client.chat("m", USER, read_timeout=0.2)
    assert info.value.which == "read"


def test_connect_timeout(unaccepting_port: int, make_client: MakeClient) -> None:
    url = f"http://127.0.0.1:{unaccepting_port}"
    with make_client(url, connect_timeout=0.2) as client:
        with pytest.raises(StreamTimeout) as info:
            client.chat("m", USER)
    assert info.value.which == "connect"


def test_idle_client_holds_no_timer_thread(
    server: FakeOllama, make_client: MakeClient
) -> None:
    client = make_client(server.url, read_timeout=5)
    client.chat("m", USER)
    timers = [t for t in threading.enumerate() if "timers" in t.name]
    for thread in timers:
        thread.join(WAIT)
    assert not any(t.is_alive() for t in timers)
    client.close()
