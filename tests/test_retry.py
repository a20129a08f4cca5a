"""Retry by phase: what is retried, what is not, and nothing lost or doubled."""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

import pytest
import tenacity

from ollama_stream_sync import (
    CallbackError,
    ConnectionFailed,
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
    Done,
    ErrorLine,
    FakeOllama,
    Raw,
    Status,
    http_error,
    reply,
)

from .conftest import USER, WAIT, MakeClient

pytestmark = pytest.mark.transport

FAST = RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.02, jitter=False)


class Recorder:
    """Every callback of one stream, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.retried = threading.Event()

    def kwargs(self) -> dict[str, Any]:
        return {
            "on_content": lambda t: self.events.append(("content", t)),
            "on_retry": self._retry,
            "on_reset": lambda a, e: self.events.append(("reset", (a, e))),
            "on_done": lambda r: self.events.append(("done", r)),
            "on_error": lambda e: self.events.append(("error", e)),
        }

    def _retry(self, attempt: int, error: StreamError, delay: float) -> None:
        self.events.append(("retry", (attempt, error, delay)))
        self.retried.set()

    def kinds(self) -> list[str]:
        return [k for k, _ in self.events]

    def terminal(self) -> list[str]:
        return [k for k in self.kinds() if k in ("done", "error")]


def chat(client: StreamingClient, rec: Recorder, **kwargs: Any) -> Any:
    return client.chat("m", USER, **rec.kwargs(), **kwargs)


def test_503_burst_then_success(server: FakeOllama, make_client: MakeClient) -> None:
    server.enqueue(http_error(503, "server busy"), http_error(503, "busy"), reply("ok"))
    rec = Recorder()
    with make_client(server.url, retry=FAST) as client:
        result = chat(client, rec)
    assert result.content == "ok"
    retries = [p for k, p in rec.events if k == "retry"]
    assert [a for a, _, _ in retries] == [1, 2]
    assert all(
        isinstance(e, ServerError) and e.status_code == 503 for _, e, _ in retries
    )
    assert rec.terminal() == ["done"]
    assert len(server.stream_requests()) == 3


def test_503_forever_gives_up_with_the_last_real_error(
    server: FakeOllama, make_client: MakeClient
) -> None:
    server.enqueue(*[http_error(503, "server busy")] * 3)
    rec = Recorder()
    with (
        make_client(server.url, retry=FAST) as client,
        pytest.raises(ServerError) as info,
    ):
        chat(client, rec)
    assert info.value.status_code == 503
    assert not isinstance(info.value, tenacity.RetryError)
    assert rec.terminal() == ["error"] and rec.kinds().count("retry") == 2
    assert len(server.stream_requests()) == 3


def test_connection_refused_retries_then_fails(make_client: MakeClient) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    rec = Recorder()
    url = f"http://127.0.0.1:{port}"
    with make_client(url, retry=FAST) as client:
        with pytest.raises(ConnectionFailed) as info:
            chat(client, rec)
    assert info.value.during_connect
    assert rec.kinds() == ["retry", "retry", "error"]


@pytest.mark.parametrize("status", [400, 401, 403])
def test_client_errors_are_never_retried(
    server: FakeOllama, status: int, make_client: MakeClient
) -> None:
    server.enqueue(http_error(status, "no"), reply("never"))
    with make_client(server.url, retry=FAST) as client, pytest.raises(ServerError):
        client.chat("m", USER)
    assert len(server.stream_requests()) == 1


def test_model_not_found_is_never_retried(
    server: FakeOllama, make_client: MakeClient
) -> None:
    server.enqueue(http_error(404, "model 'x' not found"), reply("never"))
    with (
        make_client(server.url, retry=FAST) as client,
        pytest.raises(ModelNotFound),
    ):
        client.chat("m", USER)
    assert len(server.stream_requests()) == 1


def test_cut_before_output_is_retried(
    server: FakeOllama, make_client: MakeClient
) -> None:
    server.enqueue([Chunk(content=""), Cut()], reply("whole answer"))
    rec = Recorder()
    with make_client(server.url, retry=FAST) as client:
        assert chat(client, rec).content == "whole answer"
    assert rec.kinds().count("retry") == 1 and "reset" not in rec.kinds()


def test_cut_after_output_is_not_retried_by_default(
    server: FakeOllama, make_client: MakeClient
) -> None:
    server.enqueue([Chunk(content="Half"), Cut()], reply("never"))
    rec = Recorder()
    with (
        make_client(server.url, retry=FAST) as client,
        pytest.raises(ConnectionFailed) as info,
    ):
        chat(client, rec)
    assert info.value.partial.content == "Half"
    assert rec.kinds() == ["content", "error"]
    assert len(server.stream_requests()) == 1


def test_cut_after_output_with_retry_after_output_resets(
    server: FakeOllama, make_client: MakeClient
) -> None:
    server.enqueue(
        [Chunk(content="Old "), Chunk(content="text"), Cut()],
        reply("New text only."),
    )
    rec = Recorder()
    policy = RetryPolicy(initial_delay=0.01, jitter=False, retry_after_output=True)
    with make_client(server.url) as client:
        result = chat(client, rec, retry=policy)  # a per-call policy
    assert result.content == "New text only."  # nothing doubled
    kinds = rec.kinds()
    assert kinds[:2] == ["content", "content"]
    assert kinds[2:4] == ["retry", "reset"]
    reset_attempt, reset_error = rec.events[3][1]
    assert reset_attempt == 1 and isinstance(reset_error, ConnectionFailed)
    after = [p for k, p in rec.events[4:] if k == "content"]
    assert "".join(after) == "New text only."
    assert kinds[-1] == "done"


def test_in_band_error_before_output_is_retried(
    server: FakeOllama, make_client: MakeClient
) -> None:
    server.enqueue([ErrorLine("model failed to load")], reply("loaded"))
    with make_client(server.url, retry=FAST) as client:
        assert client.chat("m", USER).content == "loaded"


def test_in_band_error_after_output_is_not_retried(
    server: FakeOllama, make_client: MakeClient
) -> None:
    server.enqueue([Chunk(content="So far"), ErrorLine("runner died")], reply("x"))
    with (
        make_client(server.url, retry=FAST) as client,
        pytest.raises(ServerError) as info,
    ):
        client.chat("m", USER)
    assert info.value.partial.content == "So far"
    assert len(server.stream_requests()) == 1


@pytest.mark.parametrize(
    "script",
    [
        [Chunk(content="x"), Raw(b"not json"), Done()],
        [Chunk(content="x")],  # no done line
        [Raw(b'{"model": "m", "message": {"content": "' + b"a" * (9 << 20) + b'"}}')],
    ],
    ids=["non-json", "no-done", "9-MiB-line"],
)
def test_protocol_errors_are_not_retried(
    server: FakeOllama, script: list[Any], make_client: MakeClient
) -> None:
    server.enqueue(script, reply("never"))
    with (
        make_client(server.url, retry=FAST) as client,
        pytest.raises(ProtocolError),
    ):
        client.chat("m", USER)
    assert len(server.stream_requests()) == 1


def test_html_error_page_from_a_proxy_is_retried(
    server: FakeOllama, make_client: MakeClient
) -> None:
    page = b"<html><body>502 Bad Gateway</body></html>"
    server.enqueue([Status(502, page, content_type="text/html")], reply("through"))
    with make_client(server.url, retry=FAST) as client:
        assert client.chat("m", USER).content == "through"


def test_retry_after_is_honoured(server: FakeOllama, make_client: MakeClient) -> None:
    # The backoff would be 5 s; Retry-After: 0 makes it 0.
    server.enqueue(http_error(429, "slow down", Retry_After="0"), reply("ok"))
    rec = Recorder()
    policy = RetryPolicy(initial_delay=5.0, jitter=False)
    with make_client(server.url, retry=policy) as client:
        assert chat(client, rec).content == "ok"
    (_, _, delay) = next(p for k, p in rec.events if k == "retry")
    assert delay == 0.0


def test_retry_after_is_capped(server: FakeOllama, make_client: MakeClient) -> None:
    server.enqueue(http_error(503, "busy", Retry_After="3600"), reply("ok"))
    rec = Recorder()
    policy = RetryPolicy(max_retry_after=0.05)
    with make_client(server.url, retry=policy) as client:
        assert chat(client, rec).content == "ok"
    (_, _, delay) = next(p for k, p in rec.events if k == "retry")
    assert delay == 0.05


def test_callback_error_is_never_retried(
    server: FakeOllama, make_client: MakeClient
) -> None:
    server.enqueue(reply("boom"), reply("never"))

    def on_content(_: str) -> None:
        raise ValueError("bug in the app")

    with (
        make_client(server.url, retry=FAST) as client,
        pytest.raises(CallbackError),
    ):
        client.chat("m", USER, on_content=on_content)
    assert len(server.stream_requests()) == 1


def test_cancel_during_backoff_ends_it_at_once(
    server: FakeOllama, make_client: MakeClient
) -> None:
    server.enqueue(http_error(503, "busy"), reply("never"))
    rec = Recorder()
    slow = RetryPolicy(initial_delay=60.0, jitter=False)
    with make_client(server.url, retry=slow) as client:
        handle = client.start_chat("m", USER, **rec.kwargs())
        assert rec.retried.wait(WAIT)
        handle.cancel()
        result = handle.result(WAIT)  # far less than the 60 s backoff
    assert result.cancelled and rec.terminal() == ["done"]
    assert len(server.stream_requests()) == 1


def test_a_tenacity_retrying_of_your_own(
    server: FakeOllama, make_client: MakeClient
) -> None:
    server.enqueue(*[http_error(500, "oops")] * 2)
    mine = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(2), wait=tenacity.wait_none()
    )
    with (
        make_client(server.url, retry=mine) as client,
        pytest.raises(ServerError) as info,
    ):
        client.chat("m", USER)
    assert info.value.status_code == 500  # the real error, never RetryError
    assert len(server.stream_requests()) == 2


def test_retry_policy_validates(make_client: MakeClient) -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(TypeError, match="RetryPolicy"):
        make_client("http://127.0.0.1:1", retry=3)  # type: ignore[arg-type]
    with make_client("http://127.0.0.1:1") as client, pytest.raises(TypeError):
        client.start_chat("m", USER, retry="twice")  # type: ignore[arg-type]


def test_retries_are_logged_without_secrets(
    server: FakeOllama,
    caplog: pytest.LogCaptureFixture,
    make_client: MakeClient,
) -> None:
    server.enqueue(http_error(503, "busy"), reply("ok"))
    caplog.set_level(logging.INFO, logger="ollama_stream_sync")
    with make_client(
        server.url, retry=FAST, headers={"Authorization": "Bearer s3cret-key"}
    ) as client:
        client.chat("m", USER)
    assert any("retrying" in r.getMessage() for r in caplog.records)
    assert "s3cret-key" not in caplog.text
