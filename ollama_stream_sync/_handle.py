"""The handle a caller holds for one background stream, and the thread it owns."""

from __future__ import annotations

import atexit
import concurrent.futures
import itertools
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from typing_extensions import Self

from ._cancel import AbortScope, Cancelled
from ._delivery import Delivery, EventSink, PartialParser
from ._dispatch import Dispatcher
from ._errors import DispatchError, StreamError
from ._events import PhaseName
from ._observe import Observer
from ._result import ChatResult, ModelResult, Progress
from ._run import StreamContext
from ._state import ChatState, ProgressState, Watched

Job = Callable[[StreamContext], Any]
"""What a handle's worker runs (one stream or several); it returns the result."""

R = TypeVar("R")
S = TypeVar("S")

_names = itertools.count(1)
_live: weakref.WeakSet[BaseHandle[Any, Any]] = weakref.WeakSet()
# Guards _live and _atexit_registered: handles start and finish on many threads.
_live_lock = threading.Lock()
_atexit_registered = False

EXIT_GRACE = 1.0
"""Seconds the interpreter waits at exit for cancelled streams to close sockets."""


def _cancel_all_at_exit() -> None:
    with _live_lock:
        handles = list(_live)
    for handle in handles:
        handle.cancel()
    deadline = time.monotonic() + EXIT_GRACE
    for handle in handles:
        handle.join(max(0.0, deadline - time.monotonic()))


def _after_fork_in_child() -> None:
    # The child has none of the parent's threads, and owns none of its
    # streams: at exit it must not cancel them (and shut down shared sockets).
    global _live_lock  # noqa: PLW0603  # a lock held at fork time stays held
    _live_lock = threading.Lock()
    _live.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def wait_result(handle: BaseHandle[R, Any], grace: float) -> R:
    """What the blocking calls do: wait for the result, running the callbacks here
    (until the terminal one ran) when a queued dispatcher lets this thread run them.
    Ctrl-C cancels the stream and waits up to ``grace`` for it before propagating.
    """
    queued = handle._delivery.queued
    if queued is not None and not queued.delivers_here():
        queued = None
    delivered = handle._delivery.delivered.is_set
    try:
        if queued is not None:
            queued.pump_until(delivered, None)
        return handle.result()
    except StreamError:
        raise
    except BaseException:
        handle.cancel()
        if queued is not None:
            queued.pump_until(delivered, grace)
        handle.join(grace)
        raise


