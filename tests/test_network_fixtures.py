"""The tinyproxy, nginx and SOCKS5 fixtures, proven with plain requests and httpx.

What later proxy and gateway tests rely on: the forward proxy forwards, tunnels
https, asks for credentials, resolves a name the test process cannot; the
gateway streams line by line, passes a client's hang-up on, times out with its
own 504, takes turns over upstreams; the SOCKS5 proxy relays and asks for
credentials; and all of them always clean up.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests

from ollama_stream_sync.testing import Chunk, Done, FakeOllama, Stall

from .support.network import (
    HIDDEN_HOST,
    NGINX_SNIPPET,
    NginxGateway,
    Socks5Proxy,
    Tinyproxy,
)
from .support.programs import LoopbackProgram, require

pytestmark = pytest.mark.transport

WAIT = 5.0
CHAT = {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}
ROOT = Path(__file__).resolve().parent.parent
HOSTS_GUIDE = ROOT / "docs" / "guides" / "hosts.md"
README = ROOT / "README.md"
LIBS = pytest.mark.parametrize("lib", ["requests", "httpx"])


def get(
    lib: str, url: str, proxy: str | None = None, verify: Any = True
) -> tuple[int, str]:
    """GET ``url`` (through ``proxy``) with a fresh client that ignores the
    environment's proxy and CA settings; the status and the body."""
    if lib == "requests":
        with requests.Session() as session:
            session.trust_env = False
            proxies = {"http": proxy, "https": proxy} if proxy else {}
            r = session.get(url, proxies=proxies, verify=verify, timeout=WAIT)
            return r.status_code, r.text
    with httpx.Client(proxy=proxy, verify=verify, trust_env=False, timeout=WAIT) as c:
        response = c.get(url)
        return response.status_code, response.text


def stream_lines(lib: str, url: str) -> Generator[dict[str, Any], None, None]:
    """POST a chat to ``url`` and yield each NDJSON line as it arrives."""
    if lib == "requests":
        with requests.Session() as session:
            session.trust_env = False
            with session.post(url, json=CHAT, stream=True, timeout=WAIT) as r:
                assert r.status_code == 200
                for line in r.iter_lines(chunk_size=None):
                    yield json.loads(line)
        return
    with (
        httpx.Client(trust_env=False, timeout=WAIT) as client,
        client.stream("POST", url, json=CHAT) as response,
    ):
        assert response.status_code == 200
        for text in response.iter_lines():
            yield json.loads(text)


# -- tinyproxy -----------------------------------------------------------------------


@LIBS
def test_the_proxy_forwards_and_records_each_request(
    lib: str, fake_ollama: FakeOllama, tinyproxy: Tinyproxy
) -> None:
    url = f"{fake_ollama.url}/api/version"
    assert get(lib, url, tinyproxy.url)[0] == 200
    assert tinyproxy.wait_for(lambda p: len(p.requests) == 1)
    (seen,) = tinyproxy.requests
    assert (seen.method, seen.target) == ("GET", url)
    assert [r.path for r in fake_ollama.requests] == ["/api/version"]


@LIBS
def test_the_proxy_answers_407_without_credentials(
    lib: str, fake_ollama: FakeOllama, make_tinyproxy: Any
) -> None:
    proxy = make_tinyproxy(auth=("alice", "s3cret-pw"))
    url = f"{fake_ollama.url}/api/version"
    assert get(lib, url, proxy.url)[0] == 407
    assert get(lib, url, proxy.auth_url) == (200, '{"version":"0.13.0-fake"}')
    assert proxy.wait_for(lambda p: len(p.requests) == 2)
    (forwarded,) = fake_ollama.requests  # the refused one never reached it
    assert "proxy-authorization" not in {k.lower() for k in forwarded.headers}
    assert "s3cret-pw" not in "\n".join(proxy.log)


