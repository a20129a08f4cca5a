"""Dispatchers under stress: every pumping pattern, failing dispatchers, late errors.

Each test repeats its scenario hundreds of times and bounds every wait, so that a
deadlock or a lost callback fails in seconds instead of hanging the suite. Each
one reproduced a bug of the engine before commit bd451f9 (run this file with the
old package first on ``PYTHONPATH`` to see them fail).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import os
import queue
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

import ollama_stream_sync as oss
from ollama_stream_sync import (
    CallbackError,
    CallLaterDispatcher,
    ChatResult,
    Conversation,
    QueueDispatcher,
    StreamError,
    StreamingClient,
    TkDispatcher,
)
from ollama_stream_sync import _dispatch as dispatch_module
from ollama_stream_sync.testing import Chunk, Cut, FakeOllama, Stall, reply, tool_call

from .conftest import USER, WAIT
from .support.gui import tk_run_until

# Named by their new names; the fallbacks only let this file run against the
# package before the rework (which had neither), to show each test failing there.
DispatchError: type[StreamError] = getattr(oss, "DispatchError", StreamError)
DispatcherClosed: type[Exception] = getattr(
    dispatch_module, "DispatcherClosed", RuntimeError
)

T = TypeVar("T")
STALLED_ANSWER = [
    Chunk(thinking="t"),
    Chunk(content="a"),
    Chunk(content="b"),
    Chunk(tool_calls=(tool_call("f"),)),
    Chunk(content="c"),
    Stall(),  # only a stop ends this stream
]


def bounded(fn: Callable[[], T], timeout: float = WAIT) -> T:
    """``fn()`` on a helper thread: its value or its exception, or a failure if
    it has not returned within ``timeout`` (a hang fails, it does not block)."""
    box: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            box.append((True, fn()))
        except BaseException as exc:
            box.append((False, exc))

    thread = threading.Thread(target=run, name="bounded-call", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        pytest.fail(f"hung: the call did not return within {timeout}s")
    ok, value = box[0]
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


class Record:
    """One stream's callbacks, in the order they started, and its terminal ones."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, Any]] = []
        self.terminals: list[tuple[str, Any]] = []
        self.ended = threading.Event()

    def add(self, kind: str, value: Any) -> None:
        with self.lock:
            self.events.append((kind, value))

    def terminal(self, kind: str, value: Any) -> None:
        with self.lock:
            self.terminals.append((kind, value))
        self.ended.set()

    def text(self, kind: str = "content") -> str:
        with self.lock:
            return "".join(v for k, v in self.events if k == kind)

    def kwargs(self) -> dict[str, Any]:
        return {
            "on_thinking": lambda t: self.add("thinking", t),
            "on_content": lambda t: self.add("content", t),
            "on_tool_call": lambda c: self.add("tool", c),
            "on_done": lambda r: self.terminal("done", r),
            "on_error": lambda e: self.terminal("error", e),
        }


class Pumper:
    """Threads that pump a queue dispatcher until stopped, surviving anything a
    callback raises (as a GUI loop reports an error and goes on)."""

    def __init__(self, dispatcher: QueueDispatcher, count: int = 1) -> None:
        self.dispatcher = dispatcher
        self.stop = threading.Event()
        self.escaped: list[BaseException] = []
        self.pumped = threading.Event()
        """Set after every pump call that returned or raised."""
        self.threads = [
            threading.Thread(target=self._loop, name=f"pumper-{i}", daemon=True)
            for i in range(count)
        ]

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                self.dispatcher.pump(timeout=0.02)  # a bounded wait for work
            except BaseException as exc:
                self.escaped.append(exc)
            self.pumped.set()

    def __enter__(self) -> Pumper:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(WAIT)
        assert not any(t.is_alive() for t in self.threads), "a pumping thread hung"


