"""Every fault: the right typed error, what arrived kept, one terminal callback.

Each transport maps its own failures (a status, an error body, a cut, a
refused connect, a body that ends early) into the one error tree: those run on
both. What an error says, and how a line that cannot be parsed fails, is the
engine's: once, on httpx. Faults after the done line: ``test_transports.py``.
"""

from __future__ import annotations

import gc
import threading
from typing import Any

import pytest

from ollama_stream_sync import (
    AuthenticationRequired,
    CallbackError,
    ConnectionFailed,
    ContextLengthExceeded,
    ModelNotFound,
    ProtocolError,
    RetryPolicy,
    ServerError,
    StreamError,
    StreamingClient,
)
from ollama_stream_sync.testing import (
    Chunk,
    Cut,
    DoneLine,
    ErrorLine,
    FakeOllama,
    Raw,
    Status,
    http_error,
)

from .support import USER, WAIT
from .support.clients import MakeClient, Recorder, new_client

pytestmark = pytest.mark.transport

FAST = RetryPolicy(initial_delay=0.01, jitter=False)


def run_failing(
    client: StreamingClient, model: str = "m", **kwargs: Any
) -> tuple[StreamError, Recorder]:
    """Start a chat that must fail: its error, and what its callbacks saw."""
    rec = Recorder()
    handle = client.start_chat(model, USER, **{**rec.kwargs(), **kwargs})
    with pytest.raises(StreamError) as info:
        handle.result(WAIT)
    assert rec.terminals == [("error", info.value)]  # exactly one terminal callback
    return info.value, rec


# -- each transport's faults ---------------------------------------------------------


def test_model_not_found_is_404_and_names_the_pull_command(
    server: FakeOllama, make_client: MakeClient
) -> None:
    server.enqueue(http_error(404, "model 'qwen9' not found"))
    with make_client(server.url) as client:
        err, _ = run_failing(client, "qwen9")
    assert isinstance(err, ModelNotFound)
    assert (err.model, err.url, err.status_code) == ("qwen9", server.url, 404)
    assert err.server_message == "model 'qwen9' not found"
    assert err.partial.content == ""
    text = str(err)
    assert "qwen9" in text and server.url in text and "ollama pull qwen9" in text


@pytest.mark.parametrize("status", [400, 500, 503])
def test_http_errors_carry_status_and_message(
    server: FakeOllama, make_client: MakeClient, status: int
) -> None:
    server.enqueue(http_error(status, f"failure {status}"))
    with make_client(server.url) as client:
        err, _ = run_failing(client)
    assert type(err) is ServerError
    assert err.status_code == status and f"failure {status}" in str(err)


def test_html_error_page_from_a_proxy(
    server: FakeOllama, make_client: MakeClient
) -> None:
    page = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
    server.enqueue([Status(502, page, content_type="text/html")])
    with make_client(server.url) as client:
        err, _ = run_failing(client)
    assert isinstance(err, ServerError) and err.status_code == 502
    assert "Bad Gateway" in str(err)
    assert err.server_message == page.decode()


def test_401_with_signin_url_is_authentication_required(
    server: FakeOllama, make_client: MakeClient
) -> None:
    url = "https://ollama.com/connect?name=box&key=abc"
    server.enqueue([Status(401, {"error": "unauthorized", "signin_url": url})])
    with make_client(server.url, retry=FAST) as client:
        with pytest.raises(AuthenticationRequired) as info:
            client.chat("gpt-oss:120b-cloud", USER)
    assert info.value.signin_url == url
    assert info.value.status_code == 401 and url in str(info.value)
    assert len(server.stream_requests()) == 1


def test_cut_connection_mid_stream(server: FakeOllama, make_client: MakeClient) -> None:
    server.enqueue([Chunk(thinking="hm"), Chunk(content="Par"), Cut()])
    with make_client(server.url) as client:
        err, _ = run_failing(client)
    assert isinstance(err, ConnectionFailed)
    assert err.__cause__ is not None  # the transport's error is kept as the cause
    assert (err.partial.thinking, err.partial.content) == ("hm", "Par")


