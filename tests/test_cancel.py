"""cancel() in every phase: before headers, mid-stream, in a stall, from callbacks."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from ollama_stream_sync import ChatResult, StreamingClient, StreamTimeout
from ollama_stream_sync.testing import Chunk, FakeOllama, Stall, reply

from .conftest import USER, WAIT, MakeClient
from .support.hostile import Hold, Hostile, Notify, Send, chunk, head, line

pytestmark = pytest.mark.transport


def terminal_recorder() -> tuple[list[tuple[str, Any]], dict[str, Any]]:
    seen: list[tuple[str, Any]] = []
    return seen, {
        "on_done": lambda r: seen.append(("done", r)),
        "on_error": lambda e: seen.append(("error", e)),
    }


def test_cancel_before_headers_while_model_loads(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue([Stall()])  # no status line yet: a model still loading
    seen, callbacks = terminal_recorder()
    handle = client.start_chat("m", USER, **callbacks)
    assert server.wait_stalled()
    assert handle.cancel() is True
    result = handle.result(WAIT)
    assert result.cancelled and result.content == ""
    assert handle.cancelled()
    assert [k for k, _ in seen] == ["done"] and seen[0][1] is result
    assert server.wait_for(lambda s: s.disconnects_seen == 1)  # the socket was closed


def test_cancel_during_a_silent_stall_keeps_partial_text(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue(
        [Chunk(thinking="Let me think"), Chunk(content="The answer"), Stall()]
    )
    seen, callbacks = terminal_recorder()
    got_content = threading.Event()
    handle = client.start_chat(
        "m", USER, on_content=lambda _: got_content.set(), **callbacks
    )
    assert got_content.wait(WAIT) and server.wait_stalled()
    assert handle.snapshot().content == "The answer"
    handle.cancel()
    result = handle.result(WAIT)
    assert result.cancelled
    assert (result.thinking, result.content) == ("Let me think", "The answer")
    assert not result.done
    assert len(seen) == 1 and seen[0][0] == "done"
    assert server.wait_for(lambda s: s.disconnects_seen == 1)
    assert "cancelled" in repr(handle)


def test_cancel_from_inside_a_callback_mid_stream(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue(reply(" ".join(str(i) for i in range(100))))
    holder: dict[str, Any] = {}
    ready = threading.Event()
    count = 0

    def on_content(_: str) -> None:
        nonlocal count
        count += 1
        if count == 10:
            assert ready.wait(WAIT)
            holder["handle"].cancel()

    holder["handle"] = handle = client.start_chat("m", USER, on_content=on_content)
    ready.set()
    result = handle.result(WAIT)
    assert result.cancelled
    assert count == 10  # nothing is delivered after the cancel took effect
    assert result.content == "0 1 2 3 4 5 6 7 8 9"


def test_cancel_after_finish_returns_false(client: StreamingClient) -> None:
    handle = client.start_chat("m", USER)
    result = handle.result(WAIT)
    assert handle.cancel() is False
    assert not handle.cancelled() and not result.cancelled


def test_cancel_twice_is_harmless(server: FakeOllama, client: StreamingClient) -> None:
    server.enqueue([Stall()])
    seen, callbacks = terminal_recorder()
    handle = client.start_chat("m", USER, **callbacks)
    assert server.wait_stalled()
    assert handle.cancel() and handle.cancel()
    assert handle.result(WAIT).cancelled
    assert handle.cancel() is True  # still reports cancelled
    assert len(seen) == 1


def test_handle_context_manager_exit_cancels(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue([Chunk(content="x"), Stall()])
    with client.start_chat("m", USER) as handle:
        assert server.wait_stalled()
    assert handle.done() and handle.result(0).cancelled
    assert not handle.thread.is_alive()


def test_client_close_cancels_every_running_stream(
    server: FakeOllama, make_client: MakeClient
) -> None:
    client = make_client(server.url)
    server.enqueue(*[[Stall()] for _ in range(3)])
    results: list[ChatResult] = []
    handles = [client.start_chat("m", USER, on_done=results.append) for _ in range(3)]
    assert server.wait_stalled(3)
    client.close()
    assert all(h.done() and h.result(0).cancelled for h in handles)
    assert len(results) == 3
    make_client.release()  # the caller's sessions, if any
    assert server.wait_closed()  # every connection released
    with pytest.raises(RuntimeError, match="closed"):
        client.start_chat("m", USER)


def test_cancelled_stream_leaves_the_client_usable(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue([Chunk(content="x"), Stall()], reply("fresh"))
    handle = client.start_chat("m", USER)
    assert server.wait_stalled()
    handle.cancel()
    assert handle.result(WAIT).cancelled
    assert client.chat("m", USER).content == "fresh"


def test_snapshot_from_another_thread_while_streaming(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue([Chunk(content="a"), Chunk(content="b"), Stall()])
    got_b = threading.Event()
    handle = client.start_chat("m", USER, on_content=lambda t: t == "b" and got_b.set())
    assert got_b.wait(WAIT)
    snap = handle.snapshot()
    assert snap.content == "ab" and not snap.done and not snap.cancelled
    handle.cancel()
    handle.result(WAIT)


# -- a connection the server will close: cancel and read timeouts still reach it --

CLOSING = [{"Connection": "close"}, {}]


@pytest.mark.parametrize("headers", CLOSING, ids=["connection-close", "keep-alive"])
@pytest.mark.parametrize("phase", ["waiting", "mid-stream"])
def test_cancel_reaches_a_connection_the_server_will_close(
    hostile: Hostile, make_client: MakeClient, headers: dict[str, str], phase: str
) -> None:
    """A gateway that answers ``Connection: close`` and then stalls: the
    connection will not go back to the pool, and a cancel must still shut it
    (over session=, http.client hands such a socket to the response)."""
    played = threading.Event()
    if phase == "waiting":
        hostile.enqueue([Notify(played), Hold()])
    else:
        body = chunk(line("a")) + chunk(line("b"))
        hostile.enqueue([Send(head(headers=headers) + body), Notify(played), Hold()])
    with make_client(hostile.url) as client:
        handle = client.start_chat("m", USER)
        assert played.wait(WAIT)
        if phase == "mid-stream":
            assert handle.wait_for(lambda r: r.content == "ab", WAIT)
        assert handle.cancel()
        assert handle.result(WAIT).cancelled
    assert hostile.wait_for(lambda h: h.hangups == 1, WAIT)


@pytest.mark.parametrize("headers", CLOSING, ids=["connection-close", "keep-alive"])
def test_read_timeout_fires_on_a_connection_the_server_will_close(
    hostile: Hostile, make_client: MakeClient, headers: dict[str, str]
) -> None:
    body = chunk(line("a")) + chunk(line("b"))
    hostile.enqueue([Send(head(headers=headers) + body), Hold()])
    with make_client(hostile.url, read_timeout=0.3) as client:
        with pytest.raises(StreamTimeout) as caught:
            client.chat("m", USER)
    assert caught.value.which == "read"
    assert caught.value.partial.content == "ab"
    assert hostile.wait_for(lambda h: h.hangups == 1, WAIT)
