"""Many streams at once, and the races between them, found by stress.

Cancels, closes and errors racing other streams on one client: each test here
failed on the engine before commit bd451f9 (see the report of each test).
Races are found by stress, not by reading: the randomized tests run many
seeded trials, each bounded; a failure names its seed, and
``RACES_SEED=<seed>`` replays that plan (the timing of a race cannot be
replayed, its plan can). Where a race is the pool's or the socket's, it runs on
both transports; where it is the engine's (close() racing start_chat()), once.

Nothing here is a timing assertion: every wait is bounded by ``WAIT``, and the
random pauses only spread cancels over the windows where races live.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from ollama_stream_sync import ChatResult, RetryPolicy, StreamError, StreamingClient
from ollama_stream_sync.testing import (
    Chunk,
    Cut,
    Delay,
    ErrorLine,
    FakeOllama,
    Script,
    Stall,
    http_error,
    reply,
)

from .support import USER, WAIT
from .support.clients import MakeClient, Recorder, new_client, one_connection_client

SEED = int(os.environ.get("RACES_SEED", "20260101"))
"""Base seed of every randomized test; trial ``i`` uses ``SEED + i``."""

POOL_TRIALS = 200
"""Trials of the shared-pool cancel stress, per transport."""
POOL_STREAMS = 5
"""Streams per trial, through a pool of one connection."""
CLOSE_TRIALS = 120
"""Trials of close() racing start_chat()."""

WORDS = "alpha beta gamma delta"
TEXT = WORDS  # what reply(WORDS) streams, word by word

# -- many streams at once --------------------------------------------------------------


def test_sixteen_concurrent_streams_finish_with_their_own_text(
    server: FakeOllama,
    make_client: MakeClient,
) -> None:
    texts = {f"stream {i} " + " ".join(["word"] * 30) for i in range(16)}
    # a short pause before each answer makes the streams overlap on the wire
    server.enqueue(*[[Delay(0.01), *reply(t)] for t in texts])
    with make_client(server.url) as client:
        handles = [client.start_chat("m", USER) for _ in range(16)]
        _, pending = concurrent.futures.wait(handles, timeout=WAIT)
        assert not pending
        assert {h.result().content for h in handles} == texts
        assert len({h.thread.name for h in handles}) == 16
    make_client.release()  # the caller's sessions, if any
    assert server.wait_closed()


def test_sixteen_stalled_streams_all_cancel(
    server: FakeOllama, make_client: MakeClient
) -> None:
    stalls: list[Script] = [[Chunk(content=str(i)), Stall()] for i in range(16)]
    server.enqueue(*stalls)
    with make_client(server.url) as client:
        handles = [client.start_chat("m", USER) for _ in range(16)]
        assert server.wait_stalled(16)
        # The server wrote each chunk; wait until each client has it too.
        for handle in handles:
            assert handle.wait_for(lambda r: r.content != "", timeout=WAIT)
        for handle in handles:
            handle.cancel()
        results = [h.result(WAIT) for h in handles]
    assert all(r.cancelled for r in results)
    assert sorted(int(r.content) for r in results) == list(range(16))
    assert server.wait_for(lambda s: s.disconnects_seen == 16)
    make_client.release()  # the caller's sessions, if any
    assert server.wait_closed()


def test_one_client_shared_by_many_caller_threads(server: FakeOllama) -> None:
    server.default_reply = reply("shared answer")
    errors: list[BaseException] = []
    contents: list[str] = []
    lock = threading.Lock()

    with new_client(server.url) as client:

        def caller() -> None:
            try:
                for _ in range(5):
                    text = client.chat("m", USER).content
                    with lock:
                        contents.append(text)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=caller) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT)
        assert not any(t.is_alive() for t in threads)
    assert not errors
    assert contents == ["shared answer"] * 40


# -- issue 1: a late cancel through a shared pool -----------------------------------


class RoutedOllama(FakeOllama):
    """A FakeOllama that picks each request's script by its model name.

    Streams that share a pool reach the server in an order no test controls;
    naming the script in the model keeps each stream's script its own.
    """

    def __init__(self) -> None:
        super().__init__()
        self.routes: dict[str, Script] = {}
        self._routes_lock = threading.Lock()

    def route(self, model: str, script: Script) -> None:
        with self._routes_lock:
            self.routes[model] = list(script)

    def _next_script(
        self, path: str, body: Mapping[str, Any] | None = None
    ) -> Script | None:
        with self._routes_lock:
            script = self.routes.get(str((body or {}).get("model")))
        if script is not None:
            return list(script)
        return super()._next_script(path, body)


@pytest.fixture
def routed() -> Iterator[RoutedOllama]:
    srv = RoutedOllama()
    try:
        yield srv
    finally:
        srv.close()


@dataclass
class Tracked:
    """One stream of a stress trial: what its callbacks saw, and when to cancel."""

    name: str
    victim: bool
    rec: Recorder = field(default_factory=Recorder)
    trigger: threading.Event = field(default_factory=threading.Event)
    trigger_at: int = 0  # on_content count that arms the cancel; 0: at start
    cancel_result: bool | None = None

    def callbacks(self) -> dict[str, Any]:
        recorded = self.rec.kwargs()

        def on_content(text: str) -> None:
            self.rec.add("content", text)
            if len(self.rec.of("content")) == self.trigger_at:
                self.trigger.set()

        return {
            "on_content": on_content,
            "on_done": recorded["on_done"],
            "on_error": recorded["on_error"],
        }


VICTIM_SCRIPTS: list[tuple[str, Script]] = [
    ("reply", reply(WORDS)),
    ("slow", [Delay(0.002), *reply(WORDS)]),
    ("http500", http_error(500, "boom")),
    ("errorline", [Chunk(content="alpha"), ErrorLine("model crashed")]),
    ("load", [Chunk(content=""), *reply(WORDS)]),
]


@pytest.mark.usefixtures("fast_switching")
def test_a_late_cancel_never_reaches_another_streams_socket(
    routed: RoutedOllama, make_client: MakeClient
) -> None:
    """Issue 1: random cancels of some streams never hurt the others.

    Through a one-connection pool, victims are cancelled at random moments:
    at start, after a random word, and (most often) just after their last
    word, when the answer completes and the connection goes back to the pool.
    Bystanders must always finish whole; a victim's ``cancel()`` agrees with
    its result, a complete answer is never reported cancelled, each stream
    gets exactly one terminal callback, and nothing leaks.
    """
    routed.route("bystander", reply(WORDS))
    for kind, script in VICTIM_SCRIPTS:
        routed.route(f"victim-{kind}", script)
    client = one_connection_client(make_client, routed.url)
    words = len(WORDS.split())
    try:
        for trial in range(POOL_TRIALS):
            seed = SEED + trial
            rng = random.Random(seed)
            _pool_trial(client, rng, words, f"seed={seed} trial={trial}")
    finally:
        client.close()
        make_client.release()
    assert routed.wait_closed(), "connections left open after close()"


def _pool_trial(
    client: StreamingClient, rng: random.Random, words: int, where: str
) -> None:
    victims = set(rng.sample(range(POOL_STREAMS), rng.randint(1, POOL_STREAMS - 1)))
    streams: list[tuple[Tracked, Any]] = []
    plans: list[tuple[Tracked, Any, float]] = []
    for i in range(POOL_STREAMS):
        victim = i in victims
        kind = rng.choice(VICTIM_SCRIPTS)[0] if victim else ""
        model = f"victim-{kind}" if victim else "bystander"
        tracked = Tracked(f"{model}#{i}", victim)
        if victim and kind in ("reply", "slow", "load"):
            # mostly right after the last word: the answer completes and the
            # connection goes back to the pool within the next moments
            tracked.trigger_at = rng.choice([0, 1, words, words, words, words])
        handle = client.start_chat(model, USER, **tracked.callbacks())
        streams.append((tracked, handle))
        if victim:
            plans.append((tracked, handle, rng.uniform(0.0, 0.0015)))

    def canceller(tracked: Tracked, handle: Any, pause: float) -> None:
        if tracked.trigger_at and not tracked.trigger.wait(WAIT):
            return  # the stream ended before the trigger (an error): nothing to do
        time.sleep(pause)
        tracked.cancel_result = handle.cancel()

    threads = [
        threading.Thread(target=canceller, args=plan, daemon=True) for plan in plans
    ]
    for thread in threads:
        thread.start()
    outcomes: dict[str, ChatResult | BaseException] = {}
    for tracked, handle in streams:
        try:
            outcomes[tracked.name] = handle.result(WAIT)
        except StreamError as exc:
            outcomes[tracked.name] = exc
    for tracked, _ in streams:
        tracked.trigger.set()  # release cancellers whose trigger never came
    for thread in threads:
        thread.join(WAIT)
        assert not thread.is_alive(), where
    for tracked, handle in streams:
        _check_stream(tracked, handle, outcomes[tracked.name], where)


def _check_stream(tracked: Tracked, handle: Any, outcome: Any, where: str) -> None:
    what = f"{where} {tracked.name}: {outcome!r}"
    assert handle.join(WAIT), what
    assert len(tracked.rec.terminals) == 1, f"{what} terminals={tracked.rec.terminals}"
    kind, payload = tracked.rec.terminals[0]
    if isinstance(outcome, BaseException):
        assert kind == "error" and payload is outcome, what
    else:
        assert kind == "done" and payload == outcome, what
    if not tracked.victim:
        assert isinstance(outcome, ChatResult), what  # a bystander never fails
        assert not outcome.cancelled and outcome.done, what
        assert outcome.content == TEXT, what
        return
    cancelled = isinstance(outcome, ChatResult) and outcome.cancelled
    if tracked.cancel_result is not None:
        assert tracked.cancel_result == cancelled, what
    assert handle.cancelled() == cancelled, what
    if isinstance(outcome, ChatResult):
        assert not (outcome.done and outcome.cancelled), (
            f"complete yet cancelled: {what}"
        )
        if not outcome.cancelled:
            assert outcome.done and outcome.content == TEXT, what
    else:
        assert not cancelled, what


# -- issue 8: a kept error keeps no connection open -----------------------------------


class KeepRecords(logging.Handler):
    """A logging handler that keeps every record, as test harnesses and log
    viewers do (pytest's own ``caplog`` keeps them too)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.handler = self
        self.logger = logging.getLogger("ollama_stream_sync")

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> KeepRecords:
        self.logger.addHandler(self.handler)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self.handler)