def test_a_body_that_ends_without_a_done_line_is_truncated(
    server: FakeOllama, make_client: MakeClient
) -> None:
    server.enqueue([Chunk(content="Tru"), Chunk(content="ncated")])
    with make_client(server.url) as client:
        err, rec = run_failing(client)
    assert isinstance(err, ProtocolError) and "done" in str(err)
    assert err.partial.content == "Truncated" and not err.partial.done
    assert rec.text() == "Truncated"


def test_no_server_names_the_url_and_what_to_try(
    make_client: MakeClient, refused_url: str
) -> None:
    with make_client(refused_url) as client:
        err, _ = run_failing(client, "qwen3")
    assert isinstance(err, ConnectionFailed)
    assert isinstance(err, ConnectionError)  # what network code already catches
    assert err.__cause__ is not None
    assert err.during_connect
    assert err.url == refused_url and err.model == "qwen3"
    text = str(err)
    assert refused_url in text and "ollama serve" in text and "OLLAMA_HOST" in text


def test_a_deeply_nested_error_body_is_read_as_text(
    server: FakeOllama, make_client: MakeClient
) -> None:
    server.enqueue([Status(500, b"[" * 100_000, content_type="application/json")])
    with make_client(server.url) as client:
        with pytest.raises(ServerError) as info:
            client.chat("m", USER)
    assert info.value.status_code == 500
    assert info.value.server_message.startswith("[[[[")


# -- what errors say (once) ----------------------------------------------------------


