"""The handle a caller holds for one background stream, and the thread it owns."""

from __future__ import annotations

import atexit
import concurrent.futures
import itertools
import logging
import threading
import time
import weakref
from dataclasses import replace
from types import TracebackType

from ._abort import AbortScope
from ._accumulator import Accumulator
from ._dispatch import Dispatcher, Pumped
from ._errors import CallbackError, StreamError
from ._result import ChatResult
from ._worker import Callbacks, CancelRequest, Job

log = logging.getLogger("ollama_stream_sync")

_names = itertools.count(1)
_live: weakref.WeakSet[StreamHandle] = weakref.WeakSet()
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


def result_or_cancel(handle: StreamHandle, grace: float) -> ChatResult:
    """Wait for ``handle``'s result; if the wait is interrupted, cancel and re-raise.

    This is what the blocking calls do: Ctrl-C in the waiting thread stops the
    stream (and waits up to ``grace`` for its worker) before ``KeyboardInterrupt``
    propagates.
    """
    pumped = handle.dispatcher if isinstance(handle.dispatcher, Pumped) else None
    try:
        if pumped is not None:
            # Run the callbacks here, on the waiting thread. The wake-up makes
            # sure we return even if another thread pumps the final callback.
            handle.add_done_callback(lambda _: handle.dispatcher.dispatch(_noop))
            while not handle.done():
                pumped.pump(timeout=None)
        return handle.result()
    except StreamError:
        raise
    except BaseException:
        handle.cancel()
        if pumped is not None:
            deadline = time.monotonic() + grace
            while not handle.done() and time.monotonic() < deadline:
                pumped.pump(timeout=max(0.0, deadline - time.monotonic()))
        handle.join(grace)
        raise


def _noop() -> None:
    pass


class StreamHandle(concurrent.futures.Future[ChatResult]):
    """A stream running on its own worker thread; a ``concurrent.futures.Future``.

    ``result()`` waits and re-raises the stream's error in your thread;
    ``cancel()`` stops the stream at once from any thread; ``snapshot()`` reads
    the partial result at any moment. Works with ``concurrent.futures.wait``
    and ``as_completed``.

    Example::

        handle = client.start_chat("qwen3", messages, on_content=print)
        handle.cancel()                     # e.g. from a Stop button
        print(handle.result().cancelled)    # True; the partial text is kept
    """

    def __init__(
        self,
        job: Job,
        callbacks: Callbacks,
        dispatcher: Dispatcher,
        *,
        label: str = "",
    ) -> None:
        super().__init__()
        self._job = job
        self._label = label
        self._callbacks = callbacks
        self._dispatcher = dispatcher
        self._acc = Accumulator()
        self._scope = AbortScope()
        # Guards _committed: the one moment the outcome is fixed, so a cancel
        # either lands before it (and the result says cancelled) or is refused.
        self._commit_lock = threading.Lock()
        self._committed = False
        self._phase = "pending"
        self.name = f"ollama-stream-{next(_names)}"
        # Daemon, on purpose: a program whose main code ends must not wait for
        # a model to finish talking. The atexit hook cancels live streams and
        # gives them EXIT_GRACE to close their sockets.
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    def _start(self) -> StreamHandle:
        global _atexit_registered  # noqa: PLW0603  # registered once, lazily
        with _live_lock:
            if not _atexit_registered:
                atexit.register(_cancel_all_at_exit)
                _atexit_registered = True
            _live.add(self)
        self._thread.start()
        return self

    # -- the worker side -------------------------------------------------

    def _run(self) -> None:
        self.set_running_or_notify_cancel()
        self._phase = "running"
        result: ChatResult | None = None
        error: BaseException | None = None
        try:
            result = self._job(self._acc, self._scope, self._dispatcher)
        except BaseException as exc:  # noqa: BLE001  # the future must always resolve
            error = exc
        with self._commit_lock:
            self._committed = True
            if isinstance(self._scope.reason, CancelRequest):
                self._acc.mark_cancelled()
                base = result if result is not None else self._acc.snapshot()
                result, error = replace(base, cancelled=True), None
        self._dispatcher.dispatch(lambda: self._finish(result, error))

    def _finish(self, result: ChatResult | None, error: BaseException | None) -> None:
        cbs = self._callbacks
        try:
            if error is None and result is not None:
                if cbs.on_done is not None:
                    try:
                        cbs.on_done(result)
                    except Exception as exc:  # noqa: BLE001  # becomes CallbackError
                        error = CallbackError(f"on_done callback raised {exc!r}")
                        error.__cause__ = exc
                        error.partial = result
            elif isinstance(error, StreamError) and cbs.on_error is not None:
                try:
                    cbs.on_error(error)
                except Exception:  # the stream's own error wins; this one is logged
                    log.exception("%s: on_error callback raised", self.name)
        finally:
            with _live_lock:
                _live.discard(self)
            if error is None and result is not None:
                self._phase = "cancelled" if result.cancelled else "finished"
                self.set_result(result)
            else:
                self._phase = "failed"
                self.set_exception(error or RuntimeError("stream ended without result"))

    # -- the caller side -------------------------------------------------

    def cancel(self) -> bool:
        """Stop the stream now, in any phase; safe from any thread.

        Returns:
            True if the stream is (or already was) cancelled; False if it had
            already finished or failed. ``on_done`` then fires with
            ``result.cancelled`` true and the partial text kept.
        """
        with self._commit_lock:
            if not self._committed:
                self._scope.abort(CancelRequest("cancelled by the caller"))
        return self.cancelled()

    def cancelled(self) -> bool:
        """True if a ``cancel()`` stopped this stream."""
        return isinstance(self._scope.reason, CancelRequest)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the stream has ended; return whether it has."""
        done, _ = concurrent.futures.wait([self], timeout)
        return bool(done)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the worker thread itself to exit; return whether it has."""
        if self._thread.ident is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def snapshot(self) -> ChatResult:
        """A consistent copy of the partial result, from any thread at any moment."""
        return self._acc.snapshot()

    @property
    def dispatcher(self) -> Dispatcher:
        """Where this stream's callbacks run."""
        return self._dispatcher

    @property
    def thread(self) -> threading.Thread:
        """The worker thread that runs this stream."""
        return self._thread

    def __enter__(self) -> StreamHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cancel()
        self.join()

    def __repr__(self) -> str:
        return f"<StreamHandle {self.name} {self._phase} {self._label}>"