KEPT_ERRORS: dict[str, tuple[Script, dict[str, Any]]] = {
    "http status": (http_error(500, "boom"), {}),
    "error line": ([Chunk(content="a"), ErrorLine("model crashed")], {}),
    "cut": ([Chunk(content="a"), Cut()], {}),
    "cut before headers": ([Cut()], {}),
    "read timeout": ([Chunk(content="a"), Stall()], {"read_timeout": 0.2}),
}


@pytest.mark.parametrize("kind", sorted(KEPT_ERRORS))
def test_a_kept_error_keeps_no_connection_open(
    server: FakeOllama, make_client: MakeClient, kind: str
) -> None:
    """Issue 8: the error (traceback included) and the retry warning's log
    record are kept; once the client and the session are closed, the server
    sees every connection closed. A retry makes the warning fire; a later
    stream that went well leaves an idle connection in the pool, which
    urllib3 2 closes only when nothing references the pool any more."""
    script, extra = KEPT_ERRORS[kind]
    server.enqueue(script, script, reply("fine"))
    policy = RetryPolicy(
        max_attempts=2, initial_delay=0.01, jitter=False, retry_after_output=True
    )
    with KeepRecords() as kept_logs:
        client = make_client(server.url, retry=policy, **extra)
        with pytest.raises(StreamError) as info:
            client.chat("m", USER)
        kept_error = info.value
        # a stream that went well leaves its connection idle in the pool
        assert client.chat("m", USER).content == "fine"
        client.close()
        make_client.release()  # session.close(), with requests
        assert server.wait_closed(), f"{kind}: a kept {kept_error!r} pins a connection"
        assert any("retrying" in r.getMessage() for r in kept_logs.records)
        assert kept_error.__traceback__ is not None  # kept, traceback and all


