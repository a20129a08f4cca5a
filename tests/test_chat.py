"""End to end through the real SDK and httpx: what callbacks see and what is sent."""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Any

import ollama
import pytest

from ollama_stream_sync import ChatResult, StreamingClient
from ollama_stream_sync.testing import (
    Chunk,
    Done,
    FakeOllama,
    Stall,
    chat_prompt,
    count_tokens,
    reply,
    tool_call,
)

from .conftest import USER, WAIT

pytestmark = pytest.mark.transport


def record() -> tuple[list[tuple[str, Any]], dict[str, Any]]:
    events: list[tuple[str, Any]] = []
    callbacks = {
        "on_thinking": lambda t: events.append(("thinking", t)),
        "on_content": lambda t: events.append(("content", t)),
        "on_tool_call": lambda c: events.append(("tool", c)),
        "on_done": lambda r: events.append(("done", r)),
        "on_error": lambda e: events.append(("error", e)),
    }
    return events, callbacks


def test_callbacks_in_arrival_order_then_one_done(
    server: FakeOllama, client: StreamingClient
) -> None:
    call = tool_call("get_weather", {"city": "Paris"}, id="call_ab12cd34")
    server.enqueue(reply("It rains.", thinking="Check weather.", tool_calls=[call]))
    events, callbacks = record()
    result = client.chat("qwen3", USER, think=True, **callbacks)
    kinds = [k for k, _ in events]
    assert kinds == ["thinking"] * 2 + ["content"] * 2 + ["tool", "done"]
    assert "".join(p for k, p in events if k == "thinking") == "Check weather."
    assert "".join(p for k, p in events if k == "content") == "It rains."
    delivered = events[4][1]
    assert delivered["function"]["name"] == "get_weather"
    assert delivered["id"] == "call_ab12cd34"
    assert delivered["function"]["index"] == 0
    assert events[-1][1] is result
    assert result.content == "It rains." and result.thinking == "Check weather."
    assert result.done and result.done_reason == "stop" and not result.cancelled


def test_done_chunk_text_and_tool_calls_are_processed(
    server: FakeOllama, client: StreamingClient
) -> None:
    calls = [tool_call("a", {"x": 1}, index=0), tool_call("b", {"y": 2}, index=1)]
    server.enqueue([Chunk(content="Partial"), Done(content=" end.", tool_calls=calls)])
    events, callbacks = record()
    result = client.chat("m", USER, **callbacks)
    assert result.content == "Partial end."
    assert [c["function"]["name"] for c in result.tool_calls] == ["a", "b"]
    assert [k for k, _ in events] == ["content", "content", "tool", "tool", "done"]


def test_mixed_chunk_delivers_thinking_before_content(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue([Chunk(thinking="Last thought.", content="First word"), Done()])
    events, callbacks = record()
    client.chat("m", USER, **callbacks)
    assert events[:2] == [("thinking", "Last thought."), ("content", "First word")]


def test_result_counters_timing_and_message(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue(reply("one two three four", thinking="hmm"))
    result = client.chat("m", USER)
    assert result.model == "m"
    assert result.eval_count == 5
    assert result.prompt_eval_count == count_tokens(chat_prompt(USER))
    assert result.total_duration and result.eval_duration and result.load_duration
    assert result.time_to_first_token is not None and result.time_to_first_token >= 0
    assert result.tokens_per_second is None or result.tokens_per_second > 0
    assert result.to_message() == {
        "role": "assistant",
        "content": "one two three four",
        "thinking": "hmm",
    }
    with pytest.raises(AttributeError):
        result.content = "changed"  # type: ignore[misc]


def test_request_body_keeps_history_fields_and_options(
    server: FakeOllama, client: StreamingClient
) -> None:
    def get_weather(city: str) -> str:
        """Get the weather.

        Args:
            city: The city.
        """
        return city

    history = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": "",
            "thinking": "call it",
            "tool_calls": [tool_call("get_weather", {"city": "Paris"}, id="call_1")],
        },
        {
            "role": "tool",
            "content": "rain",
            "tool_name": "get_weather",
            "tool_call_id": "call_1",
        },
        ollama.Message(role="user", content="Thanks"),
    ]
    schema = {
        "type": "function",
        "function": {
            "name": "raw",
            "parameters": {
                "type": "object",
                "additionalProperties": False,
                "properties": {},
            },
        },
    }
    server.enqueue(reply('{"ok": true}'))  # format="json": the answer is parsed
    result = client.chat(
        "qwen3",
        history,
        tools=[get_weather, schema],
        think="high",
        format="json",
        options={"temperature": 0, "num_ctx": 4096},
        keep_alive="5m",
        logprobs=True,
        top_logprobs=3,
    )
    assert result.parsed == {"ok": True}
    (request,) = server.stream_requests()
    body = request.body
    assert request.path == "/api/chat"
    assert body["stream"] is True and body["model"] == "qwen3"
    assert body["think"] == "high" and body["format"] == "json"
    assert body["options"] == {"temperature": 0, "num_ctx": 4096}
    assert body["keep_alive"] == "5m"
    assert (body["logprobs"], body["top_logprobs"]) == (True, 3)
    messages = body["messages"]
    assert messages[2]["tool_calls"][0]["id"] == "call_1"
    assert messages[2]["thinking"] == "call it"
    assert messages[3]["tool_call_id"] == "call_1"
    assert messages[4] == {"role": "user", "content": "Thanks"}
    assert body["tools"][0]["function"]["name"] == "get_weather"
    assert "city" in body["tools"][0]["function"]["parameters"]["properties"]
    assert body["tools"][1] == schema  # a dict schema goes through verbatim


