"""Structured output (``format=``): partial values as the answer streams, the
validated answer at the end. The engine's: once, on httpx."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pydantic
import pytest

from ollama_stream_sync import (
    Conversation,
    OutputValidationError,
    Partial,
    StreamingClient,
)
from ollama_stream_sync.testing import (
    Chunk,
    DoneLine,
    FakeOllama,
    reply,
)

from .support import USER


class Weather(pydantic.BaseModel):
    city: str
    temp_c: float
    notes: list[str]


ANSWER = '{"city": "Paris", "temp_c": 18.5, "notes": ["light rain", "wind"]}'


def json_chunks(text: str, size: int = 3) -> list[Any]:
    """The answer streamed a few characters at a time, as a model writes JSON."""
    return [Chunk(content=text[i : i + size]) for i in range(0, len(text), size)]


def grows(before: Any, after: Any) -> bool:
    """``after`` extends ``before``: nothing it had is lost or changed, only added."""
    if isinstance(before, dict):
        return isinstance(after, dict) and all(
            k in after and grows(v, after[k]) for k, v in before.items()
        )
    if isinstance(before, list):
        return (
            isinstance(after, list)
            and len(after) >= len(before)
            and all(grows(b, a) for b, a in zip(before, after, strict=False))
        )
    if isinstance(before, str):
        return isinstance(after, str) and after.startswith(before)
    if isinstance(before, (int, float)) and isinstance(after, (int, float)):
        return str(after).startswith(str(before).rstrip("0").rstrip("."))
    return bool(before == after)


def test_a_model_class_streams_partial_objects_and_validates_at_the_end(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue([*json_chunks(ANSWER), DoneLine()])
    partials: list[Any] = []
    result = client.chat("m", USER, format=Weather, on_partial=partials.append)
    assert isinstance(result.parsed, Weather)
    assert result.parsed == Weather(
        city="Paris", temp_c=18.5, notes=["light rain", "wind"]
    )
    assert len(partials) > 5  # it grew in many steps
    assert all(grows(a, b) for a, b in itertools.pairwise(partials))
    assert partials[-1] == json.loads(ANSWER)
    cities = [p.get("city") for p in partials if p.get("city") not in (None, "Paris")]
    assert cities and all("Paris".startswith(c) for c in cities)  # a string, so far
    (request,) = server.stream_requests()
    assert request.body["format"] == Weather.model_json_schema()


def test_partial_events_in_the_iterator(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue([*json_chunks(ANSWER), DoneLine()])
    with client.stream_chat("m", USER, format=Weather) as stream:
        values = [e.value for e in stream if isinstance(e, Partial)]
        result = stream.result()
    assert values[-1] == json.loads(ANSWER)
    assert isinstance(result.parsed, Weather)


def test_coalescing_applies_to_partials(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue([*json_chunks(ANSWER), DoneLine()])
    partials: list[Any] = []
    client.chat(
        "m", USER, format=Weather, on_partial=partials.append, coalesce_interval=10.0
    )
    assert partials == [json.loads(ANSWER)]


def test_thinking_stays_apart_from_the_parsed_answer(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue(
        [Chunk(thinking="{not json at all"), *json_chunks(ANSWER), DoneLine()]
    )
    result = client.chat("m", USER, format=Weather, think=True)
    assert result.thinking == "{not json at all"
    assert isinstance(result.parsed, Weather)


def test_a_dict_schema_and_json_give_the_parsed_value(
    server: FakeOllama, client: StreamingClient
) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    server.enqueue(reply('{"n": 3}'), reply("[1, 2]"))
    assert client.chat("m", USER, format=schema).parsed == {"n": 3}
    assert client.chat("m", USER, format="json").parsed == [1, 2]
    assert [r.body["format"] for r in server.stream_requests()] == [schema, "json"]


def test_an_invalid_answer_raises_with_the_raw_content_kept(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue(reply('{"city": "Paris"}'), reply("Sorry, no JSON today."))
    with pytest.raises(OutputValidationError) as invalid:
        client.chat("m", USER, format=Weather)
    with pytest.raises(OutputValidationError) as not_json:
        client.chat("m", USER, format="json")
    assert invalid.value.partial.content == '{"city": "Paris"}'
    assert isinstance(invalid.value.__cause__, pydantic.ValidationError)
    assert "Weather" in str(invalid.value)
    assert not_json.value.partial.content == "Sorry, no JSON today."
    assert isinstance(not_json.value.__cause__, ValueError)


def test_a_bad_format_is_a_type_error_at_the_call(client: StreamingClient) -> None:
    with pytest.raises(TypeError, match="format"):
        client.start_chat("m", USER, format=42)  # type: ignore[arg-type]


def test_a_conversation_with_a_format_returns_parsed_answers(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue([*json_chunks(ANSWER), DoneLine()])
    conv = Conversation(client, "m", format=Weather)
    answer = conv.send("Weather in Paris?")
    assert isinstance(answer.parsed, Weather)
    assert conv.messages[-1]["content"] == ANSWER
    assert server.stream_requests()[0].body["format"] == Weather.model_json_schema()
    assert json.loads(conv.to_json())["format"] == Weather.model_json_schema()
