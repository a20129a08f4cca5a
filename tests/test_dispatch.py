"""Dispatchers and coalescing: which thread runs a callback, in what order, when.

Delivery is the engine's: it runs once, on httpx. The GUI dispatchers run on a
real Tk (Xvfb) and Qt (offscreen); the stress of every pumping pattern is in
``test_dispatch_stress.py``, failing dispatchers and callbacks in
``test_dispatch_failures.py``, whole GUIs in ``test_dispatch_gui.py``.
"""

from __future__ import annotations

import functools
import gc
import sys
import threading
import weakref
from typing import Any

import pytest

from ollama_stream_sync import (
    CallbackError,
    CallLaterDispatcher,
    QtDispatcher,
    QueueDispatcher,
    StreamingClient,
    TkDispatcher,
)
from ollama_stream_sync.testing import (
    Chunk,
    DoneLine,
    FakeOllama,
    Stall,
    reply,
    tool_call,
)

from .support import USER, WAIT
from .support.clients import Recorder, new_client
from .support.dispatchers import Toolkit
from .support.gui import qt_run_until

SCRIPT = reply("one two three", thinking="a b", tool_calls=[tool_call("f", {"x": 1})])
EXPECTED_KINDS = ["thinking"] * 2 + ["content"] * 3 + ["tool", "done"]