@LIBS
def test_https_goes_through_the_proxy_in_a_connect_tunnel(
    lib: str, make_tinyproxy: Any
) -> None:
    proxy = make_tinyproxy(auth=("alice", "s3cret-pw"))
    with FakeOllama(tls=True) as server:
        verify = server.ca_file if lib == "requests" else server.client_ssl_context()
        url = f"{server.url}/api/version"
        assert get(lib, url, proxy.auth_url, verify)[0] == 200
        with pytest.raises((requests.exceptions.ProxyError, httpx.ProxyError)):
            get(lib, url, proxy.url, verify)  # the tunnel itself needs credentials
        assert [r.path for r in server.requests] == ["/api/version"]
    assert proxy.wait_for(lambda p: len(p.requests) == 2)
    target = url.removeprefix("https://").removesuffix("/api/version")
    assert {(r.method, r.target) for r in proxy.requests} == {("CONNECT", target)}


@LIBS
def test_a_name_only_the_proxy_can_resolve(
    lib: str, fake_ollama: FakeOllama, make_tinyproxy: Any
) -> None:
    proxy = make_tinyproxy(hidden_hosts=[HIDDEN_HOST])
    port = int(fake_ollama.url.rsplit(":", 1)[1])
    url = f"http://{HIDDEN_HOST}:{port}/api/version"
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo(HIDDEN_HOST, port)  # not here: only inside the proxy
    assert HIDDEN_HOST not in Path("/etc/hosts").read_text()
    assert get(lib, url, proxy.url) == (200, '{"version":"0.13.0-fake"}')
    (forwarded,) = fake_ollama.requests
    assert forwarded.headers["Host"] == f"{HIDDEN_HOST}:{port}"


# -- nginx ---------------------------------------------------------------------------


@LIBS
def test_the_gateway_streams_line_by_line(
    lib: str, fake_ollama: FakeOllama, nginx: NginxGateway
) -> None:
    fake_ollama.enqueue([Chunk(content="one"), Stall(), Chunk(content="two"), Done()])
    lines = stream_lines(lib, f"{nginx.url}/api/chat")
    # The first line arrives while the upstream is stalled: nothing is buffered.
    # (Buffered, it would come only at the end, and the read would time out.)
    assert next(lines)["message"]["content"] == "one"
    assert fake_ollama.wait_stalled()
    fake_ollama.release()
    rest = list(lines)
    assert [line["message"]["content"] for line in rest] == ["two", ""]
    assert rest[-1]["done"] is True


@LIBS
def test_a_client_hanging_up_reaches_the_upstream(
    lib: str, fake_ollama: FakeOllama, nginx: NginxGateway
) -> None:
    fake_ollama.enqueue([Chunk(content="one"), Stall()])
    lines = stream_lines(lib, f"{nginx.url}/api/chat")
    assert next(lines)["message"]["content"] == "one"
    lines.close()  # closes the response (and its connection) mid-stream
    assert fake_ollama.wait_for(lambda s: s.disconnects_seen == 1)


def test_a_short_read_timeout_makes_nginx_answer_504(
    fake_ollama: FakeOllama, make_nginx: Any
) -> None:
    gateway = make_nginx([fake_ollama], read_timeout=0.2)
    fake_ollama.enqueue([Stall()])  # silent before its headers, as while loading
    with requests.Session() as session:
        session.trust_env = False
        response = session.post(f"{gateway.url}/api/chat", json=CHAT, timeout=WAIT)
    assert response.status_code == 504
    assert "504 Gateway Time-out" in response.text
    assert gateway.wait_for(lambda g: any("upstream timed out" in x for x in g.log))
    assert fake_ollama.wait_for(lambda s: s.disconnects_seen == 1)


def test_the_gateway_takes_turns_and_sends_host_localhost(make_nginx: Any) -> None:
    with FakeOllama() as a, FakeOllama() as b:
        gateway = make_nginx([a, b])
        for _ in range(4):
            assert get("httpx", f"{gateway.url}/api/version")[0] == 200
        assert len(a.requests) == len(b.requests) == 2
        assert {r.headers["Host"] for r in a.requests + b.requests} == {"localhost"}
        gateway.close()  # before its upstreams: it holds keep-alive connections


