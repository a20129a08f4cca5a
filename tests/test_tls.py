"""Streams over ``https://`` on both transports: chat, cancel in every phase,
certificate errors.

Over TLS the handshake is a phase of its own, and cancel must reach it too (it
used to wait for ``connect_timeout``, because wrapping the socket detached the
one the stream had claimed). ``FakeOllama(tls=True)`` serves with a throwaway
CA; a ``Tarpit`` that never answers stalls handshakes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from ollama_stream_sync import ConnectionFailed, StreamingClient
from ollama_stream_sync.testing import Chunk, DoneLine, FakeOllama, Stall, reply

from .support import USER, WAIT
from .support.clients import MakeClient, in_function
from .support.sockets import Tarpit

pytestmark = pytest.mark.transport


@pytest.fixture(autouse=True)
def _no_ca_bundle_override(monkeypatch: pytest.MonkeyPatch) -> None:
    """requests lets these variables override ``session.verify`` (as
    ``Session.request`` does, and so do we): keep the session's CA."""
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


@pytest.fixture
def tls_server() -> Iterator[FakeOllama]:
    with FakeOllama(tls=True) as srv:
        yield srv


def tls_client(
    make_client: MakeClient, url: str, trust: FakeOllama | None, **kwargs: Any
) -> StreamingClient:
    """A client on the transport under test that trusts ``trust``'s CA (None:
    the system's CAs only)."""
    if make_client.transport == "requests":
        client = make_client(url, **kwargs)
        assert client.session is not None
        if trust is not None:
            client.session.verify = trust.ca_file
        return client
    if trust is not None:
        kwargs["verify"] = trust.client_ssl_context()
    return make_client(url, **kwargs)


def test_cancel_during_a_stalled_tls_handshake(
    tls_server: FakeOllama, make_client: MakeClient
) -> None:
    """The server accepted the connection and got the ClientHello, and never
    answers: cancel ends the handshake at once, not after connect_timeout.

    On the old engine, the requests transport's process-wide audit hook, once
    some requests client had been built, happened to rescue httpx streams too,
    and hid this failure."""
    with Tarpit() as tarpit:
        url = tarpit.url("https")
        with tls_client(make_client, url, tls_server, connect_timeout=60) as client:
            handle = client.start_chat("m", USER)
            # the ClientHello came in: the client is in its handshake
            assert tarpit.wait_for(lambda t: t.received > 0)
            assert handle.cancel() is True
            assert handle.result(WAIT).cancelled  # far less than 60 s
            assert tarpit.wait_for(lambda t: t.hangups == 1)
        make_client.release()


def test_chat_over_tls(tls_server: FakeOllama, make_client: MakeClient) -> None:
    tls_server.enqueue(reply("over TLS", thinking="Encrypted."), reply("again"))
    with tls_client(make_client, tls_server.url, tls_server) as client:
        result = client.chat("m", USER)
        assert (result.thinking, result.content) == ("Encrypted.", "over TLS")
        assert client.chat("m", USER).content == "again"  # a reused connection
    make_client.release()
    assert tls_server.wait_closed()


@pytest.mark.parametrize("phase", ["waiting for headers", "mid-stream"])
def test_cancel_over_tls(
    tls_server: FakeOllama, make_client: MakeClient, phase: str
) -> None:
    if phase == "mid-stream":
        tls_server.enqueue([Chunk(content="partial"), Stall(), DoneLine()])
    else:
        tls_server.enqueue([Stall(), *reply("late")])
    got = threading.Event()
    url = tls_server.url
    with tls_client(make_client, url, tls_server, read_timeout=None) as c:
        handle = c.start_chat("m", USER, on_content=lambda _: got.set())
        assert tls_server.wait_stalled()
        if phase == "mid-stream":
            assert got.wait(WAIT)
        assert handle.cancel() is True
        result = handle.result(WAIT)
        assert result.cancelled
        assert result.content == ("partial" if phase == "mid-stream" else "")
        assert tls_server.wait_for(lambda s: s.disconnects_seen == 1)
    make_client.release()
    assert tls_server.wait_closed()


def test_cancel_while_connecting_over_tls(
    tls_server: FakeOllama, make_client: MakeClient, unaccepting_port: int
) -> None:
    """The TCP connect itself stalls (a full accept queue) before any TLS."""
    url = f"https://127.0.0.1:{unaccepting_port}"
    with tls_client(make_client, url, tls_server, connect_timeout=60) as client:
        handle = client.start_chat("m", USER)
        # our httpx backend, or our connection class under requests
        assert in_function(handle.thread, "connect_tcp", "_connect", "connect")
        assert handle.cancel() is True
        assert handle.result(WAIT).cancelled
    make_client.release()


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unknown CA", "certificate"),
        ("wrong host name", "certificate"),
        ("plain HTTP server", "TLS"),
    ],
)
def test_certificate_errors_are_clear(
    tls_server: FakeOllama,
    server: FakeOllama,
    make_client: MakeClient,
    case: str,
    expected: str,
) -> None:
    """A failed TLS handshake is a ConnectionFailed that names the TLS problem."""
    with FakeOllama(host="127.0.0.2", tls=True) as elsewhere:
        if case == "unknown CA":
            url, trust = tls_server.url, None  # the system CAs do not know ours
        elif case == "wrong host name":
            # a CA it trusts, but a certificate for 127.0.0.1, not 127.0.0.2
            url, trust = elsewhere.url, elsewhere
        else:
            url, trust = server.url.replace("http://", "https://"), None
        with tls_client(make_client, url, trust) as client:
            with pytest.raises(ConnectionFailed) as info:
                client.chat("m", USER)
    message = str(info.value)
    assert expected in message, message
    if case != "plain HTTP server":
        assert "verif" in message.lower(), message
    make_client.release()