# -- issue 5: close() racing start_chat(), once -------------------------------------


@pytest.mark.usefixtures("fast_switching")
def test_close_racing_start_chat(server: FakeOllama) -> None:
    """Issue 5: once close() returns, no stream of the client runs and no
    callback fires; a start that loses the race raises "closed"
    (RuntimeError), and close() itself never raises."""
    server.default_reply = reply("x y")
    for trial in range(CLOSE_TRIALS):
        seed = SEED + trial
        _close_trial(server, random.Random(seed), f"seed={seed}")
    assert server.wait_closed()


def _close_trial(server: FakeOllama, rng: random.Random, where: str) -> None:
    client = new_client(server.url)
    closed = threading.Event()
    late: list[str] = []
    lock = threading.Lock()
    started: list[tuple[Any, list[str]]] = []
    refusals: list[BaseException] = []
    enough = threading.Event()
    wanted = rng.randint(0, 3)

    def callbacks(terminals: list[str]) -> dict[str, Any]:
        def note(name: str) -> Callable[[Any], None]:
            def callback(_: Any) -> None:
                if closed.is_set():
                    late.append(name)
                if name in ("on_done", "on_error"):
                    terminals.append(name)

            return callback

        return {k: note(k) for k in ("on_content", "on_done", "on_error")}

    def starter() -> None:
        while True:
            terminals: list[str] = []
            try:
                handle = client.start_chat("m", USER, **callbacks(terminals))
            except RuntimeError as exc:
                refusals.append(exc)
                return
            with lock:
                started.append((handle, terminals))
                if len(started) >= wanted:
                    enough.set()

    threads = [threading.Thread(target=starter, daemon=True) for _ in range(2)]
    for thread in threads:
        thread.start()
    assert enough.wait(WAIT), where
    time.sleep(rng.uniform(0.0, 0.002))
    client.close()  # must not raise
    closed.set()
    for thread in threads:
        thread.join(WAIT)
        assert not thread.is_alive(), where
    assert not late, f"{where}: callbacks after close() returned: {late}"
    assert len(refusals) == 2 and all("closed" in str(e) for e in refusals), where
    for handle, terminals in started:
        assert handle.done(), f"{where}: {handle!r} still running after close()"
        assert terminals in (["on_done"], ["on_error"]), f"{where}: {terminals}"


