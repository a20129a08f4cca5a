"""Sockets that a stream's ``AbortScope`` can claim, for httpcore's connection pools.

``TrackingBackend`` is an ``httpcore.NetworkBackend`` (httpcore's public hook for
making connections): every read and write lets the calling stream's scope claim
the connection first, and resolving, connecting and TLS are cut short by an abort.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import httpcore

from ollama_stream_sync._cancel import (
    AbortScope,
    connect,
    current_scope,
    resolve,
    shutdown_socket,
)

from ._base import socket_readable


class SocketStream(httpcore.NetworkStream):
    """One connection's socket as httpcore sees it, claimable by a stream's scope."""

    __slots__ = ("_dead", "_pid", "_sending", "_sock", "owner")

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.owner: AbortScope | None = None
        self._pid = os.getpid()
        self._dead = False
        """Shut down by a scope's abort: never to carry another request."""
        self._sending = False
        """A request is being written (writes since the last read)."""

    def _claim(self) -> None:
        scope = current_scope()
        if scope is not None and self.owner is not scope:
            scope.claim(self)

    def shutdown(self) -> None:
        """Wake whoever blocks on this connection (its owner's abort)."""
        self._dead = True
        shutdown_socket(self._sock)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self._sending = False
        self._claim()
        try:
            if self._sock.gettimeout() != timeout:  # settimeout is a syscall
                self._sock.settimeout(timeout)
            return self._sock.recv(max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ReadError(str(exc)) from exc

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        if not self._sending:
            # A request starts. httpcore's pool may have handed over a connection
            # it saw idle just before a cancel shut it down, or closed it since (it
            # checks and assigns apart): this error makes it take another.
            if self._dead or self._sock.fileno() == -1:
                raise httpcore.ConnectionNotAvailable()
            self._sending = True
        self._claim()
        try:
            self._sock.settimeout(timeout)
            self._sock.sendall(buffer)
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.WriteError(str(exc)) from exc

    def close(self) -> None:
        self._sock.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        # The handshake is a step of its own, on a socket the scope already
        # owns, so a cancel during a stalled handshake wakes it too.
        with _connecting(self.close):
            self._claim()
            tls = ssl_context.wrap_socket(
                self._sock,
                server_hostname=server_hostname,
                do_handshake_on_connect=False,
            )
            self._sock = tls
            tls.settimeout(timeout)
            tls.do_handshake()
        return self

    def get_extra_info(self, info: str) -> Any:
        sock = self._sock
        if info == "ssl_object" and isinstance(sock, ssl.SSLSocket):
            return sock._sslobj  # type: ignore[attr-defined]  # httpcore's own use
        if info == "client_addr":
            return sock.getsockname()
        if info == "server_addr":
            return sock.getpeername()
        if info == "socket":
            return sock
        if info == "is_readable":
            # Dead if inherited across fork(). httpcore asks this, unlocked, of a
            # connection it saw idle; a request may have claimed it since, before
            # writing: if its answer made the socket readable, the claim shows
            # (socket first, owner next).
            return (
                os.getpid() != self._pid
                or self._dead
                or (socket_readable(sock) and self.owner is None)
            )
        return None


@contextlib.contextmanager
def _connecting(close: Callable[[], None]) -> Iterator[None]:
    """On failure close, then raise the scope's stop reason (a failure it caused
    is not the server's), else the error as httpcore's connect error."""
    try:
        yield
    except BaseException as exc:
        close()
        scope = current_scope()
        if scope is not None:
            scope.check()
        if isinstance(exc, TimeoutError):
            raise httpcore.ConnectTimeout(str(exc)) from exc
        if isinstance(exc, OSError):
            raise httpcore.ConnectError(str(exc)) from exc
        raise


class TrackingBackend(httpcore.NetworkBackend):
    """Creates socket streams the caller's scope claims before they block."""

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            infos = resolve(host, port, 0, socket.SOCK_STREAM, timeout=timeout)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ConnectError(f"{host}: {exc}") from exc
        error: Exception = httpcore.ConnectError(f"no address for {host}")
        for family, kind, proto, _, address in infos:
            try:
                return self._connect(
                    socket.socket(family, kind, proto),
                    address,
                    timeout,
                    socket_options,
                    local_address,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc  # the next address, as socket.create_connection does
        raise error

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        return self._connect(sock, path, timeout, socket_options)

    @staticmethod
    def _connect(
        sock: socket.socket,
        address: Any,
        timeout: float | None,
        options: Iterable[Any] | None,
        local_address: str | None = None,
    ) -> SocketStream:
        stream = SocketStream(sock)
        with _connecting(sock.close):
            stream._claim()
            for option in options or ():
                sock.setsockopt(*option)
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if local_address is not None:
                sock.bind((local_address, 0))
            sock.settimeout(timeout)
            connect(sock, address)  # a cancel ends it, whenever it lands
        return stream

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)
