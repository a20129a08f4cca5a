"""The requests transport at the HTTP level, with ``responses`` (no sockets at all)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import responses

from ollama_stream_sync import (
    ModelNotFound,
    ProtocolError,
    RetryPolicy,
    ServerError,
    StreamingClient,
)
from ollama_stream_sync.testing import FakeOllama

from .support import USER

pytestmark = pytest.mark.transport

HOST = "http://127.0.0.1:11434"
CHAT = HOST + "/api/chat"


def ndjson(*chunks: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(c).encode() + b"\n" for c in chunks)


STREAM = ndjson(
    {"model": "m", "message": {"role": "assistant", "content": "", "thinking": "Hm."}},
    {"model": "m", "message": {"role": "assistant", "content": "Hello"}},
    {"model": "m", "message": {"role": "assistant", "content": " world"}},
    {
        "model": "m",
        "message": {"role": "assistant", "content": ""},
        "done": True,
        "done_reason": "stop",
        "eval_count": 3,
    },
)


class Trickle(io.RawIOBase):
    """A body that arrives a few bytes per network read."""

    def __init__(self, data: bytes, size: int) -> None:
        self.data, self.size, self.pos = data, size, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        piece = self.data[self.pos : self.pos + self.size]
        buffer[: len(piece)] = piece
        self.pos += len(piece)
        return len(piece)


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


def client_with(session: requests.Session, **kwargs: Any) -> StreamingClient:
    return StreamingClient(HOST, session=session, **kwargs)


def test_request_body_headers_and_session_auth(mocked: responses.RequestsMock) -> None:
    mocked.post(CHAT, body=STREAM, content_type="application/x-ndjson")
    session = requests.Session()
    session.auth = ("alice", "s3cret")
    session.headers["X-Corp"] = "1"
    with client_with(session) as client:
        result = client.chat("m", USER, think=True, options={"temperature": 0})
    assert (result.thinking, result.content) == ("Hm.", "Hello world")
    request = mocked.calls[0].request
    assert request.headers["Authorization"].startswith("Basic ")  # session auth
    assert request.headers["X-Corp"] == "1"
    assert request.headers["Accept"] == "application/x-ndjson"
    body = json.loads(request.body or b"")
    assert body["stream"] is True and body["think"] is True
    assert body["messages"] == USER and body["options"] == {"temperature": 0}


def test_custom_auth_base_is_applied(mocked: responses.RequestsMock) -> None:
    class Token(requests.auth.AuthBase):
        def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
            r.headers["Authorization"] = "Negotiate abc"
            return r

    mocked.post(CHAT, body=STREAM)
    session = requests.Session()
    session.auth = Token()
    with client_with(session) as client:
        client.chat("m", USER)
    assert mocked.calls[0].request.headers["Authorization"] == "Negotiate abc"


@pytest.mark.parametrize("size", [1, 3, 7, 50])
def test_lines_split_across_network_reads(
    mocked: responses.RequestsMock, size: int
) -> None:
    mocked.post(CHAT, body=io.BufferedReader(Trickle(STREAM, size), buffer_size=size))
    deltas: list[str] = []
    with client_with(requests.Session()) as client:
        result = client.chat("m", USER, on_content=deltas.append)
    assert deltas == ["Hello", " world"]
    assert result.done and result.eval_count == 3


@pytest.mark.parametrize(
    ("status", "body", "error", "text"),
    [
        (404, b'{"error": "model \'m\' not found"}', ModelNotFound, "not found"),
        (400, b'{"error": "model is required"}', ServerError, "required"),
        (500, b"<html><h1>Internal error</h1></html>", ServerError, "Internal error"),
        (503, b"", ServerError, "HTTP 503"),
    ],
)
def test_status_to_error_mapping(
    mocked: responses.RequestsMock,
    status: int,
    body: bytes,
    error: type[ServerError],
    text: str,
) -> None:
    mocked.post(CHAT, body=body, status=status)
    with client_with(requests.Session()) as client:
        with pytest.raises(error) as info:
            client.chat("m", USER)
    assert info.value.status_code == status
    assert text in str(info.value)


def test_retry_after_header_is_read(mocked: responses.RequestsMock) -> None:
    mocked.post(
        CHAT, status=503, body=b'{"error":"busy"}', headers={"Retry-After": "0"}
    )
    mocked.post(CHAT, body=STREAM)
    delays: list[float] = []
    policy = RetryPolicy(initial_delay=30.0, jitter=False)
    with client_with(requests.Session(), retry=policy) as client:
        result = client.chat("m", USER, on_retry=lambda a, e, d: delays.append(d))
    assert result.content == "Hello world" and delays == [0.0]


def test_a_body_that_is_not_ndjson(mocked: responses.RequestsMock) -> None:
    mocked.post(CHAT, body=b"<html>captive portal</html>", content_type="text/html")
    with client_with(requests.Session()) as client:
        with pytest.raises(ProtocolError, match="not JSON") as info:
            client.chat("m", USER)
    assert info.value.partial.content == ""


def test_session_is_left_open(mocked: responses.RequestsMock) -> None:
    mocked.post(CHAT, body=STREAM)
    session = requests.Session()
    with client_with(session) as client:
        client.chat("m", USER)
    mocked.post(CHAT, body=STREAM)
    assert session.post(CHAT).status_code == 200  # still usable: it is the caller's


def test_session_must_be_a_session() -> None:
    with pytest.raises(TypeError, match=r"requests\.Session"):
        StreamingClient(HOST, session=object())


def test_proxy_settings_still_apply_to_a_remote_host(
    server: FakeOllama, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The environment and the session's proxies apply as ``Session.request``
    applies them, per request.

    The fake server stands in for the proxy: it records the absolute URI a proxy
    receives, and answers 404 (it does not forward).
    """
    monkeypatch.setenv("HTTP_PROXY", server.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    remote = "http://ollama.example:11434"
    with requests.Session() as session, StreamingClient(remote, session=session) as c:
        with pytest.raises(ServerError):
            c.chat("m", USER)
        monkeypatch.delenv("HTTP_PROXY")
        session.proxies = {"http": server.url}  # the session's own setting
        with pytest.raises(ServerError):
            c.chat("m", USER)
    assert [r.path for r in server.requests] == [f"{remote}/api/chat"] * 2
