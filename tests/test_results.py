"""A chat end to end: what the callbacks see, what the result holds, what is sent.

The state of a stream and its result are the engine's: this runs once, on
httpx (the accumulator alone, no thread: test_state.py).
"""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Any

import ollama
import pytest

from ollama_stream_sync import ChatResult, ContextTruncatedWarning, StreamingClient
from ollama_stream_sync.testing import (
    Chunk,
    DoneLine,
    FakeOllama,
    Stall,
    chat_prompt,
    count_tokens,
    reply,
    tool_call,
)

from .support import USER, WAIT
from .support.clients import Recorder


def test_callbacks_in_arrival_order_then_one_done(
    server: FakeOllama, client: StreamingClient
) -> None:
    call = tool_call("get_weather", {"city": "Paris"}, id="call_ab12cd34")
    server.enqueue(reply("It rains.", thinking="Check weather.", tool_calls=[call]))
    rec = Recorder()
    events, callbacks = rec.events, rec.kwargs()
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
    server.enqueue(
        [Chunk(content="Partial"), DoneLine(content=" end.", tool_calls=calls)]
    )
    rec = Recorder()
    events, callbacks = rec.events, rec.kwargs()
    result = client.chat("m", USER, **callbacks)
    assert result.content == "Partial end."
    assert [c["function"]["name"] for c in result.tool_calls] == ["a", "b"]
    assert [k for k, _ in events] == ["content", "content", "tool", "tool", "done"]


def test_mixed_chunk_delivers_thinking_before_content(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue([Chunk(thinking="Last thought.", content="First word"), DoneLine()])
    rec = Recorder()
    events, callbacks = rec.events, rec.kwargs()
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

    history: list[Any] = [
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
    rec = Recorder()
    events, callbacks = rec.events, rec.kwargs()
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


def test_snapshot_from_another_thread_while_streaming(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue([Chunk(content="a"), Chunk(content="b"), Stall()])
    got_b = threading.Event()

    def on_content(text: str) -> None:
        if text == "b":
            got_b.set()

    handle = client.start_chat("m", USER, on_content=on_content)
    assert got_b.wait(WAIT)
    snap = handle.snapshot()
    assert snap.content == "ab" and not snap.done and not snap.cancelled
    handle.cancel()
    handle.result(WAIT)


# -- context limits, the request's fields, the cloud's ------------------------------


def test_a_silently_truncated_prompt_is_flagged_and_warned(
    server: FakeOllama, client: StreamingClient
) -> None:
    long_history = [{"role": "user", "content": "word " * 4000}]  # 4,000 tokens
    counters = {"prompt_eval_count": 1500, "eval_count": 1}
    server.enqueue(
        [Chunk(content="ok"), DoneLine(counters=counters)],
        [Chunk(content="ok"), DoneLine(counters={"prompt_eval_count": 4010})],
    )
    with pytest.warns(ContextTruncatedWarning, match="read 1500 tokens"):
        cut = client.chat("m", long_history)
    whole = client.chat("m", long_history)
    assert cut.prompt_truncated and not whole.prompt_truncated


def test_done_reason_length_sets_stopped_by_length(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue(reply("cut at num_predict", done_reason="length"), reply("whole"))
    assert client.chat("m", USER).stopped_by_length
    assert not client.chat("m", USER).stopped_by_length


def test_truncate_and_shift_reach_the_server(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue(reply("a"), reply("b"))
    client.chat("m", USER, truncate=False, shift=False)
    client.generate("m", "hi", truncate=True, shift=False)
    chat, generate = (r.body for r in server.stream_requests())
    assert (chat["truncate"], chat["shift"]) == (False, False)
    assert (generate["truncate"], generate["shift"]) == (True, False)


def test_think_levels_pass_through_unchanged(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue(reply("a"), reply("b"), reply("c"))
    for level in ("max", "high", True):
        client.chat("m", USER, think=level)
    assert [r.body["think"] for r in server.stream_requests()] == ["max", "high", True]


def test_remote_model_and_host_are_attributes(
    server: FakeOllama, client: StreamingClient
) -> None:
    extra = {"remote_model": "gpt-oss:120b", "remote_host": "https://ollama.com:443"}
    server.enqueue([Chunk(content="hi"), DoneLine(extra=extra)])
    result = client.chat("gpt-oss:120b-cloud", USER)
    assert result.remote_model == "gpt-oss:120b"
    assert result.remote_host == "https://ollama.com:443"
    assert "remote_model" not in result.extra
