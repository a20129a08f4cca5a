"""Stopping a thread blocked in a socket call, from another thread: socket ownership.

``close()`` from another thread does not wake a blocked ``recv()`` or ``connect()``;
``shutdown(SHUT_RDWR)`` does. Each stream has an ``AbortScope`` that *claims* the
connection it uses, and ``abort()`` shuts down what it owns at that moment. A
scope owns a connection only between its claim and its release (or another
scope's claim), so a stale abort never reaches a socket another stream uses.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import itertools
import math
import os
import select
import socket
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

_T = TypeVar("_T")

# Guards every scope's reasons, seal and held connection, and every
# ``Claimable.owner``: a claim and an abort never miss each other. Never hot.
_lock = threading.Lock()


# A lock held at fork() stays held in the child, where closing an inherited
# pooled connection (urllib3's finalizers) would then hang. The child owns none
# of the parent's streams.
def _new_lock_in_child() -> None:
    global _lock  # noqa: PLW0603  # a lock held at fork time stays held
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_new_lock_in_child)


def owner_lock() -> threading.Lock:
    """The lock that guards ownership (for a transport's own owner fields)."""
    return _lock


class Cancelled(Exception):
    """Raised in the worker by ``cancel()``: the one stop that is not an error."""


class Claimable(Protocol):
    """A connection a scope can own: ``shutdown()`` wakes whoever blocks on it."""

    owner: AbortScope | None

    def shutdown(self) -> None:
        """Shut the connection down now (from any thread); never raise."""
        ...


class AbortScope:
    """The abort switch of one stream, and the connection it currently owns.

    ``abort`` ends the whole stream (cancel, deadline, a failed callback);
    ``abort_attempt`` ends only the current attempt (a first-token or read
    timeout), which a retry may follow after ``begin_attempt``. ``seal`` fixes
    the outcome once the answer is complete: later aborts are refused.
    """

    __slots__ = (
        "_attempt_reason",
        "_cond",
        "_held",
        "_pid",
        "_reason",
        "_sealed",
        "aborted_event",
        "on_sent",
    )

    def __init__(self) -> None:
        self._held: Claimable | None = None
        self._reason: BaseException | None = None
        self._attempt_reason: BaseException | None = None
        self._sealed = False
        self._pid = os.getpid()  # never shut down a socket from a forked child
        self._cond = threading.Condition(threading.Lock())  # wakes ``wait_until``
        self.aborted_event = threading.Event()
        """Set by ``abort`` (not by ``abort_attempt``): wakes a retry backoff."""
        self.on_sent: Callable[[], None] = lambda: None
        """What a transport calls once the request is sent (see ``Transport``)."""

    @property
    def reason(self) -> BaseException | None:
        """Why the whole stream was aborted, or ``None`` while it is live."""
        return self._reason

    @property
    def stopped(self) -> BaseException | None:
        """Why the stream or its current attempt was aborted, or ``None``."""
        return self._reason or self._attempt_reason

    def begin_attempt(self) -> None:
        """Start a fresh attempt: forget the previous attempt's abort."""
        with _lock:
            self._attempt_reason = None

    def seal(self) -> bool:
        """Refuse every later abort (the answer is complete); False if too late."""
        with _lock:
            if self.stopped is not None:
                return False
            self._sealed = True
            return True

    def seal_with(
        self, step: Callable[[], _T], should_seal: Callable[[_T], bool]
    ) -> _T:
        """Run ``step`` and seal if ``should_seal(its result)``, as one step: an
        abort lands before (its reason is raised) or is refused after. ``step``
        must be short and must not use this scope."""
        with _lock:
            self.check()
            result = step()
            if should_seal(result):
                self._sealed = True
        return result

    def abort_attempt(self, reason: BaseException) -> bool:
        """End the current attempt; False if it had already ended or was sealed."""
        with _lock:
            if self._sealed or self.stopped is not None:
                return False
            self._attempt_reason = reason
            self._shutdown_held_locked()
        self.notify()
        return True

    def abort(self, reason: BaseException) -> bool:
        """End the stream and shut down what it owns; False if already ended."""
        with _lock:
            if self._sealed or self._reason is not None:
                return False
            self._reason = reason
            self._shutdown_held_locked()
        self.aborted_event.set()
        self.notify()
        return True

    def interrupt(self) -> None:
        """Shut down what the scope owns now, recording no reason (a drain's bound)."""
        with _lock:
            self._shutdown_held_locked()

    def _shutdown_held_locked(self) -> None:
        held = self._held
        if held is not None and held.owner is self and os.getpid() == self._pid:
            held.shutdown()

    def claim(self, conn: Claimable) -> None:
        """Own ``conn`` until released or claimed by another scope.

        Raises:
            The abort's reason: the stream or attempt was already aborted;
                ``conn`` is shut down so that its owner (the transport) closes it.
        """
        with _lock:
            reason = self.stopped
            previous = self._held
            if previous is not None and previous is not conn and previous.owner is self:
                previous.owner = None
            conn.owner = self
            self._held = conn
            if reason is not None:
                conn.shutdown()
        if reason is not None:
            raise reason

    def release(self, conn: Claimable | None = None) -> None:
        """Give up ``conn`` (or whatever is held) before it can be reused."""
        with _lock:
            held = self._held
            if held is None or (conn is not None and held is not conn):
                return
            if held.owner is self:
                held.owner = None
            self._held = None

    def check(self) -> None:
        """Raise the reason if the stream or the current attempt was aborted."""
        reason = self.stopped
        if reason is not None:
            raise reason

    def wait_until(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        """Wait until ``predicate()`` (its setter calls ``notify``) or an abort."""
        with self._cond:
            self._cond.wait_for(
                lambda: predicate() or self.stopped is not None, timeout
            )
            return predicate()

    def notify(self) -> None:
        """Wake ``wait_until`` so that it re-checks its predicate."""
        with self._cond:
            self._cond.notify_all()


class SocketClaim:
    """A plain socket as a ``Claimable``: for a transport we cannot track from
    the start (a caller's own), claimed once its response headers arrived."""

    __slots__ = ("owner", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.owner: AbortScope | None = None

    def shutdown(self) -> None:
        """Shut the socket down, unless it is already closed."""
        if self.sock.fileno() != -1:
            shutdown_socket(self.sock)


def disown(conn: Claimable) -> None:
    """End any claim on ``conn`` (any thread), before it goes back to a pool."""
    with _lock:
        owner = conn.owner
        if owner is not None:
            conn.owner = None
            if owner._held is conn:
                owner._held = None


def shutdown_socket(sock: socket.socket) -> None:
    """Shut down ``sock`` both ways (an error: it is gone). The plain socket
    method even on TLS: ``SSLSocket.shutdown`` would clear the TLS object under
    the feet of the thread using it."""
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


_local = threading.local()


def current_scope() -> AbortScope | None:
    """The scope bound to this thread while it does a stream's network I/O."""
    return getattr(_local, "scope", None)


def bind(scope: AbortScope | None) -> None:
    """Bind ``scope`` to this thread (``None`` unbinds); never around user
    callbacks, whose own HTTP requests the stream must not claim."""
    _local.scope = scope


def unbound(fn: Callable[..., _T], *args: Any) -> _T:
    """Run user code (a callback, a tool) with no scope bound, then rebind (a plain
    call, not a context manager: it runs once per callback)."""
    scope = getattr(_local, "scope", None)
    _local.scope = None
    try:
        return fn(*args)
    finally:
        _local.scope = scope


_resolvers = itertools.count(1)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def resolve(
    host: str,
    port: int,
    family: int = 0,
    kind: int = socket.SOCK_STREAM,
    *,
    timeout: float | None = None,
) -> list[tuple[Any, ...]]:
    """``socket.getaddrinfo`` that an abort of the bound scope or a timeout cut short.

    A name is looked up on a helper thread while the worker waits on its scope.

    Raises:
        The abort's reason, socket.gaierror, or TimeoutError.
    """
    scope = current_scope()
    if scope is None or _is_ip(host):
        return socket.getaddrinfo(host, port, family, kind)
    box: list[Any] = []

    def lookup() -> None:
        try:
            box.append(socket.getaddrinfo(host, port, family, kind))
        except BaseException as exc:  # noqa: BLE001  # handed to the waiting worker
            box.append(exc)
        finally:
            scope.notify()

    # Daemon and unjoined, on purpose: getaddrinfo cannot be interrupted, and a
    # cancelled stream must not wait for it. The thread touches no network.
    threading.Thread(
        target=lookup, name=f"ollama-resolve-{next(_resolvers)}", daemon=True
    ).start()
    found = scope.wait_until(lambda: bool(box), timeout)
    scope.check()
    if not found:
        raise TimeoutError(f"resolving {host!r} took longer than {timeout}s")
    if isinstance(box[0], BaseException):
        raise box[0]
    return list(box[0])


_IN_PROGRESS = frozenset({errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN})


def connect(sock: socket.socket, address: Any) -> None:
    """``sock.connect(address)`` that an abort of the bound scope ends, whenever.

    The socket must already be claimed. A ``shutdown()`` made just before a
    connect starts is lost (ENOTCONN; the connect then waits its whole timeout),
    so the connect starts non-blocking, the scope is checked, and only then is
    it waited for: an abort after the check wakes the wait.

    Raises:
        The abort's reason, TimeoutError (the socket's timeout), or OSError.
    """
    scope = current_scope()
    if (
        scope is None
        or sock.family not in (socket.AF_INET, socket.AF_INET6)
        or not hasattr(select, "poll")
    ):
        sock.connect(address)
        return
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        err = sock.connect_ex(address)
        if err in _IN_PROGRESS:
            scope.check()
            poller = select.poll()
            poller.register(sock, select.POLLOUT | select.POLLERR | select.POLLHUP)
            wait = -1 if timeout is None else math.ceil(timeout * 1000)
            if not poller.poll(wait):
                raise TimeoutError("timed out")
            scope.check()
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, os.strerror(err))
    finally:
        sock.settimeout(timeout)