class BaseHandle(concurrent.futures.Future[R], Generic[R, S]):
    """A job running on its own worker thread; a ``concurrent.futures.Future``.

    ``R`` is what ``result()`` returns, ``S`` what ``snapshot()`` returns. See
    ``StreamHandle`` (chats) and ``ProgressHandle`` (pull, push, create).
    """

    def __init__(
        self,
        job: Job,
        callbacks: Mapping[str, Any],
        dispatcher: Dispatcher,
        *,
        state: Watched[S],
        label: str = "",
        coalesce_interval: float | None = None,
        sink: EventSink | None = None,
        partial: Callable[[], PartialParser] | None = None,
        observer: Observer | None = None,
        grace: float = 5.0,
    ) -> None:
        super().__init__()
        self._job = job
        self._grace = grace
        """Seconds a blocking caller waits for the worker after cancelling it."""
        self._label = label
        self._stream_state = state
        self._scope = AbortScope()
        self._delivery = Delivery(
            callbacks,
            dispatcher,
            self._scope,
            sink=sink,
            coalesce_interval=coalesce_interval,
            partial=partial,
            on_change=state.notify,
            observer=observer,
        )
        self._ctx = StreamContext(state, self._scope, self._delivery, observer)
        # Guards _committed: the one moment the outcome is fixed, so a cancel
        # either lands before it (and the result says cancelled) or is refused.
        self._commit_lock = threading.Lock()
        self._committed = False
        self._status = "pending"
        self.name: str = f"ollama-stream-{next(_names)}"
        """The worker thread's name, also shown in repr."""
        # Daemon, on purpose: a program whose main code ends must not wait for
        # a model to finish talking. The atexit hook cancels live streams and
        # gives them EXIT_GRACE to close their sockets.
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    def _start(self) -> Self:
        global _atexit_registered  # noqa: PLW0603  # registered once, lazily
        with _live_lock:
            if not _atexit_registered:
                atexit.register(_cancel_all_at_exit)
                _atexit_registered = True
            _live.add(self)
        self._thread.start()
        return self

    def _run(self) -> None:
        self.set_running_or_notify_cancel()
        self._status = "running"
        result: Any = None
        error: BaseException | None = None
        try:
            result = self._job(self._ctx)
        except BaseException as exc:  # noqa: BLE001  # the future must always resolve
            error = exc
        result, error = self._commit(result, error)
        observer = self._ctx.observer
        if observer is not None:
            observer.end(result, error)
        try:
            self._delivery.finish(
                result, error, self._resolve, self._stream_state.snapshot
            )
        finally:
            with _live_lock:
                _live.discard(self)
            self._stream_state.notify()

    def _commit(
        self, result: Any, error: BaseException | None
    ) -> tuple[Any, BaseException | None]:
        """Fix the outcome: a cancel that landed wins; a delivery failure counts."""
        with self._commit_lock:
            self._committed = True
            if isinstance(self._scope.reason, Cancelled):
                return self._stream_state.cancelled_result(), None  # type: ignore[attr-defined]
        failed = self._delivery.error
        if failed is not None and error is not failed:
            failed.partial = self._stream_state.snapshot()
            return None, failed
        if error is not None and not isinstance(error, StreamError):
            # Our bug or a stray BaseException: still a typed error, cause kept,
            # so on_error fires and nothing hangs.
            wrapped = StreamError(f"unexpected {type(error).__name__}: {error}")
            wrapped.__cause__ = error
            wrapped.partial = self._stream_state.snapshot()
            return None, wrapped
        return result, error

    def _resolve(self, result: Any, error: BaseException | None) -> None:
        if error is None and result is not None:
            cancelled = bool(getattr(result, "cancelled", False))
            self._status = "cancelled" if cancelled else "finished"
            self.set_result(result)
        else:
            self._status = "failed"
            self.set_exception(error or RuntimeError("stream ended without result"))

    def result(self, timeout: float | None = None) -> R:
        """Wait for the final result and return it, or raise the error.

        Unlike a plain ``Future``: a cancelled stream returns its partial result
        (``cancelled`` true) instead of raising ``CancelledError``; and under a
        queued dispatcher, a callback that raised after the stream ended makes
        ``result()`` raise that ``CallbackError`` from then on.

        Raises:
            StreamError: the failure, with ``.partial``.
            TimeoutError: ``timeout`` passed first.
        """
        value = super().result(timeout)
        late = self._delivery.error
        cancelled = bool(getattr(value, "cancelled", False))
        if late is not None and not (cancelled and isinstance(late, DispatchError)):
            raise late
        return value

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The stream's error (as ``result()`` would raise it), or None."""
        error = super().exception(timeout)
        if error is not None:
            return error
        try:
            self.result(0)
        except StreamError as late:
            return late
        return None

    def cancel(self) -> bool:
        """Stop the stream now, in any phase; safe from any thread.

        Returns:
            True if the stream is (or already was) cancelled: ``on_done`` then
            fires with ``result.cancelled`` true and the partial result kept.
            False if its answer was already complete (it is delivered whole, and
            ``done()`` may turn true a moment later) or the stream failed.
        """
        with self._commit_lock:
            if not self._committed:
                self._scope.abort(Cancelled("cancelled by the caller"))
        return self.cancelled()

    def cancelled(self) -> bool:
        """True if a ``cancel()`` stopped this stream."""
        return isinstance(self._scope.reason, Cancelled)

    def add_done_callback(  # fn gets this handle, not a bare Future
        self, fn: Callable[[Self], object]
    ) -> None:
        """Call ``fn(handle)`` when the stream ends (at once if it has).

        It runs on the worker thread (or here, if already done), like
        ``Future.add_done_callback``; use ``on_done`` to run on your dispatcher.
        """
        super().add_done_callback(fn)  # type: ignore[arg-type]  # it is one

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the stream has ended; return whether it has."""
        done, _ = concurrent.futures.wait([self], timeout)
        return bool(done)

    def wait_for(
        self, predicate: Callable[[S], bool], timeout: float | None = None
    ) -> bool:
        """Wait until ``predicate(handle.snapshot())`` holds; return whether it does.

        Woken by every change of the stream, so nothing polls. Returns False if
        ``timeout`` passes or the stream ends without the predicate holding.

        Example::

            handle.wait_for(lambda r: "Paris" in r.content, timeout=5)
        """
        return self._stream_state.wait_for(predicate, timeout, self.done)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the worker thread itself to exit; return whether it has."""
        if self._thread.ident is None:
            return True
        if self._thread is threading.current_thread():
            return False  # a callback of this very stream: it ends after returning
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def snapshot(self) -> S:
        """A consistent copy of the partial result, from any thread at any moment."""
        return self._stream_state.snapshot()

    @property
    def phase(self) -> PhaseName:
        """Where the stream is now: "connecting", "waiting", "answering", "done"...

        Thread-safe, at any moment. See the README's "Phases".
        """
        return self._delivery.phase

    @property
    def dispatcher(self) -> Dispatcher:
        """Where this stream's callbacks run."""
        return self._delivery.dispatcher

    @property
    def thread(self) -> threading.Thread:
        """The worker thread that runs this stream."""
        return self._thread

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.cancel()
        self.join()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self._status} {self._label}>"


class StreamHandle(BaseHandle[ChatResult, ChatResult]):
    """A chat or generate stream on its own worker thread; a ``Future`` that works
    with ``concurrent.futures.wait`` and ``as_completed``. It resolves when the
    stream ends, whatever the dispatcher: completion never waits for callbacks.

    Example::

        handle = client.start_chat("qwen3", messages, on_content=print)
        handle.cancel()                     # e.g. from a Stop button
        print(handle.result().cancelled)    # True; the partial text is kept
    """

    _stream_state: ChatState


class ProgressHandle(BaseHandle[ModelResult, Progress]):
    """A pull, push or create on its own worker thread (a ``Future``): ``snapshot()``
    is the latest ``Progress``, as is an error's ``.partial``; after ``cancel()``
    the server keeps what it downloaded, and a later pull resumes.

    Example::

        handle = client.start_pull("qwen3", on_progress=show)
        handle.cancel()  # the Cancel button
        print(handle.result().cancelled)
    """

    _stream_state: ProgressState
