"""Behind a real gateway: Debian's nginx with the README's settings, in front of
FakeOllamas, over both transports. Streams pass through unbuffered, a cancel
reaches the upstream in every phase, and a gateway's 502 or 504 (its own page,
when a long prefill outlasts its read timeout) moves to another host before
any output, as a server's would."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ollama_stream_sync import Conversation, ServerError, StreamError, StreamTimeout
from ollama_stream_sync.testing import Chunk, Done, FakeOllama, Stall, reply

from .support import USER, WAIT
from .support.clients import MakeClient
from .support.network import NginxGateway

pytestmark = pytest.mark.transport

MakeNginx = Callable[..., NginxGateway]
SLOW_THEN_DONE = [Chunk(content="one"), Stall(), Chunk(content="two"), Done()]


@pytest.fixture
def refusing_url() -> Iterator[str]:
    """A loopback port that refuses connections (bound, never listening)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_a_chat_streams_through_the_gateway_as_it_comes(
    make_nginx: MakeNginx, make_client: MakeClient
) -> None:
    with FakeOllama() as a, FakeOllama() as b:
        gateway = make_nginx([a, b])
        for server in (a, b):
            server.enqueue(
                [Chunk(content="one"), Stall(), Chunk(content="two"), Done()]
            )
        first = threading.Event()
        with make_client(gateway.url) as client:
            handle = client.start_chat("m", USER, on_content=lambda text: first.set())
            # "one" arrives while the upstream is silent: nothing is buffered.
            assert first.wait(WAIT)
            assert handle.snapshot().content == "one"
            served = a if a.stream_requests() else b
            assert served.wait_stalled()  # "one" may arrive before the stall begins
            served.release()
            result = handle.result(WAIT)
        gateway.close()  # before its upstreams: it holds keep-alive connections
    assert (result.content, result.host) == ("onetwo", gateway.url)
    assert result.response_headers["server"].startswith("nginx")


@pytest.mark.parametrize(
    ("phase", "script"),
    [
        ("waiting", [Stall()]),
        ("thinking", [Chunk(thinking="Hm"), Stall()]),
        ("answering", [Chunk(content="Par"), Stall()]),
    ],
)
def test_cancel_closes_the_upstream_stream_in_every_phase(
    phase: str,
    script: list[Any],
    fake_ollama: FakeOllama,
    nginx: NginxGateway,
    make_client: MakeClient,
) -> None:
    fake_ollama.enqueue(script)
    with make_client(nginx.url) as client:
        handle = client.start_chat("m", USER)
        assert fake_ollama.wait_stalled()
        assert handle.wait_for(lambda _: handle.phase == phase, WAIT)
        assert handle.cancel()
        assert handle.result(WAIT).cancelled
    assert fake_ollama.wait_for(lambda s: s.disconnects_seen == 1)


def test_a_gateways_502_moves_to_another_host(
    refusing_url: str, make_nginx: MakeNginx, make_client: MakeClient
) -> None:
    with FakeOllama() as server:
        server.default_reply = reply("from behind the other gateway")
        broken, working = make_nginx([refusing_url]), make_nginx([server])
        errors: list[StreamError] = []
        with make_client(hosts=[broken.url, working.url], retry=None) as client:
            result = client.chat("m", USER, on_retry=lambda a, e, d: errors.append(e))
        working.close()
    assert (result.content, result.host) == (
        "from behind the other gateway",
        working.url,
    )
    ((error,),) = [errors]
    assert isinstance(error, ServerError) and error.status_code == 502
    assert error.url == broken.url


def test_a_prefill_longer_than_the_gateways_timeout_fails_over_like_a_502(
    make_nginx: MakeNginx, make_client: MakeClient
) -> None:
    with FakeOllama() as slow, FakeOllama() as fast:
        slow.enqueue([Stall()])  # Ollama writes no headers until the first token
        fast.default_reply = reply("in time")
        impatient = make_nginx([slow], read_timeout=0.2)
        patient = make_nginx([fast])
        errors: list[StreamError] = []
        with make_client(hosts=[impatient.url, patient.url]) as client:
            result = client.chat("m", USER, on_retry=lambda a, e, d: errors.append(e))
        assert slow.wait_for(lambda s: s.disconnects_seen == 1)
        patient.close()
    assert result.content == "in time"
    ((error,),) = [errors]
    assert isinstance(error, StreamTimeout) and error.status_code == 504
    assert "gateway timed out" in str(error)


def test_alone_the_gateways_504_is_the_callers_timeout(
    fake_ollama: FakeOllama, make_nginx: MakeNginx, make_client: MakeClient
) -> None:
    fake_ollama.enqueue([Stall()])
    gateway = make_nginx([fake_ollama], read_timeout=0.2)
    with make_client(gateway.url) as client, pytest.raises(StreamTimeout) as caught:
        client.chat("m", USER)
    assert caught.value.which == "first_token"
    assert "proxy_read_timeout" in str(caught.value)
    assert caught.value.partial.response_headers["server"].startswith("nginx")


def test_the_session_header_reaches_the_upstream(
    make_nginx: MakeNginx, make_client: MakeClient
) -> None:
    with FakeOllama() as a, FakeOllama() as b:
        gateway = make_nginx([a, b])
        with make_client(gateway.url) as client:
            conv = Conversation(client, "m", session_header="X-Session-ID")
            for turn in ("one", "two"):
                conv.send(turn)
        gateway.close()
        seen = [r.headers.get("X-Session-ID") for r in a.requests + b.requests]
    assert seen == [conv.id, conv.id]
