"""Stopping a thread that is blocked in a socket call, from another thread.

A worker blocked in ``recv()`` (a silent server) or ``connect()`` sees nothing
until data or a timeout arrives, and ``close()`` from another thread does not
wake it. ``shutdown(SHUT_RDWR)`` does, at once. ``AbortScope`` remembers which
socket one stream is using so that ``abort()`` can shut it down; the transport
attaches sockets to the scope that the worker bound to its thread.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator


class Aborted(Exception):
    """Raised inside the worker when its scope was aborted; carries the reason."""

    def __init__(self, reason: BaseException) -> None:
        super().__init__(str(reason))
        self.reason = reason


class AbortScope:
    """The abort switch of one stream.

    ``abort`` ends the whole stream (cancel, deadline, a failed callback);
    ``abort_attempt`` ends only the current attempt (a first-token or read
    timeout), which a retry may follow after ``begin_attempt``.
    """

    __slots__ = ("_attempt_reason", "_lock", "_reason", "_sock", "aborted_event")

    def __init__(self) -> None:
        # Guards _sock and both reasons, so an abort and an attach never miss
        # each other.
        self._lock = threading.Lock()
        self._sock: socket.socket | FdSocket | None = None
        self._reason: BaseException | None = None
        self._attempt_reason: BaseException | None = None
        self.aborted_event = threading.Event()
        """Set by ``abort`` (not by ``abort_attempt``): wakes a retry backoff."""

    @property
    def reason(self) -> BaseException | None:
        """Why the whole stream was aborted, or ``None`` while it is live."""
        return self._reason

    @property
    def attempt_reason(self) -> BaseException | None:
        """Why the current attempt was aborted, if it was."""
        return self._attempt_reason

    def begin_attempt(self) -> None:
        """Start a fresh attempt: forget the previous attempt's abort."""
        with self._lock:
            self._attempt_reason = None

    def abort_attempt(self, reason: BaseException) -> bool:
        """End the current attempt (its socket is shut down); False if already ended."""
        with self._lock:
            if self._reason is not None or self._attempt_reason is not None:
                return False
            self._attempt_reason = reason
            sock, self._sock = self._sock, None
        if sock is not None:
            _shutdown(sock)
        return True

    def abort(self, reason: BaseException) -> bool:
        """Flip the switch and shut down the socket in use; False if already aborted."""
        with self._lock:
            if self._reason is not None:
                return False
            self._reason = reason
            sock = self._sock
            self._sock = None
        self.aborted_event.set()
        if sock is not None:
            _shutdown(sock)
        return True

    def attach(self, sock: socket.socket | FdSocket) -> None:
        """Make ``sock`` the one an abort shuts down; raise ``Aborted`` if too late."""
        with self._lock:
            reason = self._reason or self._attempt_reason
            if reason is None:
                self._sock = sock
                return
        _shutdown(sock)
        raise Aborted(reason)

    def attach_if_new(self, sock: socket.socket | FdSocket) -> None:
        """``attach`` unless ``sock`` is already attached (the cheap path per read)."""
        if self._sock is not sock:
            self.attach(sock)

    def detach(self) -> None:
        """Forget the socket (it goes back to the pool and must not be shut down)."""
        with self._lock:
            self._sock = None

    def check(self) -> None:
        """Raise ``Aborted`` if the stream or the current attempt was aborted."""
        reason = self._reason or self._attempt_reason
        if reason is not None:
            raise Aborted(reason)


class FdSocket:
    """A socket known by its descriptor, for sockets wrapped (TLS) after we saw them.

    ``ssl.wrap_socket`` detaches the plain socket object it wraps; the connection
    lives on under the same descriptor, so a shutdown goes to a duplicate of it.
    """

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd


def _shutdown(sock: socket.socket | FdSocket) -> None:
    # The plain socket method, even on an SSLSocket: SSLSocket.shutdown would
    # clear the TLS object under the worker's feet. Errors mean already closed.
    with contextlib.suppress(OSError):
        if isinstance(sock, FdSocket):
            dup = socket.socket(fileno=os.dup(sock.fd))
            try:
                dup.shutdown(socket.SHUT_RDWR)
            finally:
                dup.close()
        elif sock.fileno() != -1:
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


_local = threading.local()


def current_scope() -> AbortScope | None:
    """The scope bound to this thread, if any."""
    return getattr(_local, "scope", None)


@contextlib.contextmanager
def bound(scope: AbortScope) -> Iterator[AbortScope]:
    """Bind ``scope`` to this thread while the block runs its network calls."""
    previous = getattr(_local, "scope", None)
    _local.scope = scope
    try:
        yield scope
    finally:
        scope.detach()
        _local.scope = previous
