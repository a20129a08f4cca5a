"""Every fault kind: the right typed error, partial kept, one terminal callback."""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest

from ollama_stream_sync import (
    CallbackError,
    ConnectionFailed,
    ModelNotFound,
    ProtocolError,
    ServerError,
    StreamError,
    StreamingClient,
)
from ollama_stream_sync.testing import (
    Chunk,
    Cut,
    Done,
    ErrorLine,
    FakeOllama,
    Raw,
    Status,
    http_error,
)

from .conftest import USER, WAIT, MakeClient

pytestmark = pytest.mark.transport


def run_failing(
    client: StreamingClient, **kwargs: Any
) -> tuple[StreamError, list[tuple[str, Any]], list[str]]:
    terminal: list[tuple[str, Any]] = []
    content: list[str] = []
    handle = client.start_chat(
        "m",
        USER,
        on_content=content.append,
        on_done=lambda r: terminal.append(("done", r)),
        on_error=lambda e: terminal.append(("error", e)),
        **kwargs,
    )
    with pytest.raises(StreamError) as info:
        handle.result(WAIT)
    assert terminal == [("error", info.value)]  # exactly one terminal callback
    return info.value, terminal, content


def test_model_not_found_is_404(server: FakeOllama, client: StreamingClient) -> None:
    server.enqueue(http_error(404, "model 'nope' not found"))
    err, _, _ = run_failing(client)
    assert isinstance(err, ModelNotFound)
    assert err.status_code == 404 and err.server_message == "model 'nope' not found"
    assert err.partial.content == ""


@pytest.mark.parametrize("status", [400, 500, 503])
def test_http_errors_carry_status_and_message(
    server: FakeOllama, client: StreamingClient, status: int
) -> None:
    server.enqueue(http_error(status, f"failure {status}"))
    err, _, _ = run_failing(client)
    assert type(err) is ServerError
    assert err.status_code == status and f"failure {status}" in str(err)


def test_html_error_page_from_a_proxy(
    server: FakeOllama, client: StreamingClient
) -> None:
    page = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
    server.enqueue([Status(502, page, content_type="text/html")])
    err, _, _ = run_failing(client)
    assert isinstance(err, ServerError) and err.status_code == 502
    assert "Bad Gateway" in str(err)


def test_in_band_error_line_after_output_keeps_partial(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue([Chunk(content="Half an"), ErrorLine("runner crashed")])
    err, _, content = run_failing(client)
    assert type(err) is ServerError and err.status_code is None
    assert "runner crashed" in str(err)
    assert err.partial.content == "Half an" and content == ["Half an"]


def test_in_band_error_line_before_output(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue([ErrorLine("model failed to load")])
    err, _, _ = run_failing(client)
    assert isinstance(err, ServerError) and "failed to load" in str(err)


def test_cut_connection_mid_stream(server: FakeOllama, client: StreamingClient) -> None:
    server.enqueue([Chunk(thinking="hm"), Chunk(content="Par"), Cut()])
    err, _, _ = run_failing(client)
    assert isinstance(err, ConnectionFailed)
    assert err.__cause__ is not None  # the transport's error is kept as the cause
    assert (err.partial.thinking, err.partial.content) == ("hm", "Par")


def test_stream_without_done_line_is_truncated(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue([Chunk(content="Tru"), Chunk(content="ncated")])
    err, _, _ = run_failing(client)
    assert isinstance(err, ProtocolError) and "done" in str(err)
    assert err.partial.content == "Truncated" and not err.partial.done


def test_non_json_line(server: FakeOllama, client: StreamingClient) -> None:
    server.enqueue([Chunk(content="ok"), Raw(b"<html>not json</html>"), Done()])
    err, _, _ = run_failing(client)
    assert isinstance(err, ProtocolError) and "not JSON" in str(err)
    assert err.partial.content == "ok"


def test_overlong_line_is_bounded(server: FakeOllama, make_client: MakeClient) -> None:
    server.enqueue([Chunk(content="x" * 5000), Done()])
    with make_client(server.url, max_line_bytes=1024) as client:
        err, _, _ = run_failing(client)
    assert isinstance(err, ProtocolError) and "max_line_bytes" in str(err)


def test_connection_refused(make_client: MakeClient) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # nothing listens on the port now
    with make_client(f"http://127.0.0.1:{port}") as client:
        err, _, _ = run_failing(client)
    assert isinstance(err, ConnectionFailed)
    assert err.__cause__ is not None


def test_callback_error_stops_the_stream(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue([Chunk(content="a"), Chunk(content="b"), Chunk(content="c"), Done()])
    seen: list[str] = []

    def on_content(text: str) -> None:
        seen.append(text)
        if text == "b":
            raise ValueError("widget gone")

    terminal: list[tuple[str, Any]] = []
    handle = client.start_chat(
        "m",
        USER,
        on_content=on_content,
        on_done=lambda r: terminal.append(("done", r)),
        on_error=lambda e: terminal.append(("error", e)),
    )
    with pytest.raises(CallbackError) as info:
        handle.result(WAIT)
    assert isinstance(info.value.__cause__, ValueError)
    assert seen == ["a", "b"]  # the stream stopped at once
    assert info.value.partial.content == "ab"
    assert terminal == [("error", info.value)]


def test_on_done_raising_becomes_callback_error(
    server: FakeOllama, client: StreamingClient
) -> None:
    def boom(_: object) -> None:
        raise RuntimeError("boom")

    with pytest.raises(CallbackError) as info:
        client.chat("m", USER, on_done=boom)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert info.value.partial.content.startswith("Hello")


def test_errors_are_usable_from_the_blocking_call(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue(http_error(404, "model 'x' not found"))
    with pytest.raises(ModelNotFound):
        client.chat("x", USER)
    assert threading.active_count() >= 1
