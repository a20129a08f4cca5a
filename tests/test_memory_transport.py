"""The in-memory transport behaves as a transport must: the engine cannot tell."""

from __future__ import annotations

import pytest

from ollama_stream_sync import StreamTimeout

from .support import USER, WAIT
from .support.memory import GATE, MemoryTransport, answer, chat_line, memory_client


def test_a_scripted_answer_streams_through_the_engine() -> None:
    transport = MemoryTransport()
    transport.enqueue([chat_line(thinking="hm"), *answer("Hel", "lo")])
    seen: list[str] = []
    with memory_client(transport) as client:
        result = client.chat("m", USER, on_content=seen.append)
    assert (result.thinking, result.content, seen) == ("hm", "Hello", ["Hel", "lo"])
    assert transport.requests[0]["messages"] == USER


def test_a_cancel_wakes_a_blocked_read() -> None:
    transport = MemoryTransport()
    transport.enqueue([chat_line("a"), GATE, *answer("b")])
    with memory_client(transport) as client:
        handle = client.start_chat("m", USER)
        assert handle.wait_for(lambda r: r.content == "a", WAIT)
        assert handle.cancel()
        result = handle.result(WAIT)
    assert result.cancelled and result.content == "a"


def test_a_read_timeout_wakes_a_blocked_read() -> None:
    transport = MemoryTransport()
    transport.enqueue([chat_line("a"), GATE])
    with memory_client(transport, read_timeout=0.05) as client:
        with pytest.raises(StreamTimeout) as caught:
            client.chat("m", USER)
    assert caught.value.which == "read" and caught.value.partial.content == "a"
