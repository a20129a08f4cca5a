"""The blocking iterator of typed events and the phases a stream reports.

The iterator and the phases are the engine's: they run once, on httpx (Ctrl-C
in a for loop: test_process.py).
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from ollama_stream_sync import (
    ChatStream,
    Content,
    Done,
    Phase,
    ProtocolError,
    QueueDispatcher,
    Reset,
    Retry,
    RetryPolicy,
    ServerError,
    StreamError,
    StreamEvent,
    StreamingClient,
    Thinking,
    ToolCall,
)
from ollama_stream_sync.testing import (
    Chunk,
    Cut,
    ErrorLine,
    FakeOllama,
    Stall,
    http_error,
    reply,
    tool_call,
)

from .support import USER, WAIT
from .support.clients import Recorder
from .support.memory import GATE, MemoryTransport, answer, memory_client

FAST = RetryPolicy(initial_delay=0.01, jitter=False)


def thinking_tool_answer() -> list[Any]:
    return reply(
        "Sunny in Paris.",
        thinking="Check the weather.",
        tool_calls=[tool_call("weather", {"city": "Paris"})],
    )


def phases(events: list[StreamEvent]) -> list[str]:
    return [e.name for e in events if isinstance(e, Phase)]


def as_items(events: list[StreamEvent]) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for event in events:
        if isinstance(event, Thinking):
            out.append(("thinking", event.text))
        elif isinstance(event, Content):
            out.append(("content", event.text))
        elif isinstance(event, ToolCall):
            out.append(("tool", event.call))
    return out


def test_full_iteration_equals_the_callbacks_and_the_result(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue(thinking_tool_answer())
    view = Recorder()
    with client.stream_chat("m", USER, **view.kwargs(phases=True)) as stream:
        events = list(stream)
        result = stream.result()
    items = [(k, v) for k, v in view.events if k in ("thinking", "content", "tool")]
    assert as_items(events) == items
    assert phases(events) == view.of("phase")
    assert "".join(t for k, t in as_items(events) if k == "content") == result.content
    assert "".join(t for k, t in as_items(events) if k == "thinking") == result.thinking
    assert isinstance(events[-1], Done) and events[-1].result == result
    assert stream.get_final_result() == result
    assert result.content == "Sunny in Paris." and result.tool_calls


def test_phases_arrive_in_order_for_thinking_tool_call_and_answer(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue(thinking_tool_answer())
    events = list(client.stream_chat("m", USER))
    assert phases(events) == [
        "connecting",
        "waiting",
        "thinking",
        "answering",
        "tool_call",
        "done",
    ]
    # the terminal phase comes right before Done; elapsed never goes back
    assert isinstance(events[-2], Phase) and events[-2].name == "done"
    elapsed = [e.elapsed for e in events if isinstance(e, Phase)]
    assert elapsed == sorted(elapsed)


def test_text_yields_only_the_answer(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue(thinking_tool_answer())
    assert "".join(client.stream_chat("m", USER).text()) == "Sunny in Paris."


def test_a_stream_is_iterable_once(server: FakeOllama, client: StreamingClient) -> None:
    server.enqueue(reply("once"))
    with client.stream_chat("m", USER) as stream:
        list(stream)
        with pytest.raises(RuntimeError, match="only once"):
            iter(stream)


def test_break_cancels_and_the_server_sees_the_disconnect(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue([Chunk(content="Half"), Stall()])
    with client.stream_chat("m", USER) as stream:
        for event in stream:
            if isinstance(event, Content):
                break
    assert stream.handle.done()
    result = stream.result()
    assert result.cancelled and result.content == "Half"
    assert server.wait_for(lambda s: s.disconnects_seen == 1)


def test_an_exception_in_the_loop_cancels_the_stream(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue([Chunk(content="Half"), Stall()])

    def loop(stream: ChatStream) -> None:
        with stream:
            for event in stream:
                if isinstance(event, Content):
                    raise LookupError("the loop's own error")

    stream = client.stream_chat("m", USER)
    with pytest.raises(LookupError):
        loop(stream)
    assert stream.result(WAIT).cancelled
    assert server.wait_for(lambda s: s.disconnects_seen == 1)


def test_a_cancel_from_another_thread_ends_the_loop_without_raising(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue([Chunk(content="Half"), Stall()])
    with client.stream_chat("m", USER) as stream:
        seen: list[StreamEvent] = []
        for event in stream:
            seen.append(event)
            if isinstance(event, Content):
                threading.Thread(target=stream.cancel).start()
    assert phases(seen)[-1] == "cancelled"
    assert isinstance(seen[-1], Done) and seen[-1].result.cancelled
    assert seen[-1].result.content == "Half"


def test_an_error_mid_stream_raises_after_the_earlier_events(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue([Chunk(content="Half "), Chunk(content="way"), ErrorLine("boom")])
    seen: list[StreamEvent] = []
    stream = client.stream_chat("m", USER)
    with pytest.raises(ServerError) as info:
        seen.extend(stream)
    assert "".join(e.text for e in seen if isinstance(e, Content)) == "Half way"
    assert phases(seen)[-1] == "failed"
    assert info.value.partial.content == "Half way"


def test_a_truncated_stream_raises_protocol_error_with_partial(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue([Chunk(content="cut "), Cut()])
    stream = client.stream_chat("m", USER)
    with pytest.raises(Exception) as info:  # noqa: PT011  # checked just below
        list(stream)
    error = info.value
    assert isinstance(error, (ProtocolError, ConnectionError))
    assert isinstance(error, StreamError)  # ConnectionFailed is both
    assert error.partial.content == "cut "


def test_retries_show_as_retry_and_retrying_then_succeed(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue(http_error(503, "server busy, please try again."), reply("ok"))
    events = list(client.stream_chat("m", USER, retry=FAST))
    retries = [e for e in events if isinstance(e, Retry)]
    assert len(retries) == 1 and retries[0].attempt == 1
    assert isinstance(retries[0].error, ServerError)
    names = phases(events)
    # the first attempt sent its request (waiting), then got the 503
    assert names[: names.index("retrying") + 1] == ["connecting", "waiting", "retrying"]
    assert names[names.index("retrying") + 1 :] == [
        "connecting",
        "waiting",
        "answering",
        "done",
    ]
    assert "".join(e.text for e in events if isinstance(e, Content)) == "ok"


def test_a_retry_after_output_shows_a_reset_event(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue([Chunk(content="lost "), ErrorLine("runner died")], reply("kept"))
    policy = RetryPolicy(initial_delay=0.01, jitter=False, retry_after_output=True)
    events = list(client.stream_chat("m", USER, retry=policy))
    kinds = [type(e).__name__ for e in events if not isinstance(e, Phase)]
    assert kinds.index("Reset") > kinds.index("Retry") > kinds.index("Content")
    assert isinstance(events[-1], Done) and events[-1].result.content == "kept"
    assert any(isinstance(e, Reset) for e in events)


def test_a_slow_consumer_does_not_trigger_the_read_timeout(
    server: FakeOllama, client: StreamingClient
) -> None:
    """The loop takes its time; the server sent everything long ago."""
    server.enqueue(reply("one two three four"))
    stream = client.stream_chat("m", USER, read_timeout=0.2)
    assert stream.handle.wait(WAIT)  # the stream ended before we look at it
    texts = list(stream.text())
    assert "".join(texts) == "one two three four"


def test_coalescing_applies_to_events(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue(reply(" ".join(["word"] * 50)))
    with client.stream_chat("m", USER, coalesce_interval=10.0) as stream:
        contents = [e for e in stream if isinstance(e, Content)]
    assert len(contents) == 1
    assert contents[0].text == " ".join(["word"] * 50)


def test_callbacks_keep_their_dispatcher_beside_the_iterator(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue(reply("a b"))
    pump = QueueDispatcher()
    seen: list[str] = []
    with client.stream_chat("m", USER, on_content=seen.append, dispatcher=pump) as s:
        texts = list(s.text())
    assert seen == []  # queued for the dispatcher, not run by the iterator
    pump.pump()
    assert seen == texts == ["a", " b"]


class SlowPs(MemoryTransport):
    """Answers ``/api/ps`` (no model loaded) only once ``answer_ps`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.answer_ps = threading.Event()

    def request_json(
        self, method: str, path: str, payload: bytes | None, *, timeout: float | None
    ) -> Any:
        assert self.answer_ps.wait(WAIT)
        return super().request_json(method, path, payload, timeout=timeout)


@pytest.mark.parametrize("inline", [True, False], ids=["inline", "queued"])
def test_a_late_loading_phase_reaches_on_phase_before_the_next_event(
    inline: bool,
) -> None:
    """The probe's "not loaded" answer comes while the stream already waits:
    the phase turns to "loading" at once, and an inline ``on_phase`` (which
    runs on the worker) gets it before the next event. (test_models.py races
    the probe against the request; here the probe answers after it, always.)"""
    memory = SlowPs()
    memory.enqueue([GATE, *answer("ready")])
    phases: list[str] = []
    pump = QueueDispatcher()
    extra: dict[str, Any] = {} if inline else {"dispatcher": pump}
    with memory_client(memory, verify=False, probe_loading=True) as client:
        handle = client.start_chat("m", USER, on_phase=phases.append, **extra)
        assert handle.wait_for(lambda _: handle.phase == "waiting", WAIT)
        memory.answer_ps.set()
        assert handle.wait_for(lambda _: handle.phase == "loading", WAIT)
        memory.open_gate()
        assert handle.result(WAIT).content == "ready"
    pump.pump()
    assert phases[-3:] == ["loading", "answering", "done"]


def test_handle_phase_is_readable_at_any_moment(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue([Chunk(thinking="hmm"), Stall()])
    handle = client.start_chat("m", USER)
    assert handle.wait_for(lambda r: r.thinking == "hmm", WAIT)
    assert handle.phase == "thinking"
    handle.cancel()
    handle.result(WAIT)
    assert str(handle.phase) == "cancelled"  # (str: mypy narrowed it above)


def test_stream_generate_and_conversation_stream_send(
    server: FakeOllama, client: StreamingClient
) -> None:
    from ollama_stream_sync import Conversation, ToolResult

    server.enqueue(reply("generated"))
    assert "".join(client.stream_generate("m", "hi").text()) == "generated"

    def weather(city: str) -> str:
        """The weather.

        Args:
            city: where.
        """
        return f"rain in {city}"

    server.enqueue(
        reply(tool_calls=[tool_call("weather", {"city": "Paris"})]),
        reply("Take an umbrella."),
    )
    conv = Conversation(client, "m", tools=[weather])
    with conv.stream_send("Weather?") as stream:
        events = list(stream)
    results = [e for e in events if isinstance(e, ToolResult)]
    assert [r.result for r in results] == ["rain in Paris"]
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert calls[0].call["function"]["name"] == "weather"
    assert isinstance(events[-1], Done)
    assert events[-1].result.content == "Take an umbrella."
    assert [m["role"] for m in conv.messages] == [
        "user",
        "assistant",
        "tool",
        "assistant",
    ]


def test_chat_stream_repr_and_handle(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue(reply("x"))
    stream = client.stream_chat("m", USER)
    assert isinstance(stream, ChatStream)
    assert "ChatStream" in repr(stream)
    assert stream.result(WAIT).content == "x"
