"""A failed Conversation.send leaves no trace in the history: what was said
before stays, and the next send goes out as if the failed one never happened.

Conversation rounds are the engine's: once, on httpx. (The other conversation
tests are in test_conversation.py, which another branch is changing: these
join it once both are merged.)
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from ollama_stream_sync import (
    CallbackError,
    Conversation,
    ServerError,
    StreamError,
    StreamingClient,
    ToolRoundsExceeded,
)
from ollama_stream_sync.testing import (
    Chunk,
    Cut,
    FakeOllama,
    Raw,
    Stall,
    http_error,
    reply,
    tool_call,
)

from .support import WAIT

SYSTEM = {"role": "system", "content": "Be brief."}


def sent_messages(server: FakeOllama) -> list[dict[str, Any]]:
    return list(server.stream_requests()[-1].body["messages"])


@pytest.mark.parametrize(
    "failure",
    [
        http_error(500, "boom"),
        [Chunk(content="half an answer"), Cut()],
        [Chunk(content="half an answer"), Raw(b"not json")],
    ],
    ids=["http-500", "cut-mid-answer", "garbage-mid-answer"],
)
def test_a_failed_send_restores_the_history(
    server: FakeOllama, client: StreamingClient, failure: list[Any]
) -> None:
    server.enqueue(reply("first answer"), failure, reply("third answer"))
    conv = Conversation(client, "m", system="Be brief.")
    conv.send("one")
    before = conv.messages
    with pytest.raises(StreamError) as info:
        conv.send("two")
    assert conv.messages == before
    if "half" in str(failure):
        assert info.value.partial.content == "half an answer"
    conv.send("three")
    assert sent_messages(server) == [
        SYSTEM,
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "three"},  # one user turn, not two
    ]


def test_a_send_that_fails_after_a_tool_round_restores_the_history(
    server: FakeOllama, client: StreamingClient
) -> None:
    calls: list[str] = []

    def get_time(city: str) -> str:
        """The time in a city.

        Args:
            city: the city
        """
        calls.append(city)
        return "noon"

    server.enqueue(
        reply(tool_calls=[tool_call("get_time", {"city": "Paris"})]),
        http_error(500, "the runner died"),
    )
    conv = Conversation(client, "m", tools=[get_time])
    with pytest.raises(ServerError):
        conv.send("time in Paris?")
    assert conv.messages == []
    assert calls == ["Paris"]  # the tool did run; its turn is gone with the send


def test_a_failing_callback_restores_the_history(
    server: FakeOllama, client: StreamingClient
) -> None:
    def on_content(_: str) -> None:
        raise RuntimeError("the window closed")

    conv = Conversation(client, "m")
    with pytest.raises(CallbackError):
        conv.send("hi", on_content=on_content)
    assert conv.messages == []


def test_a_cancelled_send_keeps_what_was_said(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue([Chunk(content="partial answer"), Stall()], reply("next"))
    got = threading.Event()
    conv = Conversation(client, "m")
    handle = conv.start_send("question", on_content=lambda _: got.set())
    assert got.wait(WAIT)
    handle.cancel()
    assert handle.result(WAIT).cancelled
    assert conv.messages == [
        {"role": "user", "content": "question"},
        {"role": "assistant", "content": "partial answer"},
    ]
    conv.send("go on")
    assert [m["role"] for m in sent_messages(server)] == ["user", "assistant", "user"]


def test_tool_rounds_exceeded_keeps_its_valid_history(
    server: FakeOllama, client: StreamingClient
) -> None:
    call = tool_call("lookup", {"q": "x"}, id="call_1")
    server.enqueue(*[reply(tool_calls=[call]) for _ in range(3)])
    conv = Conversation(
        client,
        "m",
        tools=[({"function": {"name": "lookup"}}, lambda q: q)],
        max_tool_rounds=1,
    )
    with pytest.raises(ToolRoundsExceeded):
        conv.send("look it up")
    history = conv.messages
    assert [m["role"] for m in history] == [
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
    ]
    # Every tool call is answered: the history can be sent as it is.
    for i, message in enumerate(history):
        if message["role"] == "assistant":
            ids = [c["id"] for c in message["tool_calls"]]
            assert history[i + 1]["tool_call_id"] in ids


# -- 15. non-JSON error bodies; a host URL with an API path --
