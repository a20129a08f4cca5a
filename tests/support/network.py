"""Real network programs for tests: Debian's tinyproxy and nginx, on loopback.

``Tinyproxy`` is a forward proxy (plain requests and https ``CONNECT`` tunnels,
optional Basic auth, and host names that only it can resolve). ``NginxGateway``
is a reverse proxy over one or more upstreams (``FakeOllama``s), configured with
``NGINX_SNIPPET``, the settings a user copies to stream Ollama through nginx.
Each runs in the foreground in a private temporary directory, on a free port,
and reports what it does through its log, which a thread reads line by line:
readiness, requests and errors are events to wait on, never sleeps::

    def test_through_proxy(fake_ollama, make_tinyproxy):
        proxy = make_tinyproxy(auth=("alice", "s3cret"))
        requests.get(f"{fake_ollama.url}/api/tags", proxies={"http": proxy.auth_url})
        assert proxy.wait_for(lambda p: ("GET", f"{fake_ollama.url}/api/tags")
                              in [(r.method, r.target) for r in p.requests])

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
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import pytest
from typing_extensions import Self

from ollama_stream_sync.testing import FakeOllama

WAIT = 5.0  # as in conftest: every wait is bounded, none is a timing assertion
START_WAIT = 30.0  # bounds a program's start on a busy machine; it measures nothing

HIDDEN_HOST = "-ollama-behind-proxy"
"""A host name only a ``Tinyproxy(hidden_hosts=[HIDDEN_HOST])`` resolves (to
127.0.0.1). The leading hyphen makes it an invalid DNS name, so glibc's resolver
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


def require(program: str) -> str:
    """The path of ``program``; if missing, skip the test (fail it in CI)."""
    path = shutil.which(program, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    if path is None:
        reason = f"{program} is not installed (apt-get install nginx tinyproxy)"
        if os.environ.get("REQUIRE_NET_TESTS") == "1":
            pytest.fail(f"network tests are required here, but {reason}")
        pytest.skip(reason)
    return path


@contextlib.contextmanager
def reserved_port() -> Iterator[int]:
    """A free loopback port, held until the block ends: start the program inside.

    Our socket stays bound (not listening) with ``SO_REUSEADDR``. tinyproxy and
    nginx set ``SO_REUSEADDR`` on their listening sockets, and Linux lets such
    sockets share a port while neither listens, so the program binds the same
    port while no other ``bind(0)`` on the machine can be given it. There is no
    window between choosing the port and the program listening on it.
    """
    holder = socket.socket()
    try:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", 0))
        yield int(holder.getsockname()[1])
    finally:
        holder.close()


class LoopbackProgram:
    """A program in the foreground, in its own session and temporary directory.

    Its stdout and stderr go to one pipe that a thread reads line by line into
    ``log``; each line is an event for ``wait_for``. The program is ready when a
    line holds ``ready`` (it listens by then). ``close()`` stops it and every
    process it forked, and removes the directory.
    """

    name = "program"

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
        self.port = 0
        self._secrets: list[str] = []
        self._cond = threading.Condition()
        self._log: list[str] = []
        self._ready = False
        self._ended = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The program's process id, also the id of its own process group."""
        assert self._proc is not None
        return self._proc.pid

    @property
    def log(self) -> list[str]:
        """Every line the program wrote so far (secrets replaced with ``***``)."""
        with self._cond:
            return list(self._log)

    def wait_for(
        self, predicate: Callable[[Self], bool], timeout: float = WAIT
    ) -> bool:
        """Wait until ``predicate(self)`` holds, re-checked on each new log line."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)

    def _start(self, argv: Sequence[str], ready: str) -> None:
        """Run ``argv`` and wait until it logs ``ready`` (RuntimeError with its log
        if it exits or stays silent first; the caller then calls ``close()``)."""
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=self.directory,
            start_new_session=True,  # its own process group: see _kill_group
        )
        self._reader = threading.Thread(
            target=self._read, args=(ready,), name=f"{self.name}-log", daemon=True
        )
        self._reader.start()
        with self._cond:
            self._cond.wait_for(lambda: self._ready or self._ended, START_WAIT)
            ready_now = self._ready
        if not ready_now:
            raise RuntimeError(f"{self.name} did not start:\n" + "\n".join(self.log))

    def _read(self, ready: str) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        # Blocks on the pipe: each line is written by the program as it happens.
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            is_ready = ready in line
            for secret in self._secrets:
                line = line.replace(secret, "***")
            with self._cond:
                self._log.append(line)
                self._ready = self._ready or is_ready
                self._cond.notify_all()
        # End of file: every process holding the pipe (workers too) has exited.
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def close(self) -> None:
        """Stop the program (TERM, then KILL to its whole group), remove its files."""
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()  # tinyproxy and nginx both stop at once on TERM
            try:
                proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                self._kill_group(proc)
            with self._cond:
                gone = self._cond.wait_for(lambda: self._ended, WAIT)
            if not gone:  # a forked process outlived its parent and holds the pipe
                self._kill_group(proc)
            if self._reader is not None:
                self._reader.join(WAIT)
            if proc.stdout is not None:
                proc.stdout.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    @staticmethod
    def _kill_group(proc: subprocess.Popen[bytes]) -> None:
        # The group was made by start_new_session for this program alone, and
        # still has a member (the pipe is open), so its id names only ours.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(WAIT)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


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
        auth: ``(user, password)``: the proxy answers 407 without them. Both
            are written only to its private configuration file, never to a log.
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
            require("unshare")
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
                hosts = self.directory / "hosts"
                names = " ".join(hidden_hosts)
                hosts.write_text(f"127.0.0.1 localhost {names}\n::1 localhost\n")
                argv = _with_hosts_file(hosts, argv)
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


def _with_hosts_file(hosts: Path, argv: list[str]) -> list[str]:
    """``argv`` run in a private mount namespace with ``hosts`` bound over
    ``/etc/hosts``.

    ``unshare`` execs the shell, which execs the program: one process, one pid.
    Its mounts are private, so the machine's ``/etc/hosts`` is never touched. As
    root no user namespace is needed; otherwise ``--map-root-user`` makes one.
    """
    script = 'hosts=$1; shift; mount --bind "$hosts" /etc/hosts && exec "$@"'
    unshare = ["unshare", "--mount", *(["--map-root-user"] * (os.geteuid() != 0))]
    return [*unshare, "sh", "-c", script, "sh", str(hosts), *argv]


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
