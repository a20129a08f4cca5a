"""Conversation: history kept right across turns, and the automatic tool loop."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from ollama_stream_sync import (
    Conversation,
    StreamingClient,
    ToolRoundsExceeded,
)
from ollama_stream_sync.testing import Chunk, FakeOllama, Stall, reply, tool_call

from .support import WAIT

CALLS: list[str] = []


def get_weather(city: str) -> str:
    """Get the current weather for a city.

    Args:
        city: The city's name.
    """
    CALLS.append(city)
    return {"Paris": "rain, 18 C", "Tokyo": "sun, 25 C"}[city]


def broken_tool(x: int) -> int:
    """A tool that fails.

    Args:
        x: Anything.
    """
    raise RuntimeError("database offline")


@pytest.fixture(autouse=True)
def _clear_calls() -> None:
    CALLS.clear()


def test_two_tool_calls_in_one_turn(
    server: FakeOllama, client: StreamingClient
) -> None:
    paris = tool_call("get_weather", {"city": "Paris"}, index=0, id="call_p")
    tokyo = tool_call("get_weather", {"city": "Tokyo"}, index=1, id="call_t")
    server.enqueue(
        reply(thinking="Need both cities.", tool_calls=[paris, tokyo]),
        reply("Paris: rain. Tokyo: sun.", thinking="Summarise."),
    )
    conv = Conversation(
        client, "qwen3", system="Be brief.", tools=[get_weather], think=True
    )
    results: list[tuple[str, str]] = []
    deltas: list[str] = []
    final = conv.send(
        "Weather in Paris and Tokyo?",
        on_content=deltas.append,
        on_tool_result=lambda call, out: results.append((call["id"], out)),
    )
    assert final.content == "Paris: rain. Tokyo: sun."
    assert CALLS == ["Paris", "Tokyo"]  # run in order
    assert results == [("call_p", "rain, 18 C"), ("call_t", "sun, 25 C")]
    roles = [m["role"] for m in conv.messages]
    assert roles == ["system", "user", "assistant", "tool", "tool", "assistant"]
    first_turn = conv.messages[2]
    assert first_turn["thinking"] == "Need both cities."
    assert [c["id"] for c in first_turn["tool_calls"]] == ["call_p", "call_t"]
    assert conv.messages[3] == {
        "role": "tool",
        "content": "rain, 18 C",
        "tool_name": "get_weather",
        "tool_call_id": "call_p",
    }
    # what the model was sent in round two is exactly the history so far
    second = server.stream_requests()[1].body
    assert second["messages"] == conv.messages[:5]
    assert second["think"] is True
    assert second["tools"][0]["function"]["name"] == "get_weather"
    assert "".join(deltas) == final.content


def test_a_chain_of_rounds(server: FakeOllama, client: StreamingClient) -> None:
    server.enqueue(
        reply(tool_calls=[tool_call("get_weather", {"city": "Paris"})]),
        reply(tool_calls=[tool_call("get_weather", {"city": "Tokyo"})]),
        reply("Both done."),
    )
    conv = Conversation(client, "m", tools=[get_weather])
    assert conv.send("Go").content == "Both done."
    assert CALLS == ["Paris", "Tokyo"]
    roles = [m["role"] for m in conv.messages]
    assert roles == ["user", "assistant", "tool", "assistant", "tool", "assistant"]


def test_a_tool_that_raises_goes_back_to_the_model(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue(
        reply(tool_calls=[tool_call("broken_tool", {"x": 1})]),
        reply("The database is offline, sorry."),
    )
    seen: list[str] = []
    conv = Conversation(client, "m", tools=[broken_tool])
    final = conv.send("Try", on_tool_result=lambda c, out: seen.append(out))
    assert final.content == "The database is offline, sorry."
    assert seen == ["Error: RuntimeError: database offline"]
    assert conv.messages[2]["content"] == "Error: RuntimeError: database offline"


def test_schema_with_implementation_and_unknown_tools(
    server: FakeOllama, client: StreamingClient
) -> None:
    schema = {
        "type": "function",
        "function": {
            "name": "add",
            "description": "Add two numbers.",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                "required": ["a", "b"],
            },
        },
    }
    server.enqueue(
        reply(
            tool_calls=[
                tool_call("add", {"a": 2, "b": 3}, index=0),
                tool_call("missing", {}, index=1),
            ]
        ),
        reply("5"),
    )
    conv = Conversation(client, "m", tools=[(schema, lambda a, b: a + b)])
    conv.send("2+3?")
    tool_msgs = [m for m in conv.messages if m["role"] == "tool"]
    assert tool_msgs[0]["content"] == "5"
    assert tool_msgs[1]["content"].startswith("Error: no tool named 'missing'")
    assert server.stream_requests()[0].body["tools"] == [schema]


def test_round_limit_raises_and_keeps_a_valid_history(
    server: FakeOllama, client: StreamingClient
) -> None:
    looping = reply(tool_calls=[tool_call("get_weather", {"city": "Paris"})])
    server.enqueue(looping, looping, looping)
    conv = Conversation(client, "m", tools=[get_weather], max_tool_rounds=2)
    with pytest.raises(ToolRoundsExceeded) as info:
        conv.send("Loop forever")
    assert info.value.partial.tool_calls  # the last turn travels with the error
    assert CALLS == ["Paris", "Paris"]  # two rounds ran, the third was refused
    roles = [m["role"] for m in conv.messages]
    assert roles == ["user"] + ["assistant", "tool"] * 3
    assert conv.messages[-1]["content"] == "Error: tool round limit reached."
    server.enqueue(reply("Stopped."))
    assert conv.send("Stop now").content == "Stopped."  # the history stays usable


def test_cancel_mid_round_keeps_partial_and_next_send_works(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue(
        reply(tool_calls=[tool_call("get_weather", {"city": "Paris"})]),
        [Chunk(content="It is rai"), Stall()],
        reply("Fine."),
    )
    got_text = threading.Event()
    conv = Conversation(client, "m", tools=[get_weather])
    handle = conv.start_send("Weather?", on_content=lambda t: got_text.set())
    assert got_text.wait(WAIT)
    with pytest.raises(RuntimeError, match="already sending"):
        conv.send("Second while running")
    handle.cancel()
    result = handle.result(WAIT)
    assert result.cancelled and result.content == "It is rai"
    roles = [m["role"] for m in conv.messages]
    assert roles == ["user", "assistant", "tool", "assistant"]
    assert conv.messages[-1]["content"] == "It is rai"
    assert not conv.running
    assert conv.send("Go on").content == "Fine."
    assert server.stream_requests()[-1].body["messages"][-1]["content"] == "Go on"


def test_cancel_before_tools_run_answers_them_as_cancelled(
    server: FakeOllama, client: StreamingClient
) -> None:
    calls = [
        tool_call("get_weather", {"city": c}, index=i)
        for i, c in enumerate(["Paris", "Tokyo"])
    ]
    server.enqueue(reply(tool_calls=calls))
    holder: dict[str, Any] = {}
    ready = threading.Event()

    def on_tool_call(call: dict[str, Any]) -> None:
        if call["function"]["index"] == 1:
            assert ready.wait(WAIT)
            holder["handle"].cancel()

    conv = Conversation(client, "m", tools=[get_weather])
    holder["handle"] = conv.start_send("Both?", on_tool_call=on_tool_call)
    ready.set()
    assert holder["handle"].result(WAIT).cancelled
    assert CALLS == []  # no tool ran after the cancel
    tool_msgs = [m for m in conv.messages if m["role"] == "tool"]
    assert [m["content"] for m in tool_msgs] == [
        "Error: cancelled by the user before this tool ran."
    ] * 2


def test_save_and_restore(server: FakeOllama, client: StreamingClient) -> None:
    server.enqueue(
        reply(tool_calls=[tool_call("get_weather", {"city": "Tokyo"}, id="c1")]),
        reply("Sunny in Tokyo.", thinking="ok"),
        reply("You asked about Tokyo."),
    )
    conv = Conversation(
        client,
        "qwen3",
        system="Be brief.",
        tools=[get_weather],
        think="high",
        options={"temperature": 0},
    )
    conv.send("Tokyo?")
    saved = conv.to_json()
    restored = Conversation.from_json(client, saved, tools=[get_weather])
    assert restored.messages == conv.messages
    assert (restored.model, restored.think, restored.system) == (
        "qwen3",
        "high",
        "Be brief.",
    )
    assert restored.send("What did I ask?").content == "You asked about Tokyo."
    body = server.stream_requests()[-1].body
    assert body["messages"][:-1] == json.loads(saved)["messages"]
    assert body["think"] == "high" and body["options"] == {"temperature": 0}
    with pytest.raises(ValueError, match="not a conversation"):
        Conversation.from_json(client, "{}")


def test_one_terminal_callback_for_the_whole_send(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue(
        reply(tool_calls=[tool_call("get_weather", {"city": "Paris"})]), reply("Done.")
    )
    done: list[Any] = []
    conv = Conversation(client, "m", tools=[get_weather])
    conv.send("x", on_done=done.append, on_error=done.append)
    assert len(done) == 1 and done[0].content == "Done."


def test_bad_arguments(client: StreamingClient) -> None:
    with pytest.raises(ValueError, match="two tools"):
        Conversation(client, "m", tools=[get_weather, get_weather])
    conv = Conversation(client, "m")
    with pytest.raises(TypeError, match="unexpected"):
        conv.send("x", on_contnet=print)
    assert conv.messages == []
