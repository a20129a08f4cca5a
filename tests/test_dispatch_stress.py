"""Dispatchers under stress: every pumping pattern, with no deadlock and no lost
callback.

Each test repeats its scenario hundreds of times and bounds every wait, so that
a deadlock or a lost callback fails in seconds instead of hanging the suite.
Each one reproduced a bug of the engine before commit bd451f9. Delivery is the
engine's: they run once, on httpx.
"""

from __future__ import annotations

import concurrent.futures
import os
import sys
import threading
from typing import Any

import pytest

from ollama_stream_sync import (
    CallLaterDispatcher,
    ChatResult,
    QueueDispatcher,
    StreamingClient,
    TkDispatcher,
)
from ollama_stream_sync._dispatch import DispatcherClosed
from ollama_stream_sync.testing import FakeOllama, reply

from .support import USER, WAIT
from .support.clients import Recorder, bounded
from .support.dispatchers import Pumper, Toolkit
from .support.gui import tk_run_until

# -- completion never waits for pumping -------------------------------------------


def test_handles_of_an_unpumped_queue_dispatcher_resolve(
    server: FakeOllama, client: StreamingClient
) -> None:
    # 100 streams, 5 at a time: FakeOllama's listen backlog is socketserver's
    # default of 5, and a burst beyond it gets connections reset under load.
    rounds, width = 20, 5
    pump = QueueDispatcher()
    records = []
    for _ in range(rounds):
        server.enqueue(*[reply("a b c", thinking="t") for _ in range(width)])
        handles = []
        for _ in range(width):
            record = Recorder()
            records.append(record)
            handles.append(
                client.start_chat("m", USER, dispatcher=pump, **record.kwargs())
            )
        _, not_done = concurrent.futures.wait(handles, timeout=WAIT)
        assert not not_done, "handles waited for a pump nobody calls"
        finished = list(concurrent.futures.as_completed(handles, timeout=WAIT))
        assert len(finished) == width
        for handle in handles:
            assert handle.result(timeout=WAIT).content == "a b c"
            # Resolved first, then on_done is queued: once the worker has
            # exited, everything was handed to the dispatcher.
            assert handle.join(WAIT)
    assert not any(r.terminals for r in records)  # nothing was delivered...
    assert pump.pending > 0
    pump.pump()  # ...until pumped: then each stream's callbacks, once
    for record in records:
        assert record.text() == "a b c"
        assert [k for k, _ in record.terminals] == ["done"]


# -- pumping: no deadlock, reentrancy allowed ---------------------------------------


