"""What came back, and what went out: the host that served, its response
headers (on errors too), per-call headers, a conversation's session header,
and a warning when another model answered; over both transports."""

from __future__ import annotations

import json
import warnings

import pytest

from ollama_stream_sync import (
    Conversation,
    ServedModelWarning,
    ServerError,
    StreamTimeout,
)
from ollama_stream_sync.testing import Body, Chunk, Done, FakeOllama, http_error

from .support import USER
from .support.clients import MakeClient

LINE = {
    "model": "m",
    "created_at": "2026-01-01T00:00:00Z",
    "message": {"role": "assistant", "content": "hi"},
    "done": True,
    "done_reason": "stop",
}


def test_the_result_names_its_host_and_its_headers(
    server: FakeOllama, make_client: MakeClient
) -> None:
    data = json.dumps(LINE).encode() + b"\n"
    ndjson = {"Content-Type": "application/x-ndjson", "X-Served-By": "box-a"}
    server.enqueue([Body(data, headers=ndjson)])
    with make_client(server.url) as client:
        result = client.chat("m", USER)
    assert (result.content, result.host) == ("hi", server.url)
    assert result.response_headers["x-served-by"] == "box-a"
    assert result.response_headers["X-SERVED-BY"] == "box-a"
    with pytest.raises(TypeError):
        result.response_headers["x-served-by"] = "changed"  # type: ignore[index]


def test_an_error_keeps_the_host_and_the_error_answers_headers(
    server: FakeOllama, make_client: MakeClient
) -> None:
    server.enqueue(http_error(500, "boom", X_Request_Id="req-7"))
    with make_client(server.url) as client, pytest.raises(ServerError) as caught:
        client.chat("m", USER)
    error = caught.value
    assert error.url == error.partial.host == server.url
    assert error.partial.response_headers["x-request-id"] == "req-7"


def test_a_gateways_504_is_a_timeout_that_says_so(
    server: FakeOllama, make_client: MakeClient
) -> None:
    server.enqueue(http_error(504, "upstream timed out"))
    with make_client(server.url) as client, pytest.raises(StreamTimeout) as caught:
        client.chat("m", USER)
    error = caught.value
    assert (error.which, error.status_code) == ("first_token", 504)
    assert "gateway timed out" in str(error) and "proxy_read_timeout" in str(error)
    assert isinstance(error, TimeoutError)


def test_per_call_headers_go_over_the_clients(
    server: FakeOllama, make_client: MakeClient
) -> None:
    with make_client(server.url, headers={"X-Tenant": "a", "X-Keep": "1"}) as client:
        client.chat("m", USER, headers={"X-Tenant": "b"})
        client.chat("m", USER)
    first, second = (dict(r.headers) for r in server.stream_requests())
    lower = [{k.lower(): v for k, v in h.items()} for h in (first, second)]
    assert (lower[0]["x-tenant"], lower[0]["x-keep"]) == ("b", "1")
    assert lower[1]["x-tenant"] == "a"


def test_a_conversation_sends_its_id_in_its_session_header(
    server: FakeOllama, make_client: MakeClient
) -> None:
    with make_client(server.url) as client:
        conv = Conversation(client, "m", session_header="X-Session-ID")
        other = Conversation(client, "m", session_header="X-Session-ID")
        conv.send("one")
        other.send("one")
        conv.send("two", headers={"X-Session-ID": "mine"})  # the caller's wins
        restored = Conversation.from_json(client, conv.to_json())
        restored.send("three")
    sent = [
        {k.lower(): v for k, v in r.headers.items()}.get("x-session-id")
        for r in server.stream_requests()
    ]
    assert sent == [conv.id, other.id, "mine", conv.id]
    assert conv.id != other.id and restored.id == conv.id


def test_a_session_header_must_be_a_header_name(
    server: FakeOllama, make_client: MakeClient
) -> None:
    with make_client(server.url) as client:
        for bad in ("X Session", "", "X-Session:"):
            with pytest.raises(ValueError, match="session_header"):
                Conversation(client, "m", session_header=bad)


def test_another_model_answering_is_a_warning_at_the_callers_line(
    server: FakeOllama, make_client: MakeClient
) -> None:
    swapped = {"model": "llama3:8b"}
    server.enqueue([Chunk(content="hi", extra=swapped), Done(extra=swapped)])
    with make_client(server.url) as client:
        with pytest.warns(ServedModelWarning, match="llama3:8b") as caught:
            result = client.chat("qwen3", USER)
    assert result.content == "hi"
    (warning,) = caught
    assert warning.filename == __file__
    assert "qwen3" in str(warning.message) and server.url in str(warning.message)


def test_a_conversation_warns_too(server: FakeOllama, make_client: MakeClient) -> None:
    swapped = {"model": "other"}
    server.enqueue([Chunk(content="hi", extra=swapped), Done(extra=swapped)])
    with make_client(server.url) as client:
        conv = Conversation(client, "qwen3")
        with pytest.warns(ServedModelWarning) as caught:
            conv.send("hello")
    assert caught[0].filename == __file__


@pytest.mark.parametrize(
    ("asked", "served"),
    [
        ("qwen3", "qwen3:latest"),
        ("gpt-oss:120b:cloud", "gpt-oss:120b"),
        ("gpt-oss:120b-cloud", "gpt-oss:120b"),
        ("Qwen3:8B", "qwen3:8b"),
    ],
)
def test_the_same_model_by_another_name_is_no_warning(
    asked: str, served: str, server: FakeOllama, make_client: MakeClient
) -> None:
    named = {"model": served}
    server.enqueue([Chunk(content="hi", extra=named), Done(extra=named)])
    with make_client(server.url) as client, warnings.catch_warnings():
        warnings.simplefilter("error")
        assert client.chat(asked, USER).model == served
