"""The timeouts: each names itself and ends the stream without polling, and
each measures the server, never the caller (a slow callback is not a silent
server; bytes that carry no output are not a first token).

The timers are engine logic and run once, on httpx. Both transports run the
parts that are theirs: the connect timeout, and a read timeout on a connection
the server will close. No test sleeps to wait out a timer: to show that a
timer did *not* fire for a stream whose callback blocks, a second stream on
the same client (same timer thread, a timeout no longer than ours), started
after ours waited, is made to time out for real: once it has failed, ours
would have fired too. Where our first output itself must beat a timer, that
timer is ``FIRST_TOKEN``, long enough for a busy machine.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from ollama_stream_sync import (
    Conversation,
    RetryPolicy,
    StreamingClient,
    StreamTimeout,
    _timers,
)
from ollama_stream_sync.testing import (
    Chunk,
    Delay,
    DoneLine,
    FakeOllama,
    Stall,
    http_error,
    reply,
    tool_call,
)

from .support import USER, WAIT
from .support.clients import MakeClient, new_client
from .support.hostile import (
    END,
    Gate,
    Hold,
    Hostile,
    Notify,
    Script,
    Send,
    Trickle,
    answer,
    chunk,
    head,
    line,
)

pytestmark = pytest.mark.transport

FAST = RetryPolicy(initial_delay=0.01, jitter=False)
NO_TIMERS: dict[str, Any] = {"first_token_timeout": None, "read_timeout": None}

# -- each timeout, once --------------------------------------------------------------


def test_read_timeout_on_a_silent_stream(server: FakeOllama) -> None:
    server.enqueue([Chunk(content="partial"), Stall()])
    with new_client(server.url, read_timeout=0.2) as client:
        with pytest.raises(StreamTimeout) as info:
            client.chat("m", USER)
    assert info.value.which == "read"
    assert info.value.partial.content == "partial"
    assert server.wait_for(lambda s: s.disconnects_seen == 1)


def test_read_timeout_after_output_is_not_retried(server: FakeOllama) -> None:
    server.enqueue([Chunk(content="partial"), Stall()], reply("never"))
    with new_client(server.url, read_timeout=0.2, retry=FAST) as client:
        with pytest.raises(StreamTimeout):
            client.chat("m", USER)
    assert len(server.stream_requests()) == 1


def test_steady_slow_stream_does_not_time_out(server: FakeOllama) -> None:
    steps = [s for w in "a b c d".split() for s in (Delay(0.05), Chunk(content=w))]
    server.enqueue([*steps, DoneLine()])
    with new_client(server.url, read_timeout=1.0, first_token_timeout=1.0) as c:
        assert c.chat("m", USER).content == "abcd"


def test_first_token_timeout_while_a_model_loads(server: FakeOllama) -> None:
    server.enqueue([Stall()])
    with new_client(server.url, first_token_timeout=0.2) as client:
        with pytest.raises(StreamTimeout) as info:
            client.chat("m", USER)
    assert info.value.which == "first_token"
    assert server.wait_for(lambda s: s.disconnects_seen == 1)


def test_first_token_timeout_is_retried(server: FakeOllama) -> None:
    server.enqueue([Stall()], reply("loaded now"))
    errors: list[Any] = []
    # The second attempt must answer within this too: room for a busy machine.
    with new_client(server.url, first_token_timeout=1.0, retry=FAST) as client:
        result = client.chat("m", USER, on_retry=lambda a, e, d: errors.append(e))
    assert result.content == "loaded now"
    assert [e.which for e in errors] == ["first_token"]


def test_deadline_bounds_the_whole_call(server: FakeOllama) -> None:
    server.enqueue([Chunk(content="so far"), Stall()])
    with new_client(server.url, deadline=0.3, **NO_TIMERS) as client:
        with pytest.raises(StreamTimeout) as info:
            client.chat("m", USER)
    assert info.value.which == "deadline"
    assert info.value.partial.content == "so far"


def test_deadline_cuts_a_retry_backoff_short(server: FakeOllama) -> None:
    server.enqueue(http_error(503, "busy"), reply("never"))
    slow = RetryPolicy(initial_delay=60.0, jitter=False)
    with new_client(server.url, retry=slow) as client:
        handle = client.start_chat("m", USER, deadline=0.3)  # per call
        with pytest.raises(StreamTimeout) as info:
            handle.result(WAIT)  # far less than the 60 s backoff
    assert info.value.which == "deadline"
    assert len(server.stream_requests()) == 1


def test_per_call_timeouts_override_the_client(server: FakeOllama) -> None:
    server.enqueue([Chunk(content="x"), Stall()])
    with new_client(server.url, read_timeout=None) as client:
        with pytest.raises(StreamTimeout) as info:
            client.chat("m", USER, read_timeout=0.2)
    assert info.value.which == "read"


SEND_DEADLINE = 0.3


def slow_tool(city: str) -> str:
    """Look a city up, slowly: longer than the whole send's deadline.

    Args:
        city: The city's name.
    """
    # A precondition, not a measurement: when it returns, the deadline of
    # the send that ran it has passed (time.sleep sleeps at least this long).
    time.sleep(SEND_DEADLINE)
    return f"{city}: rain"


def test_a_sends_deadline_covers_all_its_rounds(server: FakeOllama) -> None:
    """Issue 11: the deadline covers the whole send. The tool of round one
    outlasts it, so the second round (which would stall) never starts: the
    send fails with the deadline, one request sent, the history untouched."""
    server.enqueue(
        reply(tool_calls=[tool_call("slow_tool", {"city": "Paris"})]),
        [Stall()],  # round two, if it were ever sent
    )
    with new_client(server.url, **NO_TIMERS) as client:
        conv = Conversation(client, "m", tools=[slow_tool])
        try:
            with pytest.raises(StreamTimeout) as info:
                conv.send("Weather in Paris?", deadline=SEND_DEADLINE)
        finally:
            server.release()
    assert info.value.which == "deadline"
    assert len(server.stream_requests()) == 1, "a second round was sent"
    assert conv.messages == []
    assert server.wait_closed()


def test_an_idle_client_holds_no_timer_thread(
    server: FakeOllama, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The timer thread ends once it has had nothing to watch for ``IDLE_EXIT``
    (shortened here: the test waits for the thread to end, not for a time)."""
    monkeypatch.setattr(_timers, "IDLE_EXIT", 0.05)
    with new_client(server.url, read_timeout=5) as client:
        client.chat("m", USER)
        timers = [t for t in threading.enumerate() if "timers" in t.name]
        assert timers, "no timer thread watched the stream"
        for thread in timers:
            thread.join(WAIT)
        assert not any(t.is_alive() for t in timers)