def test_blocking_chats_while_other_threads_pump_the_same_queue(
    server: FakeOllama, client: StreamingClient
) -> None:
    callers, per_caller = 2, 100
    server.enqueue(*[reply("a b c", thinking="t") for _ in range(callers * per_caller)])
    pump = QueueDispatcher()
    failures: list[str] = []

    def caller() -> None:
        for _ in range(per_caller):
            record = Recorder()
            result = client.chat("m", USER, dispatcher=pump, **record.kwargs())
            # It returns once the terminal callback ran, whoever pumped it.
            if not record.ended.is_set() or record.text() != result.content:
                failures.append(f"{record.terminals} {record.text()!r}")

    with Pumper(pump, count=2):
        threads = [threading.Thread(target=caller, daemon=True) for _ in range(callers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT * 6)
        assert not any(t.is_alive() for t in threads), "blocking chats deadlocked"
    assert failures == []


def nested_pump_trial(
    client: StreamingClient, pump: QueueDispatcher, blocking: bool
) -> None:
    record = Recorder()

    def nested(kind: str, text: str) -> None:
        record.add(kind, text)
        pump.pump()  # runs the next callbacks inside this one

    kwargs = {
        **record.kwargs(),
        "on_content": lambda t: nested("content", t),
        "on_thinking": lambda t: nested("thinking", t),
    }
    if blocking:
        result = bounded(lambda: client.chat("m", USER, dispatcher=pump, **kwargs))
    else:
        handle = client.start_chat("m", USER, dispatcher=pump, **kwargs)

        def pump_to_the_end() -> None:
            while not record.ended.is_set():
                pump.pump(timeout=0.05)

        bounded(pump_to_the_end)
        result = handle.result(timeout=WAIT)
    assert record.text() == result.content == "a b c d"
    assert record.text("thinking") == "x y"
    assert [k for k, _ in record.terminals] == ["done"]


@pytest.mark.parametrize("blocking", [False, True], ids=["pump-loop", "blocking-chat"])
def test_pump_inside_a_pumped_callback(
    server: FakeOllama, client: StreamingClient, blocking: bool
) -> None:
    pump = QueueDispatcher()
    for _ in range(100):
        server.enqueue(reply("a b c d", thinking="x y"))
        nested_pump_trial(client, pump, blocking)


def nested_chat_trial(
    client: StreamingClient, pump: QueueDispatcher, outer: str
) -> None:
    record, inner = Recorder(), Recorder()
    inner_results: list[ChatResult] = []
    started: list[bool] = []

    def on_content(text: str) -> None:
        record.add("content", text)
        if not started:  # the first delta makes a blocking call (during which
            started.append(True)  # the next deltas run, nested in this one)
            inner_results.append(
                client.chat("m", USER, dispatcher=pump, **inner.kwargs())
            )
            assert inner.ended.is_set()  # its on_done ran before it returned

    kwargs = {**record.kwargs(), "on_content": on_content}
    if outer == "blocking":
        result = bounded(lambda: client.chat("m", USER, dispatcher=pump, **kwargs))
    else:
        handle = client.start_chat("m", USER, dispatcher=pump, **kwargs)
        with Pumper(pump) as pumper:
            assert record.ended.wait(WAIT)
        assert pumper.escaped == []
        result = handle.result(timeout=WAIT)
    assert result.content == record.text() == "outer text"
    assert inner_results[0].content == inner.text() == "inner text"
    assert [k for k, _ in record.terminals] == ["done"]
    assert [k for k, _ in inner.terminals] == ["done"]


@pytest.mark.parametrize("outer", ["background", "blocking"])
def test_a_blocking_chat_inside_a_callback_of_its_own_dispatcher(
    server: FakeOllama, client: StreamingClient, outer: str
) -> None:
    pump = QueueDispatcher()
    for _ in range(100):
        server.enqueue(reply("outer text"), reply("inner text"))
        nested_chat_trial(client, pump, outer)


def modal_trial(
    client: StreamingClient, toolkit: Toolkit, dispatcher: CallLaterDispatcher
) -> None:
    first, second = Recorder(), Recorder()
    opened: list[bool] = []
    modal: list[bool] = []
    closed = threading.Event()

    def on_content(text: str) -> None:
        first.add("content", text)
        if opened:  # later deltas run inside the dialog's loop
            return
        opened.append(True)
        # A dialog opens: its nested loop runs while another stream delivers.
        client.start_chat("m", USER, dispatcher=dispatcher, **second.kwargs())
        modal.append(toolkit.loop_until(second.ended.is_set))
        closed.set()

    kwargs = {**first.kwargs(), "on_content": on_content}
    client.start_chat("m", USER, dispatcher=dispatcher, **kwargs)
    assert closed.wait(WAIT), "the nested loop deadlocked"
    assert first.ended.wait(WAIT)
    assert modal == [True]
    assert second.text() == "second answer"
    assert first.text() == "first answer"
    assert [k for k, _ in first.terminals] == ["done"]
    assert [k for k, _ in second.terminals] == ["done"]


def test_a_modal_loop_in_a_call_later_callback_while_another_stream_delivers(
    server: FakeOllama, client: StreamingClient, toolkit: Toolkit
) -> None:
    dispatcher = toolkit.run(lambda: CallLaterDispatcher(toolkit.call_after))
    for _ in range(100):
        server.enqueue(reply("first answer"), reply("second answer"))
        modal_trial(client, toolkit, dispatcher)
    assert toolkit.escaped == []


def tk_close_trial(tk_root: Any) -> None:
    dispatcher = TkDispatcher(tk_root)
    errors: list[BaseException] = []
    spare: list[int] = []
    stop = threading.Event()

    def callback() -> None:  # on Tk's thread, inside its drain
        if not spare:
            # Closed as the drain starts, when the wake-up was just re-armed:
            # the threads are dispatching, and writing wake-ups, as it closes.
            dispatcher.close()
            spare.extend(os.pipe())  # takes the descriptors just freed
            stop.set()

    def hammer() -> None:
        while not stop.is_set():
            try:
                dispatcher.dispatch(callback)
            except DispatcherClosed:
                return
            except BaseException as exc:
                errors.append(exc)
                return

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        assert tk_run_until(tk_root, lambda: bool(spare))
        for thread in threads:
            thread.join(WAIT)
        assert errors == []
        os.set_blocking(spare[0], False)
        with pytest.raises(BlockingIOError):  # no stray wake-up landed here
            os.read(spare[0], 1)
    finally:
        for fd in spare:
            os.close(fd)
    with pytest.raises(DispatcherClosed):
        dispatcher.dispatch(callback)


def test_tk_dispatcher_close_is_safe_against_concurrent_dispatch(tk_root: Any) -> None:
    # Threads switch every microsecond instead of every 5 ms: a race window of
    # a few bytecodes gets hit within these trials.
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(300):
            tk_close_trial(tk_root)
    finally:
        sys.setswitchinterval(previous)
