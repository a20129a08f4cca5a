"""Corporate networks: the environment's proxies, an explicit one, auth, tunnels and
cancel through them, against a real tinyproxy, on both transports."""

from __future__ import annotations

import logging
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from ollama_stream_sync import ConnectionFailed, ServerError, StreamingClient
from ollama_stream_sync.testing import Chunk, FakeOllama, Stall, reply

from .support import USER, WAIT
from .support.clients import MakeClient, assert_all_closed
from .support.network import HIDDEN_HOST, ProxiedRequest, Socks5Proxy, Tinyproxy

pytestmark = pytest.mark.transport

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
def hidden(make_tinyproxy: Callable[..., Tinyproxy]) -> Tinyproxy:
    """A proxy that alone can resolve ``HIDDEN_HOST``."""
    return make_tinyproxy(hidden_hosts=[HIDDEN_HOST])


def behind(server: FakeOllama) -> str:
    """The server's URL under the name only the proxy resolves."""
    return f"http://{HIDDEN_HOST}:{server.url.rsplit(':', 1)[1]}"


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
def test_the_environments_proxy_carries_a_remote_host(
    server: FakeOllama,
    hidden: Tinyproxy,
    make_client: MakeClient,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
) -> None:
    monkeypatch.setenv(variable, hidden.url)
    server.enqueue(reply("through the proxy"))
    with make_client(behind(server)) as client:
        assert client.chat("m", USER).content == "through the proxy"
    sent = ProxiedRequest("POST", f"{behind(server)}/api/chat")
    assert hidden.wait_for(lambda proxy: sent in proxy.requests)  # logged on arrival


@pytest.mark.parametrize("entry", [HIDDEN_HOST, "*", f"{HIDDEN_HOST}:0"])
def test_no_proxy_sends_a_host_direct(
    server: FakeOllama,
    hidden: Tinyproxy,
    make_client: MakeClient,
    monkeypatch: pytest.MonkeyPatch,
    entry: str,
) -> None:
    """Direct, the name does not resolve: the proof that the proxy was skipped.
    An entry for another port does not match."""
    port = int(server.url.rsplit(":", 1)[1])
    monkeypatch.setenv("HTTP_PROXY", hidden.url)
    monkeypatch.setenv("NO_PROXY", entry.replace(":0", f":{port + 1}"))
    server.enqueue(reply("proxied"))
    with make_client(behind(server)) as client:
        if entry.endswith(":0"):
            assert client.chat("m", USER).content == "proxied"
            return
        with pytest.raises(ConnectionFailed) as caught:
            client.chat("m", USER)
    assert caught.value.during_connect
    assert hidden.requests == []


