"""Loopback TLS for the race tests: a certificate authority, a TLS front, a tarpit.

Interim helpers until ``FakeOllama(tls=True)`` lands; kept small on purpose.

- ``TlsFiles``: a throwaway CA (``trustme``) and a server certificate for
  ``127.0.0.1`` and ``localhost``; ``ca_file`` is what a client trusts.
- ``TlsFront``: terminates TLS and pipes each connection to its own connection
  to a plain server (a ``FakeOllama``), so scripts, stalls and the server's
  connection counters work unchanged over ``https://``. A client hanging up is
  passed on to the server as a hang-up.
- ``Tarpit``: accepts TCP connections and never says a word, so a client's TLS
  handshake stalls after its ClientHello; it reports when a ClientHello arrived
  and when a client went away. With ``full=True`` its accept queue is full
  instead, so connecting itself stalls.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
from pathlib import Path
from types import TracebackType

import trustme

WAIT = 5.0


class TlsFiles:
    """A CA and a server certificate; ``ca_file`` is the PEM file clients trust."""

    def __init__(self, directory: Path, *names: str) -> None:
        self.ca = trustme.CA()
        self.cert = self.ca.issue_cert(*(names or ("127.0.0.1", "localhost")))
        self.ca_file = str(directory / "ca.pem")
        self.ca.cert_pem.write_to_path(self.ca_file)

    def server_context(self, *names: str) -> ssl.SSLContext:
        """A server context with our certificate, or (``names``) a certificate
        of the same CA for other host names."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert = self.ca.issue_cert(*names) if names else self.cert
        cert.configure_cert(ctx)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """What httpx takes as ``verify=`` (a path there is deprecated in 0.28)."""
        return ssl.create_default_context(cafile=self.ca_file)


class _Listener:
    """A loopback listening socket with an accept thread, closed as a whole."""

    def __init__(self, backlog: int = 64) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(backlog)
        self.port: int = self._sock.getsockname()[1]
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._closing = False

    def _start(self) -> None:
        thread = threading.Thread(target=self._accept_loop, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            with self._lock:
                if self._closing:
                    conn.close()
                    return
                self._conns.add(conn)
                thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
                self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def _forget(self, *conns: socket.socket) -> None:
        with self._lock:
            for conn in conns:
                self._conns.discard(conn)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.close()

    def close(self) -> None:
        with self._lock:
            self._closing = True
            conns = list(self._conns)
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in list(self._threads):
            thread.join(WAIT)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class TlsFront(_Listener):
    """``https://127.0.0.1:port`` in front of a plain HTTP server on ``backend``."""

    def __init__(self, backend_url: str, context: ssl.SSLContext) -> None:
        super().__init__()
        host, port = backend_url.removeprefix("http://").rsplit(":", 1)
        self._backend = (host, int(port))
        self.context = context
        """The server context; replace it to present another certificate."""
        self.url = f"https://127.0.0.1:{self.port}"
        self._start()

    def __enter__(self) -> TlsFront:
        return self

    def _serve(self, conn: socket.socket) -> None:
        backend: socket.socket | None = None
        tls: socket.socket = conn
        try:
            conn.settimeout(WAIT)
            tls = self.context.wrap_socket(conn, server_side=True)
            tls.settimeout(None)
            with self._lock:
                self._conns.discard(conn)
                self._conns.add(tls)
            backend = socket.create_connection(self._backend, timeout=WAIT)
            backend.settimeout(None)
            with self._lock:
                self._conns.add(backend)
            self._pipe(tls, backend)
        except (OSError, ValueError):
            pass  # a failed handshake (certificate tests) or a hang-up
        finally:
            for sock in (tls, backend):
                if sock is not None:
                    with contextlib.suppress(OSError):
                        socket.socket.shutdown(sock, socket.SHUT_RDWR)
            self._forget(*(s for s in (conn, tls, backend) if s is not None))

    @staticmethod
    def _pipe(tls: socket.socket, backend: socket.socket) -> None:
        assert isinstance(tls, ssl.SSLSocket)
        while True:
            if tls.pending():
                readable = [tls]
            else:
                readable, _, _ = select.select([tls, backend], [], [])
            for sock in readable:
                data = sock.recv(65536)
                if not data:
                    return  # either side hung up: end both
                (backend if sock is tls else tls).sendall(data)


class Tarpit(_Listener):
    """A TCP server that never speaks: TLS handshakes stall after the ClientHello.

    ``full=True``: nothing is ever accepted and the accept queue is full, so a
    client's connect() itself stalls (its SYN is dropped).
    """

    def __init__(self, *, full: bool = False) -> None:
        super().__init__(backlog=0 if full else 64)
        self.hello = threading.Event()
        """Set when a client sent its first bytes (a TLS ClientHello)."""
        self._cond = threading.Condition()
        self.hangups = 0
        self._fillers: list[socket.socket] = []
        if full:
            for _ in range(8):  # fill the queue; later connects wait in SYN_SENT
                filler = socket.socket()
                filler.settimeout(0.2)
                try:
                    filler.connect(("127.0.0.1", self.port))
                except OSError:
                    filler.close()
                    break
                self._fillers.append(filler)
        else:
            self._start()
        self.url = f"https://127.0.0.1:{self.port}"

    def __enter__(self) -> Tarpit:
        return self

    def _serve(self, conn: socket.socket) -> None:
        try:
            if conn.recv(65536):
                self.hello.set()
                while conn.recv(65536):  # whatever it says, never answer
                    pass
        except OSError:
            pass
        with self._cond:
            self.hangups += 1
            self._cond.notify_all()
        self._forget(conn)

    def wait_hangups(self, count: int = 1) -> bool:
        """Wait until ``count`` clients went away."""
        with self._cond:
            return self._cond.wait_for(lambda: self.hangups >= count, WAIT)

    def close(self) -> None:
        for filler in self._fillers:
            filler.close()
        super().close()