def test_callbacks_run_one_at_a_time_on_the_worker_thread(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue(reply(" ".join(["w"] * 200), thinking="t " * 50))
    threads: set[str] = set()
    active = 0
    overlaps = 0
    lock = threading.Lock()

    def on_delta(_: str) -> None:
        nonlocal active, overlaps
        with lock:
            active += 1
            overlaps += active > 1
        threads.add(threading.current_thread().name)
        with lock:
            active -= 1

    handle = client.start_chat("m", USER, on_thinking=on_delta, on_content=on_delta)
    handle.result(5)
    assert threads == {handle.thread.name}
    assert handle.thread.name.startswith("ollama-stream-")
    assert overlaps == 0


def test_queue_dispatcher_runs_callbacks_only_when_pumped(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue(SCRIPT)
    pump = QueueDispatcher()
    log = Recorder()
    handle = client.start_chat("m", USER, dispatcher=pump, **log.kwargs())
    assert handle.join(WAIT)  # the worker is done; nothing ran yet
    # The handle resolves on the worker: completion never waits for pumping.
    assert log.events == [] and handle.done()
    assert handle.result().content == "one two three"
    assert pump.pending == len(EXPECTED_KINDS)
    assert pump.pump() == len(EXPECTED_KINDS)
    assert log.kinds() == EXPECTED_KINDS
    assert log.threads == {threading.get_ident()}


def test_blocking_chat_pumps_its_queue_dispatcher(server: FakeOllama) -> None:
    server.enqueue(SCRIPT)
    log = Recorder()
    with new_client(server.url, dispatcher=QueueDispatcher()) as client:
        result = client.chat("m", USER, **log.kwargs())
    assert log.kinds() == EXPECTED_KINDS
    assert log.threads == {threading.get_ident()}  # the caller's own thread
    assert result.content == log.text("content")


def test_queue_dispatcher_pump_timeout_waits_for_work() -> None:
    pump = QueueDispatcher()
    assert pump.pump(timeout=0.01) == 0
    threading.Timer(0.01, lambda: pump.dispatch(lambda: None)).start()
    assert pump.pump(timeout=WAIT) == 1


def test_call_later_dispatcher_runs_on_the_toolkit_thread_in_batches(
    server: FakeOllama, client: StreamingClient, toolkit: Toolkit
) -> None:
    server.enqueue(reply(" ".join(["w"] * 300)))
    log = Recorder()
    dispatcher = CallLaterDispatcher(toolkit.call_after)
    client.start_chat("m", USER, dispatcher=dispatcher, **log.kwargs())
    assert log.ended.wait(WAIT)
    assert log.threads == {toolkit.thread.ident}
    assert log.kinds() == ["content"] * 300 + ["done"]
    assert toolkit.scheduled <= 301  # at most one scheduled drain per callback


def test_coalescing_merges_deltas_keeps_order_and_drops_nothing(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue(SCRIPT)
    log = Recorder()
    result = client.chat("m", USER, coalesce_interval=60.0, **log.kwargs())
    assert log.kinds() == ["thinking", "content", "tool", "done"]
    assert log.text("thinking") == result.thinking == "a b"
    assert log.text("content") == result.content == "one two three"


def test_coalescing_keeps_field_switches_in_order(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue(
        [
            Chunk(thinking="t1"),
            Chunk(thinking="t2"),
            Chunk(thinking="t3", content="c1"),
            Chunk(content="c2"),
            Chunk(tool_calls=[tool_call("f")]),
            Chunk(content="c3"),
            DoneLine(content="c4"),
        ]
    )
    log = Recorder()
    client.chat("m", USER, coalesce_interval=60.0, **log.kwargs())
    assert [(k, v) for k, v in log.events if k != "tool"][:-1] == [
        ("thinking", "t1t2t3"),
        ("content", "c1c2"),
        ("content", "c3c4"),
    ]
    assert log.kinds() == ["thinking", "content", "tool", "content", "done"]


def test_coalesced_text_is_flushed_during_a_pause(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue([Chunk(content="a"), Chunk(content="b"), Stall()])
    pump = QueueDispatcher()
    log = Recorder()
    handle = client.start_chat(
        "m", USER, dispatcher=pump, coalesce_interval=0.05, **log.kwargs()
    )
    assert server.wait_stalled()
    while log.text("content") != "ab":  # the timer flushes while the stream is silent
        assert pump.pump(timeout=WAIT) > 0
    assert set(log.kinds()) == {"content"} and not handle.done()
    handle.cancel()
    while not handle.done():
        pump.pump(timeout=WAIT)
    assert log.kinds()[-1] == "done"


class CountingQueue(QueueDispatcher):
    """Signals once ``n`` callbacks were queued."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n, self.count = n, 0
        self.reached = threading.Event()

    def dispatch(self, fn: Any) -> None:
        super().dispatch(fn)
        self.count += 1
        if self.count >= self.n:
            self.reached.set()


def test_cancel_under_a_queue_dispatcher_delivers_what_was_accumulated(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue([Chunk(content="x"), Chunk(content="y"), Stall()])
    pump = CountingQueue(2)
    log = Recorder()
    handle = client.start_chat("m", USER, dispatcher=pump, **log.kwargs())
    assert pump.reached.wait(WAIT)  # both deltas accumulated, none run yet
    handle.cancel()
    assert handle.join(WAIT)
    pump.pump()
    assert log.kinds() == ["content", "content", "done"]
    assert log.text("content") == handle.result().content == "xy"
    assert handle.result().cancelled


def test_a_failing_callback_under_a_queue_dispatcher_stops_the_stream(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue([Chunk(content="a"), Chunk(content="b"), Stall()])
    pump = QueueDispatcher()
    seen: list[str] = []
    errors: list[Any] = []

    def on_content(text: str) -> None:
        seen.append(text)
        raise ValueError("widget destroyed")

    handle = client.start_chat(
        "m", USER, dispatcher=pump, on_content=on_content, on_error=errors.append
    )
    assert server.wait_stalled()
    while not handle.done():
        pump.pump(timeout=WAIT)
    with pytest.raises(CallbackError):
        handle.result()
    assert seen == ["a"]  # the rest was dropped after the failure
    assert len(errors) == 1 and isinstance(errors[0], CallbackError)


def test_tk_dispatcher_runs_callbacks_on_the_tk_thread(
    server: FakeOllama, client: StreamingClient, tk_root: Any
) -> None:
    dispatcher = TkDispatcher(tk_root)
    server.enqueue(SCRIPT)
    log = Recorder()
    kwargs = log.kwargs()
    on_done = kwargs["on_done"]
    kwargs["on_done"] = lambda r: (on_done(r), tk_root.quit())
    tk_root.after(
        0, lambda: client.start_chat("m", USER, dispatcher=dispatcher, **kwargs)
    )
    tk_root.after(int(WAIT * 1000), tk_root.quit)  # a bound on a hang, not a timing
    tk_root.mainloop()
    dispatcher.close()
    assert log.kinds() == EXPECTED_KINDS
    assert log.threads == {threading.get_ident()}


def test_a_closed_tk_dispatcher_lets_go_of_its_window(tk_root: Any) -> None:
    """Once its window is destroyed, a TkDispatcher (which a stream's worker may
    still hold) keeps no Tk object alive: the last reference to one must not be
    dropped on a worker thread, where Tk aborts the process."""
    import tkinter

    window = tkinter.Toplevel(tk_root)
    dispatcher = TkDispatcher(window)
    gone = weakref.ref(window)
    window.destroy()  # <Destroy> closes the dispatcher, here on the Tk thread
    del window
    gc.collect()
    assert dispatcher.closed
    assert gone() is None
    assert "TkDispatcher(" in repr(dispatcher)


def test_qt_dispatcher_runs_callbacks_on_the_qt_thread(
    server: FakeOllama, client: StreamingClient, qt_app: Any
) -> None:
    from PySide6.QtCore import QTimer

    dispatcher = QtDispatcher()
    server.enqueue(SCRIPT)
    log = Recorder()
    kwargs = log.kwargs()
    on_done = kwargs["on_done"]
    kwargs["on_done"] = lambda r: (on_done(r), qt_app.quit())
    QTimer.singleShot(
        0, lambda: client.start_chat("m", USER, dispatcher=dispatcher, **kwargs)
    )
    QTimer.singleShot(int(WAIT * 1000), qt_app.quit)  # a bound on a hang
    qt_app.exec()
    dispatcher.close()
    assert log.kinds() == EXPECTED_KINDS
    assert log.threads == {threading.get_ident()}


def test_qt_dispatcher_wakes_without_dropping_references(qt_app: Any) -> None:
    """Each wake-up of a QtDispatcher leaves True's reference count as it was.

    PySide6 6.12's ``Signal.emit()`` hands back a reference to True it never
    took: a dispatcher woken by a signal dropped True's count by one per
    wake-up, and before Python 3.12 (mortal bools) the interpreter aborted
    after some hundreds ("bool_dealloc"). It wakes by a posted event now.
    """
    dispatcher = QtDispatcher()
    ran: list[int] = []
    try:
        before = sys.getrefcount(True)
        for i in range(50):
            dispatcher.dispatch(functools.partial(ran.append, i))  # a wake-up each
            assert qt_run_until(qt_app, functools.partial(ran.__contains__, i))
        lost = before - sys.getrefcount(True)
    finally:
        dispatcher.close()
    assert lost < 10, f"True lost {lost} references in 50 wake-ups"


def test_qt_dispatcher_names_the_extra_when_pyside_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "PySide6", None)  # as if not installed
    with pytest.raises(ImportError, match=r"ollama-stream-sync\[qt\]"):
        QtDispatcher()


def test_a_callback_failing_on_the_final_flush_keeps_the_partial(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue(reply("all of it"))

    def on_content(text: str) -> None:
        raise ValueError("bad widget")

    with pytest.raises(CallbackError) as info:
        client.chat("m", USER, on_content=on_content, coalesce_interval=60.0)
    assert info.value.partial.content == "all of it"
