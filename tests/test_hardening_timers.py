"""Timers measure the server, not the caller: slow callbacks, and what counts as output.

No test here sleeps to wait out a timer. To show that a timer did *not* fire
for a stream whose callback blocks, a second stream on the same client (same
timer thread, a timeout no longer than ours) is made to time out for real,
and it started waiting after ours did: once it has failed, ours would have
fired too. Our own stream never depends on the server's speed before the
moment the test is about: its whole answer is sent in one write, or the test
waits until the server has written what comes next; where the first output
itself must beat a timer (first_token), that timer is ``FIRST_TOKEN``.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from ollama_stream_sync import StreamingClient, StreamTimeout

from .conftest import USER, WAIT, MakeClient
from .support.hostile import (
    END,
    Gate,
    Hold,
    Hostile,
    Notify,
    Send,
    Trickle,
    answer,
    chunk,
    head,
    line,
)

SHORT = 0.3
"""A timeout the control stream really hits; no assertion depends on its length."""

FIRST_TOKEN = 2.0
"""A first-token timeout our own stream must beat with its first output (on a
busy machine too); the control stream hits it for real."""

READ_SILENT = [Send(head() + chunk(line("x"))), Hold()]
"""The control for a read timeout: one chunk, then silence."""

NO_ANSWER = [Hold()]
"""The control for a first-token timeout: no response at all."""


def at_once(*contents: str) -> list[Any]:
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


# -- 8. a slow callback is not a silent server --


def test_a_slow_callback_mid_stream_is_not_a_read_timeout(
    hostile: Hostile, make_client: MakeClient
) -> None:
    # The whole answer is sent at once: the server is not silent at all.
    hostile.enqueue(at_once("a", "b", "c"), READ_SILENT)
    entered, release, on_content = blocking_first_callback()
    with make_client(
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


def test_a_slow_first_callback_is_not_a_first_token_timeout(
    hostile: Hostile, make_client: MakeClient
) -> None:
    """The first output ends the first-token phase when it arrives, not after
    its callback returned."""
    hostile.enqueue(at_once("a", "b"), NO_ANSWER)
    entered, release, on_content = blocking_first_callback()
    with make_client(
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


def test_a_slow_on_done_is_not_a_timeout(
    hostile: Hostile, make_client: MakeClient
) -> None:
    hostile.enqueue(at_once("a"), READ_SILENT)
    entered, release = threading.Event(), threading.Event()

    def on_done(_: Any) -> None:
        entered.set()
        assert release.wait(WAIT)

    with make_client(hostile.url, read_timeout=SHORT) as client:
        handle = client.start_chat("m", USER, on_done=on_done)
        try:
            assert entered.wait(WAIT)
            control_times_out(client, "read")
        finally:
            release.set()
        assert handle.result(WAIT).content == "a"


def test_the_read_timeout_still_fires_after_a_slow_callback(
    hostile: Hostile, make_client: MakeClient
) -> None:
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

    with make_client(hostile.url, read_timeout=SHORT) as client:
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


# -- 9. first_token means the first output --

NO_OUTPUT = {
    "blank-lines": chunk(b"\n"),
    "whitespace-lines": chunk(b"  \r\n"),
    "empty-chunks": chunk(line("")),
    "empty-thinking": chunk(line("", thinking="")),
    "bytes-of-an-unfinished-line": chunk(b" "),
}


@pytest.mark.parametrize("trickle", NO_OUTPUT.values(), ids=NO_OUTPUT.keys())
def test_bytes_without_output_do_not_end_the_first_token_phase(
    hostile: Hostile, make_client: MakeClient, trickle: bytes
) -> None:
    """A server that keeps sending, but nothing the model said, still times out.

    It trickles until the client hangs up: only the first-token timeout can
    end this stream (there is no read timeout, and no end).
    """
    hostile.enqueue([Send(head()), Trickle(trickle, every=0.02)])
    with make_client(
        hostile.url, first_token_timeout=SHORT, read_timeout=None
    ) as client:
        handle = client.start_chat("m", USER)
        with pytest.raises(StreamTimeout) as info:
            handle.result(WAIT)
    assert info.value.which == "first_token"
    assert info.value.partial.content == ""
    assert hostile.wait_for(lambda s: s.hangups == 1, WAIT)  # the socket was closed


def test_thinking_is_output_and_ends_the_first_token_phase(
    hostile: Hostile, make_client: MakeClient
) -> None:
    """The counterpart: once the model said anything, the first-token clock stops."""
    first = head() + chunk(line("", thinking="Hm."))
    hostile.enqueue(
        [Send(first), Trickle(chunk(b"\n"), every=0.02)],  # then only blank lines
        NO_ANSWER,  # the control
    )
    with make_client(
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
