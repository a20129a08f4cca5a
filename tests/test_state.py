"""The accumulator and NDJSON parsing from recorded fixtures: no threads, no network."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from ollama_stream_sync import Content, ProtocolError, ServerError, Thinking, ToolCall
from ollama_stream_sync._decode import Lines as LineParser
from ollama_stream_sync._errors import error_from_body
from ollama_stream_sync._state import ChatState as Accumulator

THINKING, CONTENT, TOOL_CALL = Thinking, Content, ToolCall


def parse_line(line: bytes) -> dict[str, object]:
    """One line through the parser; its error raised as the worker would."""
    parser = LineParser()
    chunks = parser.feed(line + b"\n")
    if parser.error is not None:
        raise parser.error
    (chunk,) = chunks
    return chunk


def feed_one(acc: Accumulator, chunk: dict[str, object], now: float) -> list[Any]:
    events, error = acc.feed([chunk], now)
    if error is not None:
        raise error
    return events


FIXTURES = Path(__file__).parent / "fixtures"


def feed_file(name: str) -> tuple[Accumulator, list[object]]:
    acc = Accumulator()
    acc.start(0.0)
    events: list[object] = []
    lines = (FIXTURES / name).read_bytes().splitlines()
    for i, line in enumerate(lines):
        events += feed_one(acc, parse_line(line), 1.0 + i)
    return acc, events


def test_chat_fixture_accumulates_every_field() -> None:
    acc, _ = feed_file("chat_thinking_tools.ndjson")
    result = acc.snapshot()
    assert result.thinking == "The user wants weather. Call the tool."
    assert result.content == "Let me check. Done"  # the done chunk's text counts
    assert [c["id"] for c in result.tool_calls] == ["call_ab12cd34", "call_ef56gh78"]
    assert [c["function"]["index"] for c in result.tool_calls] == [0, 1]
    assert result.tool_calls[1]["function"]["arguments"] == {"city": "Tokyo"}
    assert result.done and result.done_reason == "stop"
    assert (result.prompt_eval_count, result.eval_count) == (20, 7)
    assert result.total_duration == 5_000_000
    assert result.chunk_count == 6
    assert result.time_to_first_token == 1.0
    assert result.tokens_per_second == pytest.approx(6 / 5)


def test_thinking_is_delivered_before_content_in_one_chunk() -> None:
    _, events = feed_file("chat_thinking_tools.ndjson")
    kinds = [type(event) for event in events]
    # chunk 3 carries thinking and content: thinking first
    assert kinds[:4] == [THINKING, THINKING, THINKING, CONTENT]
    assert kinds.count(TOOL_CALL) == 2
    assert kinds[-2:] == [CONTENT, TOOL_CALL]


def test_generate_fixture_maps_response_to_content() -> None:
    acc, _ = feed_file("generate.ndjson")
    result = acc.snapshot()
    assert (result.thinking, result.content) == ("Hmm.", "The sky is blue.")
    assert result.context == (1, 2, 3)
    assert result.done_reason == "length"


def test_to_message_has_only_present_fields() -> None:
    acc, _ = feed_file("chat_thinking_tools.ndjson")
    message = acc.snapshot().to_message()
    assert message["role"] == "assistant"
    assert message["thinking"].startswith("The user")
    assert message["tool_calls"][0]["id"] == "call_ab12cd34"
    plain = Accumulator()
    feed_one(
        plain, {"message": {"role": "assistant", "content": "hi"}, "done": True}, 0
    )
    assert plain.snapshot().to_message() == {"role": "assistant", "content": "hi"}


def test_snapshot_is_a_copy_callers_cannot_corrupt() -> None:
    acc, events = feed_file("chat_thinking_tools.ndjson")
    delivered = next(e.call for e in events if isinstance(e, ToolCall))
    delivered["function"]["name"] = "mutated"
    snap = acc.snapshot()
    snap.to_message()["tool_calls"][0]["function"]["name"] = "mutated"
    assert acc.snapshot().tool_calls[0]["function"]["name"] == "get_weather"


def test_reset_forgets_output_but_keeps_start_time() -> None:
    acc, _ = feed_file("chat_thinking_tools.ndjson")
    acc.reset()
    result = acc.snapshot()
    assert (result.content, result.thinking, result.tool_calls) == ("", "", ())
    assert not result.done and not acc.has_output


@pytest.mark.parametrize(
    "chunk",
    [
        {"message": "not an object"},
        {"message": {"content": 5}},
        {"message": {"thinking": ["x"]}},
        {"message": {"tool_calls": {"function": {}}}},
        {"message": {"tool_calls": [{"function": "name"}]}},
        {"response": 12},
    ],
)
def test_malformed_fields_raise_protocol_error(chunk: dict[str, object]) -> None:
    acc = Accumulator()
    events, error = acc.feed([{"message": {"content": "kept"}}, chunk], 0.0)
    assert isinstance(error, ProtocolError)
    assert events == [Content("kept")]  # what came before the bad chunk is kept
    assert acc.snapshot().content == "kept"


def test_many_chunks_accumulate_exactly() -> None:
    acc = Accumulator()
    for i in range(50_000):
        feed_one(acc, {"message": {"content": f"{i},"}}, float(i))
        if i % 5_000 == 0:  # interleaved snapshots must not change the result
            acc.snapshot()
    assert acc.snapshot().content == "".join(f"{i}," for i in range(50_000))


def test_snapshots_from_other_threads_are_consistent() -> None:
    acc = Accumulator()
    stop = threading.Event()
    seen: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            seen.append(acc.snapshot().content)

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(20_000):
        feed_one(acc, {"message": {"content": "ab"}}, float(i))
    stop.set()
    thread.join(5)
    assert not thread.is_alive()
    # every snapshot is a whole number of deltas: never a torn write
    assert all(s == "ab" * (len(s) // 2) for s in seen)
    assert acc.snapshot().content == "ab" * 20_000


# -- NDJSON framing ---------------------------------------------------------------


def test_lines_split_across_reads_are_reassembled() -> None:
    data = b'{"a": 1}\n{"b": "x\\ny"}\n\n{"c": 3}\n'
    for size in (1, 2, 3, 7, len(data)):
        parser = LineParser()
        chunks: list[dict[str, object]] = []
        for i in range(0, len(data), size):
            chunks += parser.feed(data[i : i + size])
        assert chunks == [{"a": 1}, {"b": "x\ny"}, {"c": 3}]
        assert parser.finish() == []
        assert parser.error is None


def test_multibyte_text_split_across_reads() -> None:
    data = json.dumps({"t": "héllo wörld ✓"}, ensure_ascii=False).encode() + b"\n"
    for size in range(1, 6):
        parser = LineParser()
        chunks: list[dict[str, object]] = []
        for i in range(0, len(data), size):
            chunks += parser.feed(data[i : i + size])
        assert chunks == [{"t": "héllo wörld ✓"}]


def test_final_line_without_newline_is_parsed_by_finish() -> None:
    parser = LineParser()
    assert parser.feed(b'{"a": 1}\n{"b"') == [{"a": 1}]
    assert parser.feed(b": 2}") == []
    assert parser.finish() == [{"b": 2}]


@pytest.mark.parametrize(
    "pieces", [[b"x" * 101], [b"x" * 60, b"x" * 60], [b"x" * 200 + b"\n"]]
)
def test_overlong_line_is_a_protocol_error(pieces: list[bytes]) -> None:
    parser = LineParser(max_line_bytes=100)
    for piece in pieces:
        parser.feed(piece)
    assert isinstance(parser.error, ProtocolError)
    assert "max_line_bytes=100" in str(parser.error)


def test_parse_errors_are_typed() -> None:
    with pytest.raises(ProtocolError, match="not JSON"):
        parse_line(b"<html>oops</html>")
    with pytest.raises(ProtocolError, match="not a JSON object"):
        parse_line(b"[1, 2]")
    with pytest.raises(ServerError) as info:
        parse_line(b'{"error": "an error was encountered while running the model"}')
    assert info.value.status_code is None
    assert "running the model" in str(info.value)


def test_deeply_nested_line_is_a_protocol_error_not_a_recursion_error() -> None:
    with pytest.raises(ProtocolError, match=r"nested|not JSON") as info:
        parse_line(b"[" * 100_000)
    assert not isinstance(info.value, RecursionError)


def test_lines_before_a_bad_line_are_kept() -> None:
    parser = LineParser()
    chunks = parser.feed(b'{"a": 1}\n{"error": "boom"}\n{"b": 2}\n')
    assert chunks == [{"a": 1}]
    assert isinstance(parser.error, ServerError)


def test_error_bodies_json_html_and_empty() -> None:
    err = error_from_body(404, b'{"error": "model \'x\' not found"}')
    assert type(err).__name__ == "ModelNotFound"
    assert err.server_message == "model 'x' not found"
    html = error_from_body(502, b"<html><body>Bad Gateway</body></html>")
    assert "Bad Gateway" in str(html)
    assert "'" not in html.server_message  # text, no repr
    empty = error_from_body(403, b"", "Forbidden")
    assert "Forbidden" in str(empty)
    route = error_from_body(404, b"404 page not found")
    assert type(route).__name__ == "ServerError"  # a wrong path, not a missing model