def test_history_round_trip_for_a_second_turn(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue(reply("391", thinking="17*23"), reply("Yes."))
    messages: list[dict[str, Any]] = [{"role": "user", "content": "17 x 23?"}]
    messages.append(client.chat("m", messages, think=True).to_message())
    messages.append({"role": "user", "content": "Sure?"})
    assert client.chat("m", messages).content == "Yes."
    second = server.stream_requests()[1].body["messages"]
    assert second[1] == {"role": "assistant", "content": "391", "thinking": "17*23"}


def test_generate_streams_response_into_content(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue(reply("Blue sky.", thinking="sky"))
    events, callbacks = record()
    del callbacks["on_tool_call"]
    result = client.generate("m", "Why is the sky blue?", system="Short.", **callbacks)
    assert result.content == "Blue sky." and result.thinking == "sky"
    assert result.context == (1, 2, 3)
    assert [k for k, _ in events][-1] == "done"
    (request,) = server.stream_requests()
    assert request.path == "/api/generate"
    assert request.body["prompt"] == "Why is the sky blue?"
    assert request.body["system"] == "Short."


def test_empty_messages_load_the_model(client: StreamingClient) -> None:
    result = client.chat("m", [])
    assert result.done and result.done_reason == "load" and result.content == ""


def test_start_chat_handle_works_with_concurrent_futures(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue(reply("a"), reply("b"))
    handles = [client.start_chat("m", USER) for _ in range(2)]
    done = list(concurrent.futures.as_completed(handles, timeout=5))
    assert len(done) == 2
    assert sorted(h.result().content for h in handles) == ["a", "b"]
    assert all(h.done() and not h.cancelled() for h in handles)
    assert "finished" in repr(handles[0])


def test_add_done_callback_runs_at_once_when_already_done(
    client: StreamingClient,
) -> None:
    handle = client.start_chat("m", USER)
    assert handle.wait(5)
    seen: list[ChatResult] = []
    handle.add_done_callback(lambda h: seen.append(h.result()))
    assert seen and seen[0].content.startswith("Hello")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"model": ""}, ValueError),
        ({"messages": "hi"}, TypeError),
        ({"messages": [{"content": "no role"}]}, ValueError),
        ({"messages": [42]}, TypeError),
        ({"tools": [42]}, TypeError),
    ],
)
def test_bad_arguments_raise_before_any_thread_starts(
    client: StreamingClient, server: FakeOllama, kwargs: dict[str, Any], error: type
) -> None:
    args: dict[str, Any] = {"model": "m", "messages": USER} | kwargs
    with pytest.raises(error):
        client.start_chat(**args)
    assert server.stream_requests() == []
    assert client.active_streams() == []


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
