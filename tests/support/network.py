"""Real network programs for tests, on loopback: Debian's tinyproxy, nginx and
microsocks, each a fixture.

``Tinyproxy`` is a forward proxy (plain requests and https ``CONNECT`` tunnels,
optional Basic auth, and host names that only it can resolve). ``NginxGateway``
is a reverse proxy over one or more upstreams (``FakeOllama``s), configured with
``NGINX_SNIPPET``, the settings a user copies to stream Ollama through nginx.
``Socks5Proxy`` is a SOCKS5 proxy (microsocks). Each runs in the foreground in
a private temporary directory, on a free port, and reports what it does through
its log, read line by line: readiness, requests and errors are events to wait
on, never sleeps (see ``programs.py``)::

    def test_through_proxy(fake_ollama, make_tinyproxy):
        proxy = make_tinyproxy(auth=("alice", "s3cret"))
        requests.get(f"{fake_ollama.url}/api/tags", proxies={"http": proxy.auth_url})
        assert proxy.wait_for(lambda p: len(p.requests) == 1)

    def test_gateway(fake_ollama, nginx):  # nginx: one upstream, fake_ollama
        fake_ollama.enqueue([Chunk(content="Hi"), Stall()])
        ...requests.post(f"{nginx.url}/api/chat", ..., stream=True)...

A missing program skips its tests; with ``REQUIRE_NET_TESTS=1`` (set by
``.ci/run``, which installs them) it fails them, so they cannot be lost.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from ollama_stream_sync.testing import FakeOllama

from .programs import LoopbackProgram, require, reserved_port, with_hosts_file

HIDDEN_HOST = "-ollama-behind-proxy"
"""A host name only a proxy started with ``hidden_hosts=[HIDDEN_HOST]`` resolves
(to 127.0.0.1). The leading hyphen makes it an invalid DNS name, so glibc's resolver
refuses it without sending a query: the test process (or a client that wrongly
resolves the target itself) fails at once and nothing leaves the machine."""

NGINX_SNIPPET = """\
upstream ollama {
    server 127.0.0.1:11434;  # one line per Ollama: requests take turns
    keepalive 16;            # idle connections kept open to Ollama
}

