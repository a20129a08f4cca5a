"""Streams over ``https://``: chat, cancel in every phase, certificate errors.

Issue 4: over TLS the handshake is a phase of its own, and cancel must reach it
too (it used to wait for ``connect_timeout``, because wrapping the socket
detached the one the stream had claimed). A loopback TLS front with a
throwaway CA (``tests/tls.py``) stands in front of a ``FakeOllama``; a tarpit
that never answers stalls handshakes.
"""

from __future__ import annotations

import ssl
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ollama_stream_sync import ConnectionFailed, StreamingClient
from ollama_stream_sync.testing import Chunk, Done, FakeOllama, Stall, reply

from .conftest import USER, WAIT, MakeClient
from .tls import Tarpit, TlsFiles, TlsFront

pytestmark = pytest.mark.transport


@pytest.fixture(autouse=True)
def _no_ca_bundle_override(monkeypatch: pytest.MonkeyPatch) -> None:
    """requests lets these variables override ``session.verify`` (as
    ``Session.request`` does, and so do we): keep the session's CA."""
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsFiles:
    return TlsFiles(tmp_path)


@pytest.fixture
def tls_front(server: FakeOllama, tls_files: TlsFiles) -> Iterator[TlsFront]:
    with TlsFront(server.url, tls_files.server_context()) as front:
        yield front


def in_function(thread: threading.Thread, *names: str) -> bool:
    """Wait until ``thread`` runs a function named in ``names`` (no event exists)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        frame = sys._current_frames().get(thread.ident or -1)
        while frame is not None:
            if frame.f_code.co_name in names:
                return True
            frame = frame.f_back
        time.sleep(0.005)
    return False


def tls_client(
    make_client: MakeClient, url: str, trust: TlsFiles | None, **kwargs: Any
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
        kwargs["verify"] = trust.client_context()
    return make_client(url, **kwargs)


def test_cancel_during_a_stalled_tls_handshake(
    tls_files: TlsFiles, make_client: MakeClient
) -> None:
    """The server accepted the connection and got the ClientHello, and never
    answers: cancel ends the handshake at once, not after connect_timeout.

    First in this file on purpose: on the old engine, the requests transport's
    process-wide audit hook, once some requests client had been built, happened
    to rescue httpx streams too, and hid this failure."""
    with Tarpit() as tarpit:
        client = tls_client(make_client, tarpit.url, tls_files, connect_timeout=60)
        with client:
            handle = client.start_chat("m", USER)
            assert tarpit.hello.wait(WAIT)  # the client is in its handshake
            assert handle.cancel() is True
            assert handle.result(WAIT).cancelled  # far less than 60 s
            assert tarpit.wait_hangups(1)
        make_client.release()


def test_chat_over_tls(
    server: FakeOllama,
    tls_front: TlsFront,
    tls_files: TlsFiles,
    make_client: MakeClient,
) -> None:
    server.enqueue(reply("over TLS", thinking="Encrypted."), reply("again"))
    with tls_client(make_client, tls_front.url, tls_files) as client:
        result = client.chat("m", USER)
        assert (result.thinking, result.content) == ("Encrypted.", "over TLS")
        assert client.chat("m", USER).content == "again"  # a reused connection
    make_client.release()
    assert server.wait_closed()


@pytest.mark.parametrize("phase", ["waiting for headers", "mid-stream"])
def test_cancel_over_tls(
    server: FakeOllama,
    tls_front: TlsFront,
    tls_files: TlsFiles,
    make_client: MakeClient,
    phase: str,
) -> None:
    if phase == "mid-stream":
        server.enqueue([Chunk(content="partial"), Stall(), Done()])
    else:
        server.enqueue([Stall(), *reply("late")])
    got = threading.Event()
    with tls_client(make_client, tls_front.url, tls_files, read_timeout=None) as c:
        handle = c.start_chat("m", USER, on_content=lambda _: got.set())
        assert server.wait_stalled()
        if phase == "mid-stream":
            assert got.wait(WAIT)
        assert handle.cancel() is True
        result = handle.result(WAIT)
        assert result.cancelled
        assert result.content == ("partial" if phase == "mid-stream" else "")
        assert server.wait_for(lambda s: s.disconnects_seen == 1)
    make_client.release()
    assert server.wait_closed()


def test_cancel_while_connecting_over_tls(
    tls_files: TlsFiles, make_client: MakeClient
) -> None:
    """The TCP connect itself stalls (a full accept queue) before any TLS."""
    with Tarpit(full=True) as tarpit:
        client = tls_client(make_client, tarpit.url, tls_files, connect_timeout=60)
        with client:
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
    server: FakeOllama,
    tls_front: TlsFront,
    tls_files: TlsFiles,
    make_client: MakeClient,
    case: str,
    expected: str,
) -> None:
    """A failed TLS handshake is a ConnectionFailed that names the TLS problem."""
    if case == "unknown CA":
        url, trust = tls_front.url, None  # the system CAs do not know ours
    elif case == "wrong host name":
        # our CA, but a certificate for another host than 127.0.0.1
        url, trust = tls_front.url, tls_files
        tls_front.context = tls_files.server_context("ollama.example")
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


def test_tls_contexts_are_what_they_seem(tls_files: TlsFiles) -> None:
    """The helper's own sanity: the client context trusts only our CA."""
    ctx = tls_files.client_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