# -- the transports' part: connect, and a connection the server will close -----------


def test_connect_timeout(unaccepting_port: int, make_client: MakeClient) -> None:
    url = f"http://127.0.0.1:{unaccepting_port}"
    with make_client(url, connect_timeout=0.2) as client:
        with pytest.raises(StreamTimeout) as info:
            client.chat("m", USER)
    assert info.value.which == "connect"


CLOSING = [{"Connection": "close"}, {}]


@pytest.mark.parametrize("headers", CLOSING, ids=["connection-close", "keep-alive"])
def test_read_timeout_fires_on_a_connection_the_server_will_close(
    hostile: Hostile, make_client: MakeClient, headers: dict[str, str]
) -> None:
    body = chunk(line("a")) + chunk(line("b"))
    hostile.enqueue([Send(head(headers=headers) + body), Hold()])
    with make_client(hostile.url, read_timeout=0.3) as client:
        with pytest.raises(StreamTimeout) as caught:
            client.chat("m", USER)
    assert caught.value.which == "read"
    assert caught.value.partial.content == "ab"
    assert hostile.wait_for(lambda h: h.hangups == 1, WAIT)


# -- timers measure the server, not the caller (once) --------------------------------


SHORT = 0.3
"""A timeout the control stream really hits; no assertion depends on its length."""

FIRST_TOKEN = 2.0
"""A first-token timeout our own stream must beat with its first output (on a
busy machine too); the control stream hits it for real."""

READ_SILENT: Script = [Send(head() + chunk(line("x"))), Hold()]
"""The control for a read timeout: one chunk, then silence."""

NO_ANSWER: Script = [Hold()]
"""The control for a first-token timeout: no response at all."""


def at_once(*contents: str) -> Script:
    """A whole answer in one write: the client has it all before any timer runs."""
    return [Send(head() + chunk(answer(*contents)) + END)]


def blocking_first_callback() -> tuple[threading.Event, threading.Event, Any]:
    """An ``on_content`` that blocks on its first call until ``release`` is set."""
    entered, release = threading.Event(), threading.Event()

    def on_content(_: str) -> None:
        if not entered.is_set():
            entered.set()
            assert release.wait(WAIT)

    return entered, release, on_content


def control_times_out(client: StreamingClient, which: str, **kwargs: Any) -> None:
    """Run a stream on ``client`` that the server leaves silent: it must time out."""
    with pytest.raises(StreamTimeout) as info:
        client.chat("m", USER, **kwargs)
    assert info.value.which == which


# a slow callback is not a silent server


def test_a_slow_callback_mid_stream_is_not_a_read_timeout(hostile: Hostile) -> None:
    # The whole answer is sent at once: the server is not silent at all.
    hostile.enqueue(at_once("a", "b", "c"), READ_SILENT)
    entered, release, on_content = blocking_first_callback()
    with new_client(
        hostile.url, read_timeout=SHORT, first_token_timeout=None
    ) as client:
        handle = client.start_chat("m", USER, on_content=on_content)
        try:
            assert entered.wait(WAIT)
            # The control's read clock starts after ours did; once it fired,
            # ours would have fired too if a callback counted as silence.
            control_times_out(client, "read")
        finally:
            release.set()
        result = handle.result(WAIT)
    assert (result.content, result.done) == ("abc", True)


