"""Dispatchers and callbacks that fail: a TypeError at the call, or one typed
error, and exactly one terminal callback, whatever raises where.

Each test repeats its scenario many times and bounds every wait. Each one
reproduced a bug of the engine before commit bd451f9. Delivery is the
engine's: they run once, on httpx.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import threading
from collections.abc import Callable
from typing import Any

import pytest

from ollama_stream_sync import (
    CallbackError,
    CallLaterDispatcher,
    ChatResult,
    Conversation,
    DispatchError,
    QueueDispatcher,
    StreamError,
    StreamingClient,
)
from ollama_stream_sync.testing import (
    Chunk,
    Cut,
    FakeOllama,
    Script,
    Stall,
    reply,
    tool_call,
)

from .support import USER, WAIT
from .support.clients import Recorder, bounded, more_disconnects_than
from .support.dispatchers import Pumper, Toolkit

STALLED_ANSWER: Script = [
    Chunk(thinking="t"),
    Chunk(content="a"),
    Chunk(content="b"),
    Chunk(tool_calls=(tool_call("f"),)),
    Chunk(content="c"),
    Stall(),  # only a stop ends this stream
]

# -- a bad dispatcher: a TypeError at the call, or DispatchError --------------------


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
        record = Recorder()
        handle = client.start_chat("m", USER, dispatcher=dispatcher, **record.kwargs())
        with pytest.raises(DispatchError) as info:
            handle.result(timeout=WAIT)
        error = info.value
        assert type(error).__name__ == "DispatchError"
        assert repr(dispatcher.raised[0]) in str(error)  # the cause: see below
        assert isinstance(error.partial, ChatResult)
        # The stream was stalled: only our stop ended it, by closing the socket.
        assert server.wait_for(more_disconnects_than(trial), WAIT)
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

        dispatcher = toolkit.run(functools.partial(CallLaterDispatcher, call_later))
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
                functools.partial(
                    client.chat, "m", USER, dispatcher=dispatcher, on_content=str
                )
            )
        # The first one's socket was closed; those two never sent a request.
        assert server.wait_for(more_disconnects_than(trial), WAIT)
        assert len(server.stream_requests()) == trial + 1


def _causes(error: BaseException | None) -> list[BaseException]:
    chain = []
    while error is not None:
        chain.append(error)
        error = error.__cause__
    return chain


# -- lost and silent failures --------------------------------------------------------


DELTAS = 6  # of the stream below: thinking x2, content x3, a tool call
LATE_PLACES = [*range(DELTAS), "on_done"]


def late_error_trial(client: StreamingClient, where: int | str, blocking: bool) -> None:
    pump = QueueDispatcher()
    record = Recorder()
    count = itertools.count()

    def delta(kind: str, value: Any) -> None:
        record.add(kind, value)
        if next(count) == where:
            raise ValueError("the widget is gone")

    def on_done(result: ChatResult) -> None:
        record.add("done", result)
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
    for trial in range(15):  # x 7 places: 105 streams
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
    for _ in range(50):
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
    record = Recorder()
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
    for _ in range(25):  # x 3 kinds: 75 failures on the timer
        timer_trial(server, client, RaisingOnTheTimer(kind, threads))
    assert all(name.startswith("ollama-stream-timers") for name in threads), threads
    # It still fires timeouts too.
    server.enqueue([Chunk(content="c"), Stall()])
    with pytest.raises(TimeoutError):
        bounded(lambda: client.chat("m", USER, read_timeout=0.05))


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
    record = Recorder()
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
    after = Recorder()
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
    for place, _ in itertools.product(PLACES, range(5)):  # 25 per mode and behaviour
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
