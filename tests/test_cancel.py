"""cancel() in every phase, on both transports: the stream ends at once, keeps
what arrived, and every socket it opened is closed. How a cancel looks to the
caller (from a callback, twice, too late) is engine logic: it runs once, on the
in-memory transport. Connecting, name lookups and sockets a stream must not
touch: ``test_cancel_sockets.py``.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest

from ollama_stream_sync import (
    CallbackError,
    ChatResult,
    InlineDispatcher,
    QueueDispatcher,
    StreamHandle,
    StreamingClient,
)
from ollama_stream_sync.testing import Chunk, FakeOllama, Stall, reply

from .support import USER, WAIT
from .support.clients import MakeClient, Recorder, assert_all_closed
from .support.hostile import Hold, Hostile, Notify, Send, chunk, head, line
from .support.memory import GATE, MemoryTransport, answer, chat_line, memory_client

pytestmark = pytest.mark.transport

# -- how a cancel looks to the caller (once, no socket) ------------------------------


def test_cancel_from_inside_a_callback_mid_stream(
    memory: MemoryTransport, memory_chat: StreamingClient
) -> None:
    memory.enqueue(answer(*(f"{i} " for i in range(100))))
    holder: dict[str, Any] = {}
    ready = threading.Event()
    count = 0

    def on_content(_: str) -> None:
        nonlocal count
        count += 1
        if count == 10:
            assert ready.wait(WAIT)
            holder["handle"].cancel()

    holder["handle"] = handle = memory_chat.start_chat("m", USER, on_content=on_content)
    ready.set()
    result = handle.result(WAIT)
    assert result.cancelled
    assert count == 10  # nothing is delivered after the cancel took effect
    assert result.content == "0 1 2 3 4 5 6 7 8 9 "


def test_cancel_after_finish_returns_false(memory_chat: StreamingClient) -> None:
    handle = memory_chat.start_chat("m", USER)
    result = handle.result(WAIT)
    assert handle.cancel() is False
    assert not handle.cancelled() and not result.cancelled


def test_cancel_twice_is_harmless(
    memory: MemoryTransport, memory_chat: StreamingClient
) -> None:
    memory.enqueue([chat_line("a"), GATE])
    rec = Recorder()
    handle = memory_chat.start_chat("m", USER, **rec.kwargs())
    assert handle.wait_for(lambda r: r.content == "a", WAIT)
    assert handle.cancel() and handle.cancel()
    assert handle.result(WAIT).cancelled
    assert handle.cancel() is True  # still reports cancelled
    assert rec.kinds() == ["content", "done"]


def test_handle_context_manager_exit_cancels(
    memory: MemoryTransport, memory_chat: StreamingClient
) -> None:
    memory.enqueue([chat_line("x"), GATE])
    with memory_chat.start_chat("m", USER) as handle:
        assert handle.wait_for(lambda r: r.content == "x", WAIT)
    assert handle.done() and handle.result(0).cancelled
    assert not handle.thread.is_alive()


def test_a_cancel_during_the_final_chunk_is_refused(
    memory: MemoryTransport, memory_chat: StreamingClient
) -> None:
    """Found by stress (test_concurrency.py): the done line seals the outcome before
    its own text is delivered, so a cancel from that last callback (or from any
    thread at that moment) is refused and the complete answer is not reported
    cancelled."""
    memory.enqueue([chat_line("Hello"), chat_line(" world", done=True)])
    holder: dict[str, Any] = {}
    answers: list[bool] = []
    ready = threading.Event()

    def on_content(text: str) -> None:
        if text == " world":
            assert ready.wait(WAIT)
            answers.append(holder["handle"].cancel())

    holder["handle"] = handle = memory_chat.start_chat("m", USER, on_content=on_content)
    ready.set()
    result = handle.result(WAIT)
    assert answers == [False]
    assert result.done and not result.cancelled
    assert result.content == "Hello world"


# -- every phase, on both transports ---------------------------------------------


@pytest.mark.parametrize("phase", ["before-headers", "mid-body"])
def test_cancel_ends_the_stream_keeps_its_text_and_closes_every_socket(
    server: FakeOllama,
    make_client: MakeClient,
    worker_sockets: list[socket.socket],
    phase: str,
) -> None:
    """Before the headers (a model still loading) or in a silent stall mid-body:
    the partial text is kept, one terminal callback runs, and every socket the
    stream opened is closed before the client or the session is."""
    if phase == "mid-body":
        server.enqueue(
            [Chunk(thinking="Let me think"), Chunk(content="The answer"), Stall()]
        )
    else:
        server.enqueue([Stall()])  # no status line yet: a model still loading
    rec = Recorder()
    with make_client(server.url) as client:
        handle = client.start_chat("m", USER, **rec.kwargs())
        assert server.wait_stalled()
        if phase == "mid-body":
            assert handle.wait_for(lambda r: r.content == "The answer", WAIT)
        assert handle.cancel() is True
        result = handle.result(WAIT)
        assert handle.join(WAIT)
        assert_all_closed(worker_sockets)
    assert result.cancelled and handle.cancelled() and not result.done
    expected = ("Let me think", "The answer") if phase == "mid-body" else ("", "")
    assert (result.thinking, result.content) == expected
    assert rec.terminals == [("done", result)]
    assert "cancelled" in repr(handle)
    assert server.wait_for(lambda s: s.disconnects_seen == 1)


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


def test_a_cancelled_stream_leaves_the_client_usable(
    server: FakeOllama, make_client: MakeClient
) -> None:
    server.enqueue([Chunk(content="x"), Stall()], reply("fresh"))
    with make_client(server.url) as client:
        handle = client.start_chat("m", USER)
        assert server.wait_stalled()
        handle.cancel()
        assert handle.result(WAIT).cancelled
        assert client.chat("m", USER).content == "fresh"


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


# -- a cancel and a callback's failure at once -----------------------------------


@pytest.mark.parametrize("queued", [False, True], ids=["inline", "queued"])
def test_a_callback_that_cancels_then_raises_fails_the_stream(queued: bool) -> None:
    """The cancel lands first, then the callback raises: the user's exception is
    not swallowed. ``on_error`` gets the ``CallbackError`` and ``result()``
    raises it, under the inline dispatcher as under a queued one (inline used to
    fire ``on_done`` with a cancelled result, then raise from ``result()``)."""
    transport = MemoryTransport()
    transport.enqueue(answer("a", "b"))
    dispatcher = QueueDispatcher() if queued else InlineDispatcher()
    seen: list[Any] = []
    started: list[StreamHandle] = []
    ready = threading.Event()
    with memory_client(transport, dispatcher=dispatcher) as client:

        def on_content(_: str) -> None:
            assert ready.wait(WAIT)  # the handle exists (inline, this may run first)
            started[0].cancel()
            raise ValueError("a bug in the callback")

        handle = client.start_chat(
            "m",
            USER,
            on_content=on_content,
            on_done=lambda result: seen.append(("done", result)),
            on_error=lambda error: seen.append(("error", error)),
        )
        started.append(handle)
        ready.set()
        if queued:
            assert dispatcher.pump_until(handle._delivery.delivered.is_set, WAIT)
        with pytest.raises(CallbackError) as caught:
            handle.result(WAIT)
    assert isinstance(caught.value.__cause__, ValueError)
    assert [kind for kind, _ in seen] == ["error"]
    assert seen[0][1] is caught.value