class Toolkit:
    """A stand-in GUI thread: runs what ``call_after`` gives it, reports what a
    call raises and goes on (as Tk does), and can run a nested (modal) loop."""

    def __init__(self) -> None:
        self.calls: queue.SimpleQueue[Callable[[], object] | None] = queue.SimpleQueue()
        self.escaped: list[BaseException] = []
        self.thread = threading.Thread(target=self._main, name="toolkit", daemon=True)
        self.thread.start()

    def call_after(self, fn: Callable[[], object]) -> None:
        self.calls.put(fn)

    def _run(self, fn: Callable[[], object]) -> None:
        try:
            fn()
        except BaseException as exc:
            self.escaped.append(exc)

    def _main(self) -> None:
        while (fn := self.calls.get()) is not None:
            self._run(fn)

    def loop_until(self, condition: Callable[[], bool]) -> bool:
        """A nested event loop on the toolkit thread (a modal dialog)."""
        while not condition():
            try:
                fn = self.calls.get(timeout=WAIT)
            except queue.Empty:
                return False
            if fn is None:
                self.calls.put(None)
                return False
            self._run(fn)
        return True

    def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` on the toolkit thread, after everything queued before it."""
        box: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()

        def call() -> None:
            try:
                box.put((True, fn()))
            except BaseException as exc:
                box.put((False, exc))

        self.calls.put(call)
        ok, value = box.get(timeout=WAIT)
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    def close(self) -> None:
        self.calls.put(None)
        self.thread.join(WAIT)


@pytest.fixture
def toolkit() -> Iterator[Toolkit]:
    kit = Toolkit()
    yield kit
    kit.close()


# -- 2. completion never waits for pumping ---------------------------------------


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
            record = Record()
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


# -- 3. a bad dispatcher: a TypeError at the call, or DispatchError -------------

NOT_DISPATCHERS = {
    "print": print,
    "a string": "tk",
    "a function": lambda fn: fn(),
    "the class": QueueDispatcher,
}


def call_sites(
    client: StreamingClient, server: FakeOllama
) -> dict[str, Callable[[Any], object]]:
    return {
        "StreamingClient()": lambda d: StreamingClient(server.url, dispatcher=d),
        "chat": lambda d: client.chat("m", USER, dispatcher=d),
        "start_chat": lambda d: client.start_chat("m", USER, dispatcher=d),
        "generate": lambda d: client.generate("m", "hi", dispatcher=d),
        "start_generate": lambda d: client.start_generate("m", "hi", dispatcher=d),
        "stream_chat": lambda d: client.stream_chat("m", USER, dispatcher=d),
        "Conversation.send": lambda d: Conversation(client, "m").send(
            "hi", dispatcher=d
        ),
        "Conversation.start_send": lambda d: Conversation(client, "m").start_send(
            "hi", dispatcher=d
        ),
    }


@pytest.mark.parametrize("bad", NOT_DISPATCHERS.values(), ids=NOT_DISPATCHERS.keys())
def test_what_is_not_a_dispatcher_is_a_type_error_at_the_call(
    server: FakeOllama, client: StreamingClient, bad: Any
) -> None:
    for name, call in call_sites(client, server).items():
        with pytest.raises(TypeError, match="Dispatcher") as info:
            bounded(lambda call=call: call(bad))  # type: ignore[misc]
        assert "dispatcher" in str(info.value), name
    assert server.stream_requests() == []  # refused before anything was sent


class Failing:
    """A dispatcher that runs callbacks at once until call number ``at``, then
    raises there (``once``: a hiccup) or from there on (a dead toolkit). It
    raises once the server stalls, so that only our stop can end the stream."""

    def __init__(
        self,
        server: FakeOllama,
        at: int,
        exc: Callable[[], BaseException],
        once: bool,
    ) -> None:
        self.server, self.at, self.exc, self.once = server, at, exc, once
        self.calls = itertools.count()
        self.raised: list[BaseException] = []

    def dispatch(self, fn: Callable[[], object]) -> None:
        n = next(self.calls)
        if n == self.at or (n > self.at and not self.once):
            if n == self.at:
                assert self.server.wait_stalled(timeout=WAIT)
            exc = self.exc()
            self.raised.append(exc)
            raise exc
        fn()


RAISES = {
    "RuntimeError": lambda: RuntimeError("toolkit gone"),
    "SystemExit": lambda: SystemExit(2),
    "KeyboardInterrupt": KeyboardInterrupt,
}


@pytest.mark.parametrize("once", [True, False], ids=["once", "from-then-on"])
@pytest.mark.parametrize("kind", RAISES.values(), ids=RAISES.keys())
def test_a_dispatcher_that_raises_stops_the_stream_with_dispatch_error(
    server: FakeOllama,
    client: StreamingClient,
    kind: Callable[[], BaseException],
    once: bool,
) -> None:
    # Calls 0-4: thinking "t", content "a", "b", the tool call, content "c".
    positions, repeats = range(5), 6  # 30 streams per case, 360 in all
    for trial, (at, _) in enumerate(itertools.product(positions, range(repeats))):
        server.enqueue(STALLED_ANSWER)
        dispatcher = Failing(server, at, kind, once)
        record = Record()
        handle = client.start_chat("m", USER, dispatcher=dispatcher, **record.kwargs())
        with pytest.raises(DispatchError) as info:
            handle.result(timeout=WAIT)
        error = info.value
        assert type(error).__name__ == "DispatchError"
        assert repr(dispatcher.raised[0]) in str(error)  # the cause: see below
        assert isinstance(error.partial, ChatResult)
        # The stream was stalled: only our stop ended it, by closing the socket.
        assert server.wait_for(lambda s, n=trial: s.disconnects_seen > n, WAIT)
        if once:  # the dispatcher works again: the error is reported, once
            assert record.ended.wait(WAIT)
            assert record.terminals == [("error", error)]
        else:  # it can take nothing more: no terminal callback can run
            assert handle.join(WAIT)
            assert record.terminals == []


def test_a_call_later_target_that_raises_closes_the_dispatcher(
    server: FakeOllama, client: StreamingClient, toolkit: Toolkit
) -> None:
    for trial in range(100):
        gone = RuntimeError("no app object") if trial % 2 else AttributeError("x")

        def call_later(fn: Callable[[], object], gone: Exception = gone) -> None:
            assert server.wait_stalled(timeout=WAIT)  # so only our stop ends it
            raise gone

        dispatcher = toolkit.run(lambda cl=call_later: CallLaterDispatcher(cl))
        server.enqueue(STALLED_ANSWER)  # its first callback fails, then it stops
        first = client.start_chat("m", USER, dispatcher=dispatcher, on_content=str)
        with pytest.raises(DispatchError) as info:
            first.result(timeout=WAIT)
        assert gone in _causes(info.value)
        assert dispatcher.closed
        # A later stream on it stops too, instead of never being delivered...
        second = client.start_chat("m", USER, dispatcher=dispatcher, on_content=str)
        with pytest.raises(DispatchError):
            second.result(timeout=WAIT)
        # ...and a blocking call made on the toolkit thread raises: no hang.
        with pytest.raises(DispatchError):
            toolkit.run(
                lambda d=dispatcher: client.chat(
                    "m", USER, dispatcher=d, on_content=str
                )
            )
        # The first one's socket was closed; those two never sent a request.
        assert server.wait_for(lambda s, n=trial: s.disconnects_seen > n, WAIT)
        assert len(server.stream_requests()) == trial + 1


def _causes(error: BaseException | None) -> list[BaseException]:
    chain = []
    while error is not None:
        chain.append(error)
        error = error.__cause__
    return chain


# -- 4. pumping: no deadlock, reentrancy allowed --------------------------------


def test_blocking_chats_while_other_threads_pump_the_same_queue(
    server: FakeOllama, client: StreamingClient
) -> None:
    callers, per_caller = 2, 100
    server.enqueue(*[reply("a b c", thinking="t") for _ in range(callers * per_caller)])
    pump = QueueDispatcher()
    failures: list[str] = []

    def caller() -> None:
        for _ in range(per_caller):
            record = Record()
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
    record = Record()

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
    record, inner = Record(), Record()
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
    first, second = Record(), Record()
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


# -- 5. lost and silent failures ------------------------------------------------

DELTAS = 6  # of the stream below: thinking x2, content x3, a tool call
LATE_PLACES = [*range(DELTAS), "on_done"]


def late_error_trial(client: StreamingClient, where: int | str, blocking: bool) -> None:
    pump = QueueDispatcher()
    record = Record()
    count = itertools.count()

    def delta(kind: str, value: Any) -> None:
        record.add(kind, value)
        if next(count) == where:
            raise ValueError("the widget is gone")

    def on_done(result: ChatResult) -> None:
        record.terminal("done", result)
        if where == "on_done":
            raise ValueError("the widget is gone")

    kwargs = {
        **record.kwargs(),
        "on_thinking": lambda t: delta("thinking", t),
        "on_content": lambda t: delta("content", t),
        "on_tool_call": lambda c: delta("tool", c),
        "on_done": on_done,
    }
    if blocking:  # a blocking call pumps it itself
        with pytest.raises(CallbackError) as info:
            bounded(lambda: client.chat("m", USER, dispatcher=pump, **kwargs))
    else:
        handle = client.start_chat("m", USER, dispatcher=pump, **kwargs)
        assert handle.join(WAIT)  # the worker ended before any callback ran
        assert handle.result().content == "a b c"
        pump.pump()
        with pytest.raises(CallbackError) as info:
            handle.result()
        assert handle.exception() is info.value
    error = info.value
    assert "the widget is gone" in str(error)
    assert isinstance(error.__cause__, ValueError)  # the user's own exception
    if blocking:  # it may have stopped the stream early
        assert "a b c".startswith(error.partial.content)
    else:
        assert error.partial.content == "a b c"
    # Exactly one terminal callback: on_error with that error (or on_done
    # itself, when it was the one that raised).
    if where == "on_done":
        assert [k for k, _ in record.terminals] == ["done"]
    else:
        assert record.terminals == [("error", error)]


@pytest.mark.parametrize("where", LATE_PLACES)
def test_a_callback_failing_after_the_worker_ended_is_a_callback_error(
    server: FakeOllama, client: StreamingClient, where: int | str
) -> None:
    for trial in range(15):  # x 7 places x 2 transports: 210 streams
        server.enqueue(reply("a b c", thinking="t u", tool_calls=[tool_call("f")]))
        late_error_trial(client, where, blocking=trial % 3 == 0)


def tool_run_trial(server: FakeOllama, client: StreamingClient) -> None:
    tool_started, pumped_after = threading.Event(), threading.Event()

    def lookup(city: str) -> str:
        """Look a city up.

        Args:
            city: the city
        """
        tool_started.set()
        assert pumped_after.wait(WAIT)  # the callback failed meanwhile
        return "sunny"

    server.enqueue(reply("Looking.", tool_calls=[tool_call("lookup", {"city": "P"})]))
    conversation = Conversation(client, "m", tools=[lookup])
    before = conversation.messages
    pump = QueueDispatcher()
    raised = threading.Event()

    def on_content(text: str) -> None:
        raised.set()
        raise ValueError("the widget is gone")

    handle = conversation.start_send("Weather?", dispatcher=pump, on_content=on_content)
    assert tool_started.wait(WAIT)
    with Pumper(pump) as pumper:  # the callbacks run while the tool runs
        assert raised.wait(WAIT)
        pumper.pumped.clear()
        assert pumper.pumped.wait(WAIT)  # that pump call is over: it failed
        pumped_after.set()
        with pytest.raises(CallbackError) as info:
            handle.result(timeout=WAIT)
    assert "the widget is gone" in str(info.value)
    assert isinstance(info.value.__cause__, ValueError)  # the user's own exception
    assert not handle.cancelled()
    assert conversation.messages == before  # a failed send leaves no trace


def test_a_callback_error_during_a_tool_run_is_not_a_cancel(
    server: FakeOllama, client: StreamingClient
) -> None:
    for _ in range(50):  # x 2 transports
        tool_run_trial(server, client)


class RaisingOnTheTimer:
    """Raises from every dispatch; notes the thread of the first one."""

    def __init__(self, kind: Callable[[], BaseException], threads: list[str]) -> None:
        self.kind, self.threads = kind, threads
        self.calls = itertools.count()

    def dispatch(self, fn: Callable[[], object]) -> None:
        if next(self.calls) == 0:
            self.threads.append(threading.current_thread().name)
        raise self.kind()


def timer_trial(
    server: FakeOllama, client: StreamingClient, failing: RaisingOnTheTimer
) -> None:
    # Held back by coalescing, "a" is flushed by the timer thread during the
    # stall, into a dispatcher that raises there.
    server.enqueue([Chunk(content="a"), Stall()])
    handle = client.start_chat(
        "m", USER, dispatcher=failing, coalesce_interval=0.01, on_content=str
    )
    with pytest.raises(DispatchError):
        handle.result(timeout=WAIT)
    # The same timer thread still flushes the next stream's pause.
    server.enqueue([Chunk(content="b"), Stall()])
    pump = QueueDispatcher()
    record = Record()
    handle = client.start_chat(
        "m", USER, dispatcher=pump, coalesce_interval=0.01, **record.kwargs()
    )
    while record.text() != "b":
        assert pump.pump(timeout=WAIT) > 0, "no flush: the timer thread is gone"
    handle.cancel()
    while not record.ended.is_set():
        assert pump.pump(timeout=WAIT) > 0


@pytest.mark.parametrize("kind", RAISES.values(), ids=RAISES.keys())
def test_the_timer_thread_survives_a_dispatcher_that_raises(
    server: FakeOllama, client: StreamingClient, kind: Callable[[], BaseException]
) -> None:
    threads: list[str] = []
    for _ in range(25):  # x 3 kinds x 2 transports: 150 failures on the timer
        timer_trial(server, client, RaisingOnTheTimer(kind, threads))
    assert all(name.startswith("ollama-stream-timers") for name in threads), threads
    # It still fires timeouts too.
    server.enqueue([Chunk(content="c"), Stall()])
    with pytest.raises(TimeoutError):
        bounded(lambda: client.chat("m", USER, read_timeout=0.05))


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


def _throw(exc: BaseException) -> Callable[[Any], None]:
    def act(handle: Any) -> None:
        raise exc

    return act


BEHAVIOURS: dict[str, Callable[[], Callable[[Any], None]]] = {
    "raise": lambda: _throw(ValueError("bad")),
    "exit": lambda: _throw(SystemExit(1)),
    "interrupt": lambda: _throw(KeyboardInterrupt()),
    "cancel": lambda: lambda handle: handle.cancel(),
}
PLACES = ["on_thinking", "on_content", "on_tool_call", "on_done", "on_phase"]


def one_terminal_trial(
    client: StreamingClient,
    toolkit: Toolkit,
    mode: str,
    behaviour: str,
    place: str,
) -> None:
    act = BEHAVIOURS[behaviour]()
    record = Record()
    holder: list[Any] = []
    acted: list[bool] = []
    ready = threading.Event()
    kwargs = record.kwargs()
    original = kwargs.get(place)

    def hook(value: Any) -> None:
        if original is not None:
            original(value)
        # Phases: act once the request is out (its script is then used up).
        if not acted and value not in ("connecting", "waiting"):
            acted.append(True)
            assert ready.wait(WAIT)
            act(holder[0])

    kwargs[place] = hook
    dispatcher: Any = None
    if mode == "queue":
        dispatcher = QueueDispatcher()
    elif mode == "call-later":
        dispatcher = toolkit.run(lambda: CallLaterDispatcher(toolkit.call_after))
    if dispatcher is not None:
        kwargs["dispatcher"] = dispatcher
    handle = client.start_chat("m", USER, **kwargs)
    holder.append(handle)
    ready.set()
    with Pumper(dispatcher) if mode == "queue" else contextlib.nullcontext():
        assert record.ended.wait(WAIT), "no terminal callback"
        assert handle.join(WAIT)
    if mode == "queue":
        dispatcher.pump()  # anything left: no second terminal may come
    elif mode == "call-later":
        toolkit.run(lambda: None)  # everything queued before has run
    assert len(record.terminals) == 1, record.terminals
    try:
        outcome: Any = handle.result(timeout=WAIT)
    except StreamError as exc:
        outcome = exc
    if behaviour == "cancel":
        assert isinstance(outcome, ChatResult), outcome
        if mode == "inline":  # before on_done it stops the stream; in it, too late
            assert outcome.cancelled == (place != "on_done")
    else:
        assert isinstance(outcome, CallbackError), outcome
    # The next stream on the same dispatcher is delivered as usual.
    after = Record()
    again = after.kwargs()
    if dispatcher is not None:
        again["dispatcher"] = dispatcher
    client.start_chat("m", USER, **again)
    with Pumper(dispatcher) if mode == "queue" else contextlib.nullcontext():
        assert after.ended.wait(WAIT), "the dispatcher is wedged"
    assert after.text() == "x"


@pytest.mark.parametrize("mode", ["inline", "queue", "call-later"])
@pytest.mark.parametrize("behaviour", BEHAVIOURS)
def test_exactly_one_terminal_callback_whatever_a_callback_does(
    server: FakeOllama,
    client: StreamingClient,
    toolkit: Toolkit,
    mode: str,
    behaviour: str,
) -> None:
    for place, _ in itertools.product(PLACES, range(5)):  # 25 x 2 transports
        server.enqueue(
            reply("a b", thinking="t", tool_calls=[tool_call("f")]), reply("x")
        )
        one_terminal_trial(client, toolkit, mode, behaviour, place)
    assert all(isinstance(e, (SystemExit, KeyboardInterrupt)) for e in toolkit.escaped)


@pytest.mark.parametrize("failure", ["dispatch", "callback"])
def test_a_delivery_failure_mid_stream_keeps_its_cause(
    server: FakeOllama, client: StreamingClient, failure: str
) -> None:
    server.enqueue(STALLED_ANSWER)
    original = ValueError("the widget is gone")
    if failure == "dispatch":
        # Calls 0, 1, 2: the three content deltas; the last one raises.
        dispatcher: Any = Failing(server, 2, lambda: original, once=True)
        handle = client.start_chat("m", USER, dispatcher=dispatcher, on_content=str)
    else:
        dispatcher = QueueDispatcher()

        def on_content(text: str) -> None:
            assert server.wait_stalled(timeout=WAIT)
            raise original

        handle = client.start_chat(
            "m", USER, dispatcher=dispatcher, on_content=on_content
        )
    with Pumper(dispatcher) if failure == "callback" else contextlib.nullcontext():
        with pytest.raises(StreamError) as info:
            handle.result(timeout=WAIT)
    assert info.value.__cause__ is original


@pytest.mark.parametrize("kind", [SystemExit, KeyboardInterrupt])
def test_on_error_raising_system_exit_inline_still_resolves_the_handle(
    server: FakeOllama, client: StreamingClient, kind: type[BaseException]
) -> None:
    server.enqueue([Chunk(content="a"), Cut()])

    def on_error(error: StreamError) -> None:
        raise kind()

    handle = client.start_chat("m", USER, on_error=on_error)
    assert handle.join(WAIT)
    with pytest.raises(StreamError):
        handle.result(timeout=0)  # the worker is gone: resolved, or never