server {
    listen 8080;
    location / {
        proxy_pass http://ollama;
        # Ollama on loopback answers 403 to any other Host (a DNS-rebinding guard).
        proxy_set_header Host localhost;
        # Keep-alive to Ollama needs HTTP/1.1 and no "Connection: close".
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        # Pass each line on as it comes: a chat is a stream, not a download.
        proxy_buffering off;
        # The longest silence: a cold model may load for minutes before any byte.
        proxy_read_timeout 300s;
        # While nothing has reached the client, try the next Ollama (chat is a POST).
        proxy_next_upstream error timeout http_502 http_503 http_504 non_idempotent;
        # Images travel inside the request body.
        client_max_body_size 64m;
    }
}
"""
"""The nginx settings for streaming Ollama, as README.md quotes them (inside
``http { }``). ``NginxGateway`` runs exactly this, with its own ports and
``proxy_read_timeout``."""


_SNIPPET_SERVER = (
    "    server 127.0.0.1:11434;  # one line per Ollama: requests take turns\n"
)


# -- tinyproxy -----------------------------------------------------------------------


@dataclass(frozen=True)
class ProxiedRequest:
    """One request line tinyproxy received: ``("GET", "http://h:1/api/tags")``,
    or ``("CONNECT", "127.0.0.1:4443")`` for an https tunnel."""

    method: str
    target: str


_REQUEST = re.compile(r"Request \(file descriptor \d+\): (\S+) (\S+) HTTP/")
_TOKEN = re.compile(r"[A-Za-z0-9._~-]+")


class Tinyproxy(LoopbackProgram):
    """Debian's tinyproxy on ``127.0.0.1:<port>``: a forward proxy for loopback.

    Example::

        with Tinyproxy(auth=("alice", "s3cret")) as proxy:
            httpx.get(server.url, proxy=proxy.auth_url)
            assert proxy.wait_for(lambda p: len(p.requests) == 1)

    Args:
        auth: ``(user, password)``: the proxy answers 407 without them. The
            password is written only to its private configuration file (mode
            0600, removed on close); ``log`` masks it.
        hidden_hosts: names only the proxy resolves, to 127.0.0.1 (see
            ``HIDDEN_HOST``). tinyproxy then runs in its own mount namespace
            (``unshare``) with its own ``/etc/hosts``. (glibc's ``HOSTALIASES``
            cannot do this: glibc applies it only in its DNS resolver, which then
            sends a query for the alias's target off the machine.)

    CONNECT is allowed to every port (there is no ``ConnectPort`` line), so
    https tunnels reach test servers on their random ports.
    """

    name = "tinyproxy"

    def __init__(
        self,
        *,
        auth: tuple[str, str] | None = None,
        hidden_hosts: Sequence[str] = (),
    ) -> None:
        program = require("tinyproxy")
        if hidden_hosts:
            require("unshare", "util-linux")
            require("mount")
        super().__init__()
        self.auth = auth
        try:
            config = self.directory / "tinyproxy.conf"
            argv = [program, "-d", "-c", str(config)]
            lines = [
                "Listen 127.0.0.1",
                "Allow 127.0.0.1",
                "Timeout 600",  # idle seconds: a loading model may stay silent long
                "MaxClients 256",
                "LogLevel Info",  # Info: the "Starting main loop" line we wait for
                f'PidFile "{self.directory / "tinyproxy.pid"}"',
            ]
            if auth is not None:
                user, password = auth
                if not (_TOKEN.fullmatch(user) and _TOKEN.fullmatch(password)):
                    raise ValueError("auth: user and password must be URL-safe words")
                lines.append(f"BasicAuth {user} {password}")
                token = base64.b64encode(f"{user}:{password}".encode()).decode()
                self._secrets = [password, token]
            if hidden_hosts:
                argv = with_hosts_file(_hosts_file(self.directory, hidden_hosts), argv)
            with reserved_port() as port:
                self.port = port
                config.write_text("\n".join([f"Port {port}", *lines, ""]))
                config.chmod(0o600)
                self._start(argv, "Starting main loop")
        except BaseException:
            self.close()
            raise

    @property
    def auth_url(self) -> str:
        """``http://user:password@127.0.0.1:<port>`` (ValueError without auth)."""
        if self.auth is None:
            raise ValueError("auth_url: this proxy was started without auth")
        user, password = self.auth
        return f"http://{user}:{password}@127.0.0.1:{self.port}"

    @property
    def requests(self) -> list[ProxiedRequest]:
        """Every request line received so far, in order, answered or not (a
        request refused with 407 is here too). The line is logged as the request
        arrives, so wait for it: ``proxy.wait_for(lambda p: len(p.requests) == 1)``.
        """
        return [
            ProxiedRequest(m.group(1), m.group(2))
            for m in map(_REQUEST.search, self.log)
            if m is not None
        ]


def _hosts_file(directory: Path, names: Sequence[str]) -> Path:
    """A hosts file in ``directory``: localhost, and ``names`` at 127.0.0.1."""
    hosts = directory / "hosts"
    hosts.write_text(f"127.0.0.1 localhost {' '.join(names)}\n::1 localhost\n")
    return hosts


# -- microsocks ----------------------------------------------------------------------

_SOCKS_CONNECT = re.compile(r"client\[\d+\] \S+: connected to (\S+)")


class Socks5Proxy(LoopbackProgram):
    """Debian's microsocks on ``127.0.0.1:<port>``: a SOCKS5 proxy for loopback.

    ``url`` is ``socks5://127.0.0.1:<port>``; the proxy resolves names itself
    (clients say ``socks5h://`` for that). It logs nothing when it starts, so its
    readiness is a bounded connect probe (see ``LoopbackProgram``).

    Args:
        auth: ``(user, password)`` it requires (SOCKS5 username/password).
        hidden_hosts: names only it resolves, as for ``Tinyproxy``.
    """

    name = "microsocks"

    def __init__(
        self,
        *,
        auth: tuple[str, str] | None = None,
        hidden_hosts: Sequence[str] = (),
    ) -> None:
        argv = [require("microsocks"), "-i", "127.0.0.1"]
        if hidden_hosts:
            require("unshare", "util-linux")
            require("mount")
        super().__init__()
        self.auth = auth
        try:
            if auth is not None:
                argv += ["-u", auth[0], "-P", auth[1]]
                self._secrets = [auth[1]]
            if hidden_hosts:
                argv = with_hosts_file(_hosts_file(self.directory, hidden_hosts), argv)
            with reserved_port() as port:
                self.port = port
                self._start([*argv, "-p", str(port)], None)
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        """``socks5://127.0.0.1:<port>``."""
        return f"socks5://127.0.0.1:{self.port}"

    @property
    def auth_url(self) -> str:
        """``socks5://user:password@127.0.0.1:<port>`` (ValueError without auth)."""
        if self.auth is None:
            raise ValueError("auth_url: this proxy was started without auth")
        return f"socks5://{self.auth[0]}:{self.auth[1]}@127.0.0.1:{self.port}"

    @property
    def connections(self) -> list[str]:
        """``host:port`` of each connection it made for a client, in order."""
        return [m.group(1) for m in map(_SOCKS_CONNECT.search, self.log) if m]


# -- nginx ---------------------------------------------------------------------------


class NginxGateway(LoopbackProgram):
    """Debian's nginx on ``127.0.0.1:<port>``, proxying to ``upstreams`` with
    ``NGINX_SNIPPET``: round robin over several, or all to one.

    Example::

        with NginxGateway([server_a, server_b]) as gateway:
            requests.get(f"{gateway.url}/api/tags")  # served by server_a
            requests.get(f"{gateway.url}/api/tags")  # served by server_b

    nginx's passive health checks apply as they would for a user: with several
    upstreams, one that failed or timed out is skipped for 10 s.

    Args:
        upstreams: ``FakeOllama``s or ``http://host:port`` URLs.
        read_timeout: ``proxy_read_timeout`` in seconds (the snippet's 300 s by
            default). A short one makes nginx answer its own 504 page while an
            upstream stalls before its headers (as Ollama does while loading).

    Attributes:
        upstreams: as given.
        error_log: see the property.
    """

    name = "nginx"

    def __init__(
        self,
        upstreams: Sequence[FakeOllama | str],
        *,
        read_timeout: float = 300.0,
    ) -> None:
        nginx = require("nginx")
        if not upstreams:
            raise ValueError("upstreams: give at least one")
        addresses = [
            (u.url if isinstance(u, FakeOllama) else u).removeprefix("http://")
            for u in upstreams
        ]
        if any("/" in a for a in addresses):
            raise ValueError(f"upstreams: plain http://host:port only: {upstreams}")
        super().__init__()
        self.upstreams = tuple(upstreams)
        try:
            config = self.directory / "nginx.conf"
            with reserved_port() as port:
                self.port = port
                servers = "".join(f"    server {a};\n" for a in addresses)
                site = _fill(NGINX_SNIPPET, _SNIPPET_SERVER, servers)
                site = _fill(site, "listen 8080;", f"listen 127.0.0.1:{port};")
                site = _fill(
                    site,
                    "proxy_read_timeout 300s;",
                    f"proxy_read_timeout {max(1, round(read_timeout * 1000))}ms;",
                )
                config.write_text(self._main_config(site))
                argv = [nginx, "-p", str(self.directory), "-c", str(config)]
                # -e: even before reading the configuration, log to our pipe.
                # "start worker processes": the master logs it once it listens.
                self._start([*argv, "-e", "stderr"], "start worker processes")
        except BaseException:
            self.close()
            raise

    def _main_config(self, site: str) -> str:
        """Everything around the snippet: foreground, one worker, and every path
        (pid, temporary files) inside our directory, away from a system nginx."""
        d = self.directory
        user = "user root;\n" if os.geteuid() == 0 else ""  # workers reach our files
        temp = "".join(
            f"{kind}_temp_path {d / kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        return (
            f"daemon off;\nworker_processes 1;\n{user}pid {d / 'nginx.pid'};\n"
            "error_log stderr info;\nevents { worker_connections 256; }\n"
            f"http {{\naccess_log off;\n{temp}{site}}}\n"
        )

    @property
    def error_log(self) -> list[str]:
        """nginx's error log so far, one entry per line, e.g. ``... [error] ...
        upstream timed out ... while reading response header from upstream``."""
        return self.log


def _fill(text: str, old: str, new: str) -> str:
    """``text`` with its one ``old`` replaced (ValueError if not exactly once)."""
    if text.count(old) != 1:
        raise ValueError(f"NGINX_SNIPPET no longer holds {old!r} once")
    return text.replace(old, new)


# -- fixtures ------------------------------------------------------------------------


@pytest.fixture
def make_tinyproxy() -> Iterator[Callable[..., Tinyproxy]]:
    """``make_tinyproxy(auth=None, hidden_hosts=())`` starts a ``Tinyproxy``;
    each one is stopped after the test, whatever happened."""
    with contextlib.ExitStack() as stack:

        def make(
            *, auth: tuple[str, str] | None = None, hidden_hosts: Sequence[str] = ()
        ) -> Tinyproxy:
            return stack.enter_context(Tinyproxy(auth=auth, hidden_hosts=hidden_hosts))

        yield make


@pytest.fixture
def tinyproxy(make_tinyproxy: Callable[..., Tinyproxy]) -> Tinyproxy:
    """A ``Tinyproxy`` with no auth and no hidden hosts."""
    return make_tinyproxy()


@pytest.fixture
def make_nginx() -> Iterator[Callable[..., NginxGateway]]:
    """``make_nginx(upstreams, read_timeout=300.0)`` starts an ``NginxGateway``;
    each one is stopped after the test, whatever happened."""
    with contextlib.ExitStack() as stack:

        def make(
            upstreams: Sequence[FakeOllama | str], *, read_timeout: float = 300.0
        ) -> NginxGateway:
            gateway = NginxGateway(upstreams, read_timeout=read_timeout)
            return stack.enter_context(gateway)

        yield make


@pytest.fixture
def nginx(
    fake_ollama: FakeOllama, make_nginx: Callable[..., NginxGateway]
) -> NginxGateway:
    """An ``NginxGateway`` with one upstream: the test's ``fake_ollama``."""
    return make_nginx([fake_ollama])


@pytest.fixture
def make_socks5() -> Iterator[Callable[..., Socks5Proxy]]:
    """``make_socks5(auth=None, hidden_hosts=())`` starts a ``Socks5Proxy``;
    each one is stopped after the test, whatever happened."""
    with contextlib.ExitStack() as stack:

        def make(
            *, auth: tuple[str, str] | None = None, hidden_hosts: Sequence[str] = ()
        ) -> Socks5Proxy:
            proxy = Socks5Proxy(auth=auth, hidden_hosts=hidden_hosts)
            return stack.enter_context(proxy)

        yield make