# -- issue 6: close() from a callback, once ------------------------------------------


@pytest.mark.parametrize("where", ["on_content", "on_done"])
def test_close_from_a_callback(server: FakeOllama, where: str) -> None:
    """Issue 6: close() inside a callback cancels everything, waits for the
    other streams but not for its own, closes the timers and the SDK, and the
    stream ends cleanly (cancelled, or done), not with a CallbackError."""
    timers_before = {t for t in threading.enumerate() if "timers" in t.name}
    client = new_client(server.url)
    server.enqueue([Chunk(content="a"), Stall()])
    bystander = client.start_chat("m", USER)
    assert server.wait_stalled()
    server.enqueue(
        [Chunk(content="b"), Stall()] if where == "on_content" else reply("b")
    )
    seen: dict[str, Any] = {}

    def close_here(_: Any) -> None:
        try:
            client.close()
        except BaseException as exc:
            seen["raised"] = exc
        seen["bystander done"] = bystander.done()
        seen["timers"] = [
            t
            for t in threading.enumerate()
            if "timers" in t.name and t not in timers_before and t.is_alive()
        ]

    try:
        callbacks: dict[str, Any] = {where: close_here}
        handle = client.start_chat("m", USER, **callbacks)
        result = handle.result(WAIT)
    finally:
        server.release()
    assert "raised" not in seen, seen.get("raised")
    assert seen["bystander done"] and bystander.result(0).cancelled
    assert not seen["timers"], seen["timers"]
    assert result.cancelled if where == "on_content" else result.done
    assert handle.join(WAIT)
    assert client.sdk._client.is_closed  # the SDK's httpx client, closed
    with pytest.raises(RuntimeError, match="closed"):
        client.start_chat("m", USER)
    assert server.wait_closed()