def test_trust_env_false_ignores_the_environment(
    server: FakeOllama,
    hidden: Tinyproxy,
    transport: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTP_PROXY", hidden.url)
    with requests.Session() as session:
        session.trust_env = False
        options: dict[str, Any] = (
            {"session": session} if transport == "requests" else {"trust_env": False}
        )
        with StreamingClient(behind(server), **options) as client:
            with pytest.raises(ConnectionFailed):
                client.chat("m", USER)
    assert hidden.requests == []


def test_a_session_sees_each_change_of_the_environment_and_its_proxies(
    server: FakeOllama, hidden: Tinyproxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """requests reads the environment at every request: the transport, which reuses
    what it read while nothing changed, must not hide a change."""
    with (
        requests.Session() as session,
        StreamingClient(behind(server), session=session) as client,
    ):
        monkeypatch.setenv("HTTP_PROXY", hidden.url)
        server.enqueue(reply("proxied"))
        assert client.chat("m", USER).content == "proxied"
        monkeypatch.delenv("HTTP_PROXY")
        with pytest.raises(ConnectionFailed):
            client.chat("m", USER)
        session.proxies["http"] = hidden.url
        server.enqueue(reply("by the session"))
        assert client.chat("m", USER).content == "by the session"
    assert hidden.wait_for(lambda proxy: len(proxy.requests) == 2)


def test_an_explicit_proxy_wins(server: FakeOllama, hidden: Tinyproxy) -> None:
    server.enqueue(reply("explicit"))
    with StreamingClient(behind(server), proxy=hidden.url, trust_env=False) as client:
        assert client.chat("m", USER).content == "explicit"
    assert hidden.wait_for(lambda proxy: len(proxy.requests) == 1)


def test_a_proxy_with_basic_auth_and_no_credentials_in_any_log(
    server: FakeOllama,
    make_tinyproxy: Callable[..., Tinyproxy],
    make_client: MakeClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy = make_tinyproxy(auth=("ann", "s3cret-pw"), hidden_hosts=[HIDDEN_HOST])
    caplog.set_level(logging.DEBUG)
    server.enqueue(reply("authorised"))
    monkeypatch.setenv("HTTP_PROXY", proxy.auth_url)
    with make_client(behind(server)) as client:
        assert client.chat("m", USER).content == "authorised"
    monkeypatch.setenv("HTTP_PROXY", proxy.url)  # no credentials: refused
    with make_client(behind(server)) as client, pytest.raises(ServerError) as caught:
        client.chat("m", USER)
    assert caught.value.status_code == 407
    shown = [caplog.text, str(caught.value), repr(caught.value), caught.value.url]
    assert not any("s3cret-pw" in str(text) for text in shown)


def test_https_goes_through_the_proxy_by_connect_tunnel(
    make_tinyproxy: Callable[..., Tinyproxy],
    transport: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for variable in (
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
    ):  # they beat session.verify
        monkeypatch.delenv(variable, raising=False)
    proxy = make_tinyproxy()
    with FakeOllama(tls=True) as server, requests.Session() as session:
        server.enqueue(reply("tunnelled"))
        session.proxies = {"https": proxy.url}
        session.verify = server.ca_file
        options: dict[str, Any] = (
            {"session": session}
            if transport == "requests"
            else {"proxy": proxy.url, "verify": server.client_ssl_context()}
        )
        with StreamingClient(server.url, **options) as client:
            assert client.chat("m", USER).content == "tunnelled"
    port = server.url.rsplit(":", 1)[1]
    assert proxy.wait_for(lambda p: [r.method for r in p.requests] == ["CONNECT"])
    assert proxy.requests[0].target.endswith(f":{port}")


@pytest.fixture
def proxied_client(
    server: FakeOllama,
    hidden: Tinyproxy,
    make_client: MakeClient,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[StreamingClient]:
    monkeypatch.setenv("HTTP_PROXY", hidden.url)
    with make_client(behind(server)) as client:
        yield client


@pytest.mark.parametrize("phase", ["waiting", "mid-stream"])
def test_cancel_through_the_proxy_closes_the_streams_socket(
    server: FakeOllama,
    proxied_client: StreamingClient,
    worker_sockets: list[socket.socket],
    phase: str,
) -> None:
    """Mid-stream, the proxy passes the hang-up on to Ollama; while Ollama is
    silent before its headers, tinyproxy notices only when Ollama answers."""
    server.enqueue([Stall()] if phase == "waiting" else [Chunk(content="a"), Stall()])
    handle = proxied_client.start_chat("m", USER)
    assert server.wait_stalled()
    if phase == "mid-stream":
        assert handle.wait_for(lambda r: r.content == "a", WAIT)
    assert handle.cancel()
    assert handle.result(WAIT).cancelled
    assert handle.join(WAIT)
    assert_all_closed(worker_sockets)
    if phase == "mid-stream":
        assert server.wait_for(lambda s: s.disconnects_seen >= 1, WAIT)


@pytest.mark.parametrize("phase", ["connecting to the proxy", "the tunnel"])
def test_cancel_before_the_proxy_answers(
    unaccepting_port: int,
    transport: str,
    worker_sockets: list[socket.socket],
    monkeypatch: pytest.MonkeyPatch,
    phase: str,
) -> None:
    """A proxy that never accepts (connecting), or accepts and never answers
    the CONNECT (the tunnel): a cancel still ends the stream at once."""
    silent = None
    if phase == "the tunnel":
        silent = _SilentServer()
        proxy = f"http://127.0.0.1:{silent.port}"
    else:
        proxy = f"http://127.0.0.1:{unaccepting_port}"
    connecting = threading.Event()  # set once a stream's connect() to it starts
    for name in ("connect", "connect_ex"):
        original = getattr(socket.socket, name)

        def hooked(sock: socket.socket, address: Any, _original: Any = original) -> Any:
            if isinstance(address, tuple) and f":{address[1]}" in proxy:
                connecting.set()
            return _original(sock, address)

        monkeypatch.setattr(socket.socket, name, hooked)
    try:
        with requests.Session() as session:
            session.proxies = {"https": proxy}
            options: dict[str, Any] = (
                {"session": session} if transport == "requests" else {"proxy": proxy}
            )
            with StreamingClient(
                "https://ollama.invalid:443", connect_timeout=60, **options
            ) as client:
                handle = client.start_chat("m", USER)
                assert connecting.wait(WAIT)
                if silent is not None:
                    assert silent.accepted.wait(WAIT)
                assert handle.cancel()
                assert handle.result(WAIT).cancelled  # far less than 60 s
                assert handle.join(WAIT)
                assert_all_closed(worker_sockets)  # this stream's, and only them
    finally:
        if silent is not None:
            silent.close()


class _SilentServer:
    """Accepts connections and never writes a byte."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.accepted = threading.Event()
        self._conns: list[Any] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except OSError:
            return
        self._conns.append(conn)
        self.accepted.set()

    def close(self) -> None:
        self._listener.close()
        for conn in self._conns:
            conn.close()


def test_a_socks5_proxy_carries_a_remote_host(
    server: FakeOllama,
    make_socks5: Callable[..., Socks5Proxy],
    make_client: MakeClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy = make_socks5(hidden_hosts=[HIDDEN_HOST])
    monkeypatch.setenv("ALL_PROXY", proxy.url.replace("socks5://", "socks5h://"))
    server.enqueue(reply("through socks"))
    with make_client(behind(server)) as client:
        assert client.chat("m", USER).content == "through socks"
    target = behind(server).removeprefix("http://")
    assert proxy.wait_for(lambda p: p.connections == [target])


def test_socks_without_its_extra_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "socksio", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'httpx\[socks\]'"):
        StreamingClient("http://ollama.example:11434", proxy="socks5://127.0.0.1:1080")