def test_a_slow_first_callback_is_not_a_first_token_timeout(hostile: Hostile) -> None:
    """The first output ends the first-token phase when it arrives, not after
    its callback returned."""
    hostile.enqueue(at_once("a", "b"), NO_ANSWER)
    entered, release, on_content = blocking_first_callback()
    with new_client(
        hostile.url, first_token_timeout=FIRST_TOKEN, read_timeout=None
    ) as client:
        handle = client.start_chat("m", USER, on_content=on_content)
        try:
            assert entered.wait(WAIT)
            control_times_out(client, "first_token")
        finally:
            release.set()
        result = handle.result(WAIT)
    assert (result.content, result.done) == ("ab", True)


def test_a_slow_on_done_is_not_a_timeout(hostile: Hostile) -> None:
    hostile.enqueue(at_once("a"), READ_SILENT)
    entered, release = threading.Event(), threading.Event()

    def on_done(_: Any) -> None:
        entered.set()
        assert release.wait(WAIT)

    with new_client(hostile.url, read_timeout=SHORT) as client:
        handle = client.start_chat("m", USER, on_done=on_done)
        try:
            assert entered.wait(WAIT)
            control_times_out(client, "read")
        finally:
            release.set()
        assert handle.result(WAIT).content == "a"


def test_the_read_timeout_still_fires_after_a_slow_callback(hostile: Hostile) -> None:
    """A callback that outlasts the read timeout, then a server that goes silent.

    The first chunk starts the read clock; the callback of the second one
    (a read of its own) blocks past its timeout, so the timer thread finds
    nothing to fire for this stream then. The silence after it must still
    be caught.
    """
    send_b, b_sent = hostile.latch(), threading.Event()
    hostile.enqueue(
        [
            Send(head() + chunk(line("a"))),
            Gate(send_b),
            Send(chunk(line("b"))),
            Notify(b_sent),
            Hold(),
        ],
        READ_SILENT,  # the control
    )
    entered, release = threading.Event(), threading.Event()

    def on_content(text: str) -> None:
        if text == "a":
            send_b.set()
            # "b" is on its way before we wait again: the read clock never
            # depends on how fast the server answers the latch.
            assert b_sent.wait(WAIT)
        else:
            entered.set()
            assert release.wait(WAIT)

    with new_client(hostile.url, read_timeout=SHORT) as client:
        handle = client.start_chat("m", USER, on_content=on_content)
        try:
            assert entered.wait(WAIT)
            control_times_out(client, "read")
        finally:
            release.set()
        with pytest.raises(StreamTimeout) as info:
            handle.result(WAIT)
    assert info.value.which == "read"
    assert info.value.partial.content == "ab"


# first_token means the first output

NO_OUTPUT = {
    "blank-lines": chunk(b"\n"),
    "whitespace-lines": chunk(b"  \r\n"),
    "empty-chunks": chunk(line("")),
    "empty-thinking": chunk(line("", thinking="")),
    "bytes-of-an-unfinished-line": chunk(b" "),
}


@pytest.mark.parametrize("trickle", NO_OUTPUT.values(), ids=NO_OUTPUT.keys())
def test_bytes_without_output_do_not_end_the_first_token_phase(
    hostile: Hostile, trickle: bytes
) -> None:
    """A server that keeps sending, but nothing the model said, still times out.

    It trickles until the client hangs up: only the first-token timeout can
    end this stream (there is no read timeout, and no end).
    """
    hostile.enqueue([Send(head()), Trickle(trickle, every=0.02)])
    with new_client(
        hostile.url, first_token_timeout=SHORT, read_timeout=None
    ) as client:
        handle = client.start_chat("m", USER)
        with pytest.raises(StreamTimeout) as info:
            handle.result(WAIT)
    assert info.value.which == "first_token"
    assert info.value.partial.content == ""
    assert hostile.wait_for(lambda s: s.hangups == 1, WAIT)  # the socket was closed


def test_thinking_is_output_and_ends_the_first_token_phase(hostile: Hostile) -> None:
    """The counterpart: once the model said anything, the first-token clock stops."""
    first = head() + chunk(line("", thinking="Hm."))
    hostile.enqueue(
        [Send(first), Trickle(chunk(b"\n"), every=0.02)],  # then only blank lines
        NO_ANSWER,  # the control
    )
    with new_client(
        hostile.url, first_token_timeout=FIRST_TOKEN, read_timeout=None
    ) as client:
        thought = threading.Event()
        handle = client.start_chat("m", USER, on_thinking=lambda _: thought.set())
        assert thought.wait(WAIT)
        control_times_out(client, "first_token")
        assert not handle.done()  # ours outlived the control's first-token timeout
        handle.cancel()
        result = handle.result(WAIT)
    assert result.cancelled and result.thinking == "Hm."