def test_in_band_error_line_after_output_keeps_partial(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue([Chunk(content="Half an"), ErrorLine("runner crashed")])
    err, rec = run_failing(client)
    assert type(err) is ServerError and err.status_code is None
    assert "runner crashed" in str(err)
    assert err.partial.content == "Half an" and rec.of("content") == ["Half an"]


def test_in_band_error_line_before_output(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue([ErrorLine("model failed to load")])
    err, _ = run_failing(client)
    assert isinstance(err, ServerError) and "failed to load" in str(err)


def test_overlong_line_is_bounded(server: FakeOllama) -> None:
    server.enqueue([Chunk(content="x" * 5000), DoneLine()])
    with new_client(server.url, max_line_bytes=1024) as client:
        err, _ = run_failing(client)
    assert isinstance(err, ProtocolError) and "max_line_bytes" in str(err)


UNPARSABLE = {
    "nested-100k-lists": b"[" * 100_000,
    "nested-100k-closed": b"[" * 100_000 + b"]" * 100_000,
    "nested-objects": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    "nested-in-message": b'{"message": {"content": ' + b"[" * 100_000 + b"}}",
    "not-json": b"<html>captive portal</html>",
    "invalid-utf8": b'{"message": {"content": "\xff\xfe"}}',
    "huge-int": b'{"eval_count": ' + b"9" * 100_000 + b"}",
    "nan": b"NaN",
    "a-list": b"[1, 2, 3]",
    "a-string": b'"text"',
    "message-not-object": b'{"message": [1]}',
    "content-not-string": b'{"message": {"role": "assistant", "content": 5}}',
    "tool-calls-malformed": b'{"message": {"content": "", "tool_calls": "x"}}',
}


@pytest.mark.parametrize("data", UNPARSABLE.values(), ids=UNPARSABLE.keys())
def test_a_line_that_cannot_be_parsed_is_a_protocol_error_with_partial(
    server: FakeOllama, client: StreamingClient, data: bytes
) -> None:
    server.enqueue(
        [Chunk(content="before"), Raw(data), Chunk(content="after"), DoneLine()]
    )
    err, _ = run_failing(client)
    assert type(err) is ProtocolError
    assert err.partial.content == "before"  # what came before is kept
    assert not err.partial.done


def test_a_deeply_nested_line_leaves_the_worker_its_stack(
    server: FakeOllama, client: StreamingClient
) -> None:
    """Refused before parsing, not by exhausting the recursion limit.

    A garbage collection can run on the worker in the middle of a parse, and
    with it any finalizer of the program (urllib3 closes a pool's sockets in
    one). A probe in gc.callbacks checks that whatever runs there still has
    room to call functions.
    """
    starved: list[int] = []

    def recurse(n: int) -> int:
        return 0 if n == 0 else 1 + recurse(n - 1)

    def probe(phase: str, info: dict[str, Any]) -> None:
        if phase == "start" and threading.current_thread().name.startswith(
            "ollama-stream-"
        ):
            try:
                recurse(100)
            except RecursionError:
                starved.append(1)

    server.enqueue([Chunk(content="before"), Raw(b"[" * 100_000 + b"]" * 100_000)])
    threshold = gc.get_threshold()
    gc.callbacks.append(probe)  # in place: the interpreter holds this list
    gc.set_threshold(20)  # a collection every few allocations, parse included
    try:
        with pytest.raises(ProtocolError, match="too deeply nested") as info:
            client.chat("m", USER)
    finally:
        gc.set_threshold(*threshold)
        gc.callbacks.remove(probe)
    assert info.value.partial.content == "before"
    assert not starved


@pytest.mark.parametrize(
    ("body", "content_type", "text"),
    [
        (b"upstream exploded\n", "text/plain", "upstream exploded"),
        (b"  line one\n\n  line two  ", "text/plain", "line one line two"),
        (b"caf\xc3\xa9 ferm\xc3\xa9", "text/plain; charset=utf-8", "café fermé"),
    ],
    ids=["text", "whitespace", "utf-8"],
)
def test_a_text_error_body_is_the_server_message_as_text(
    server: FakeOllama,
    client: StreamingClient,
    body: bytes,
    content_type: str,
    text: str,
) -> None:
    """(An HTML page: test_html_error_page_from_a_proxy, on both transports.)"""
    server.enqueue([Status(502, body, content_type=content_type)])
    with pytest.raises(ServerError) as info:
        client.chat("m", USER)
    assert info.value.server_message == text
    assert text in str(info.value)
    assert "b'" not in str(info.value)


def test_a_404_for_a_wrong_route_is_not_a_missing_model(server: FakeOllama) -> None:
    # FakeOllama serves /api/chat only: under a prefix its router answers 404.
    with new_client(server.url + "/wrong-prefix") as client:
        with pytest.raises(ServerError) as info:
            client.chat("m", USER)
    assert info.value.status_code == 404
    assert not isinstance(info.value, ModelNotFound)
    assert "pull" not in str(info.value)


def test_a_prompt_longer_than_the_context_raises_context_length_exceeded(
    server: FakeOllama,
) -> None:
    message = (
        "the prompt is longer than the context length currently available to the "
        "model; shorten the prompt, adjust the context length in settings, or use "
        "a model with a longer context length"
    )
    server.enqueue(
        http_error(400, message),
        http_error(
            500,
            "input length (5000 tokens) exceeds the model's maximum context length "
            "(4096 tokens)",
        ),
    )
    with new_client(server.url, retry=FAST) as client:
        with pytest.raises(ContextLengthExceeded) as first:
            client.chat("m", USER)
        with pytest.raises(ContextLengthExceeded) as second:
            client.chat("m", USER)
    assert isinstance(first.value, ServerError) and first.value.status_code == 400
    assert (second.value.prompt_tokens, second.value.context_length) == (5000, 4096)
    assert len(server.stream_requests()) == 2  # never retried
    assert "num_ctx" in str(first.value)


# -- a callback that fails (once) ----------------------------------------------------


def test_callback_error_stops_the_stream(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue(
        [Chunk(content="a"), Chunk(content="b"), Chunk(content="c"), DoneLine()]
    )
    seen: list[str] = []

    def on_content(text: str) -> None:
        seen.append(text)
        if text == "b":
            raise ValueError("widget gone")

    err, _ = run_failing(client, on_content=on_content)
    assert isinstance(err, CallbackError)
    assert isinstance(err.__cause__, ValueError)
    assert seen == ["a", "b"]  # the stream stopped at once
    assert err.partial.content == "ab"


def test_on_done_raising_becomes_callback_error(client: StreamingClient) -> None:
    def boom(_: object) -> None:
        raise RuntimeError("boom")

    with pytest.raises(CallbackError) as info:
        client.chat("m", USER, on_done=boom)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert info.value.partial.content.startswith("Hello")