@pytest.mark.parametrize("page", [HOSTS_GUIDE, README], ids=lambda p: p.name)
def test_the_docs_quote_the_nginx_snippet(page: Path) -> None:
    assert f"```nginx\n{NGINX_SNIPPET}```" in page.read_text()


# -- microsocks ----------------------------------------------------------------------


def socks5_get(
    proxy: Socks5Proxy, host: str, port: int, auth: tuple[str, str] | None = None
) -> bytes:
    """GET /api/version from ``host:port`` through ``proxy``, speaking SOCKS5 by
    hand (no SOCKS client library is a test dependency). The HTTP response, or
    the proxy's method reply if it accepted none of ours."""
    method = b"\x02" if auth else b"\x00"  # username/password, or none
    with socket.create_connection(("127.0.0.1", proxy.port), WAIT) as conn:
        conn.settimeout(WAIT)
        wire = conn.makefile("rb")
        conn.sendall(b"\x05\x01" + method)
        if (choice := wire.read(2)) != b"\x05" + method:
            return choice
        if auth:
            user, password = (part.encode() for part in auth)
            conn.sendall(b"\x01%c%s%c%s" % (len(user), user, len(password), password))
            assert wire.read(2) == b"\x01\x00"
        name = host.encode()
        conn.sendall(
            b"\x05\x01\x00\x03%c%s" % (len(name), name) + port.to_bytes(2, "big")
        )
        assert wire.read(10)[:2] == b"\x05\x00"  # connected
        conn.sendall(b"GET /api/version HTTP/1.0\r\n\r\n")
        return bytes(wire.read())


def test_the_socks5_proxy_resolves_and_relays(
    fake_ollama: FakeOllama, make_socks5: Any
) -> None:
    proxy = make_socks5(hidden_hosts=[HIDDEN_HOST])
    port = int(fake_ollama.url.rsplit(":", 1)[1])
    assert socks5_get(proxy, HIDDEN_HOST, port).startswith(b"HTTP/1.1 200 OK")
    assert proxy.wait_for(lambda p: p.connections == [f"{HIDDEN_HOST}:{port}"])


def test_the_socks5_proxy_asks_for_credentials(
    fake_ollama: FakeOllama, make_socks5: Any
) -> None:
    proxy = make_socks5(auth=("alice", "s3cret-pw"))
    assert proxy.auth_url == f"socks5://alice:s3cret-pw@127.0.0.1:{proxy.port}"
    port = int(fake_ollama.url.rsplit(":", 1)[1])
    assert socks5_get(proxy, "localhost", port) == b"\x05\xff"  # no method fits
    answer = socks5_get(proxy, "localhost", port, ("alice", "s3cret-pw"))
    assert answer.endswith(b'{"version":"0.13.0-fake"}')
    assert [r.path for r in fake_ollama.requests] == ["/api/version"]


# -- start and stop ------------------------------------------------------------------


def test_a_stopped_program_leaves_no_process_and_no_file(
    fake_ollama: FakeOllama,
) -> None:
    starts: list[Callable[[], LoopbackProgram]] = [
        lambda: NginxGateway([fake_ollama]),
        Tinyproxy,
        Socks5Proxy,
    ]
    for start in starts:
        with start() as program:
            pid = program.pid
            assert os.path.isdir(program.directory)
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)  # the group is gone: nginx's worker too
        assert not os.path.exists(program.directory)


def test_a_program_that_fails_to_start_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # its files go here
    # nginx resolves upstream names at start; glibc refuses this one locally.
    with pytest.raises(RuntimeError, match="host not found in upstream"):
        NginxGateway(["http://-no-such-host:80"])
    assert list(tmp_path.iterdir()) == []


def test_a_missing_program_skips_or_fails_in_ci(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REQUIRE_NET_TESTS", "1")
    with pytest.raises(pytest.fail.Exception, match="required"):
        require("no-such-program-here")
    monkeypatch.delenv("REQUIRE_NET_TESTS")
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        require("no-such-program-here")
