"""The Tk example under Xvfb and the Qt one offscreen, driven like a person would.

Each test presses Send, waits for text to appear, presses Stop mid-stream, and
checks what the widgets show against the stream's result; then a second turn
checks that the history was kept. The loops below wait for GUI events (they
block in the toolkit's event wait), bounded by a timer in case of a hang.
"""

from __future__ import annotations

import functools
import gc
from typing import Any

import pytest

from ollama_stream_sync import StreamingClient
from ollama_stream_sync.testing import Chunk, Delay, FakeOllama, Script, Stall, reply

from .support import WAIT
from .support.gui import (
    load,
    no_noise,
    qt_run_until,
    tk_run_until,
    tk_shows_whole,
    too_long_for_a_line,
)

MID_STREAM: Script = [
    Chunk(thinking="Thinking "),
    Chunk(thinking="first."),
    Chunk(content="Hello "),
    Chunk(content="wor"),
    Stall(),  # the model goes on "forever": only Stop ends it
]


def test_tk_chat_send_stop_and_a_second_turn(
    server: FakeOllama, tk_root: Any, examples_path: None
) -> None:
    tk_chat = load("tk_chat")
    client = StreamingClient(server.url)

    def run_until(condition: Any) -> None:
        assert tk_run_until(tk_root, condition)

    app = tk_chat.ChatApp(tk_root, client, "m")
    try:
        server.enqueue(MID_STREAM)
        app.prompt.insert(0, "Hi there")
        app.send_button.invoke()
        assert str(app.send_button["state"]) == "disabled"
        run_until(lambda: app.text_with_tag("answer") == "Hello wor")
        app.stop_button.invoke()
        run_until(lambda: app.last_result is not None)
        result = app.last_result
        assert result.cancelled
        assert app.text_with_tag("answer") == result.content == "Hello wor"
        assert app.text_with_tag("thinking") == result.thinking == "Thinking first."
        assert app.status.cget("text").startswith("Stopped.")
        assert str(app.send_button["state"]) == "normal"

        server.enqueue(reply("Second answer.", thinking="Still here."))
        app.prompt.insert(0, "Again")
        app.send_button.invoke()
        run_until(lambda: app.last_result is not result)
        assert app.last_result.content == "Second answer."
        assert app.text_with_tag("answer") == "Hello wor" + "Second answer."
        assert app.status.cget("text").startswith("Done.")
        sent = server.stream_requests()[-1].body["messages"]
        assert [m["role"] for m in sent] == ["user", "assistant", "user"]
        assert sent[1]["content"] == "Hello wor"  # the stopped turn was kept
    finally:
        app.dispatcher.close()
        client.close()


def test_qt_chat_send_stop_and_a_second_turn(
    server: FakeOllama, qt_app: Any, examples_path: None
) -> None:
    import shiboken6

    qt_chat = load("qt_chat")
    client = StreamingClient(server.url)

    def run_until(condition: Any) -> None:
        assert qt_run_until(qt_app, condition)

    window = qt_chat.ChatWindow(client, "m")
    try:
        window.show()
        server.enqueue(MID_STREAM)
        window.prompt.setText("Hi there")
        window.send_button.click()
        assert not window.send_button.isEnabled()
        run_until(lambda: window.shown["answer"] == "Hello wor")
        window.stop_button.click()
        run_until(lambda: window.last_result is not None)
        result = window.last_result
        assert result.cancelled
        assert window.shown["answer"] == result.content == "Hello wor"
        assert window.shown["thinking"] == result.thinking == "Thinking first."
        text = window.transcript.toPlainText()
        assert "You: Hi there" in text and "Hello wor" in text
        assert window.status.text().startswith("Stopped.")

        server.enqueue(reply("Second answer."))
        window.prompt.setText("Again")
        window.send_button.click()
        run_until(lambda: window.last_result is not result)
        assert window.last_result.content == "Second answer."
        assert window.transcript.toPlainText().endswith("Second answer.")
        sent = server.stream_requests()[-1].body["messages"]
        assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    finally:
        window.close()
        client.close()
        shiboken6.delete(window)  # on the Qt thread, not by a later GC elsewhere
        gc.collect()


def test_the_demo_answers_leave_a_person_time_to_press_stop(
    tk_root: Any, examples_path: None
) -> None:
    demo_server, tk_chat = load("gui_demo_server"), load("tk_chat")
    first = demo_server.demo_turns()[0]
    assert sum(step.seconds for step in first if isinstance(step, Delay)) >= 5
    thought = "".join(step.thinking or "" for step in first if isinstance(step, Chunk))
    with demo_server.ollama_host(None) as host, StreamingClient(host) as client:
        app = tk_chat.ChatApp(tk_root, client, "m")
        try:
            app.prompt.insert(0, "Hi")
            app.send_button.invoke()
            # Stop, pressed once the model is under way (not by the clock).
            thinking = tk_chat.PHASES["thinking"]
            assert tk_run_until(tk_root, lambda: app.status.cget("text") == thinking)
            app.stop_button.invoke()
            assert tk_run_until(tk_root, lambda: app.last_result is not None)
        finally:
            app.dispatcher.close()
    result = app.last_result
    assert result.cancelled and app.status.cget("text").startswith("Stopped.")
    assert result.thinking and thought.startswith(result.thinking)
    assert app.text_with_tag("thinking") == result.thinking


def test_tk_chat_shows_a_long_error_whole(
    tk_root: Any, examples_path: None, refused_url: str
) -> None:
    tk_chat = load("tk_chat")
    with StreamingClient(refused_url) as client:
        app = tk_chat.ChatApp(tk_root, client, "m")
        try:
            app.prompt.insert(0, "Hi")
            app.send_button.invoke()
            status = app.status
            assert tk_run_until(tk_root, lambda: status.cget("text").startswith("Err"))
            assert "ollama serve" in status.cget("text")  # the advice, at the end
            assert too_long_for_a_line(status)
            assert tk_run_until(tk_root, lambda: tk_shows_whole(status))
        finally:
            app.dispatcher.close()


# -- the examples: Stop, phases, closing ------------------------------------------


def status_of(app: Any) -> str:
    status = app.status
    return str(status.cget("text") if hasattr(status, "cget") else status.text())


def status_is(app: Any, text: str) -> bool:
    return status_of(app) == text


def idle(app: Any) -> bool:
    """No stream runs: Stop (or the end) took effect."""
    return app.handle is None


@pytest.mark.parametrize(
    ("script", "phase"),
    [
        ([Stall()], "waiting"),  # before any output: no figures to show
        ([Chunk(content="Hello")], "answering"),  # one chunk: no tokens/s
        (MID_STREAM[:-1], "answering"),
    ],
    ids=["no-output", "one-chunk", "some-output"],
)
def test_tk_example_shows_the_phase_and_stop_is_a_clean_cancel(
    server: FakeOllama,
    client: StreamingClient,
    tk_root: Any,
    examples_path: None,
    script: list[Any],
    phase: str,
) -> None:
    tk_chat = load("tk_chat")
    app = tk_chat.ChatApp(tk_root, client, "m")
    stalled = script if script[-1:] == [Stall()] else [*script, Stall()]
    for _ in range(10):
        server.enqueue(stalled)
        app.prompt.insert(0, "Hi")
        app.send_button.invoke()
        shown = tk_chat.PHASES[phase]
        assert tk_run_until(tk_root, functools.partial(status_is, app, shown))
        app.stop_button.invoke()
        assert tk_run_until(tk_root, functools.partial(idle, app))
        assert status_of(app).startswith("Stopped."), status_of(app)
        assert app.last_result is not None and app.last_result.cancelled


@pytest.mark.parametrize(
    ("script", "phase"),
    [([Stall()], "waiting"), ([Chunk(content="Hello")], "answering")],
    ids=["no-output", "one-chunk"],
)
def test_qt_example_shows_the_phase_and_stop_is_a_clean_cancel(
    server: FakeOllama,
    client: StreamingClient,
    qt_app: Any,
    examples_path: None,
    script: list[Any],
    phase: str,
) -> None:
    import shiboken6

    qt_chat = load("qt_chat")
    window = qt_chat.ChatWindow(client, "m")
    try:
        stalled = script if script[-1:] == [Stall()] else [*script, Stall()]
        for _ in range(10):
            server.enqueue(stalled)
            window.prompt.setText("Hi")
            window.send_button.click()
            shown = qt_chat.PHASES[phase]
            assert qt_run_until(qt_app, functools.partial(status_is, window, shown))
            window.stop_button.click()
            assert qt_run_until(qt_app, lambda: window.handle is None)
            assert status_of(window).startswith("Stopped."), status_of(window)
            assert window.last_result is not None and window.last_result.cancelled
    finally:
        window.close()
        shiboken6.delete(window)  # on the Qt thread, not by a later GC elsewhere
        gc.collect()


def test_tk_example_closed_mid_stream(
    server: FakeOllama,
    client: StreamingClient,
    tk_root: Any,
    examples_path: None,
    capfd: pytest.CaptureFixture[str],
) -> None:
    tk_chat = load("tk_chat")
    app = tk_chat.ChatApp(tk_root, client, "m")
    server.enqueue(MID_STREAM)
    app.prompt.insert(0, "Hi")
    app.send_button.invoke()
    assert tk_run_until(tk_root, lambda: app.text_with_tag("answer") == "Hello wor")
    handle = app.handle
    app.close()  # the window's close button
    assert handle.result(timeout=WAIT).cancelled  # Stop, then the window went
    assert server.wait_for(lambda s: s.disconnects_seen == 1, WAIT)
    no_noise(capfd)


def test_qt_example_closed_mid_stream(
    server: FakeOllama,
    client: StreamingClient,
    qt_app: Any,
    examples_path: None,
    capfd: pytest.CaptureFixture[str],
) -> None:
    import shiboken6

    qt_chat = load("qt_chat")
    window = qt_chat.ChatWindow(client, "m")
    window.show()
    server.enqueue(MID_STREAM)
    window.prompt.setText("Hi")
    window.send_button.click()
    assert qt_run_until(qt_app, lambda: window.shown["answer"] == "Hello wor")
    handle = window.handle
    dispatcher = window.dispatcher
    window.close()  # the window's close button: Stop
    shiboken6.delete(window)  # and then it goes, dispatcher with it
    gc.collect()
    assert dispatcher.closed
    assert handle.result(timeout=WAIT).cancelled
    assert server.wait_for(lambda s: s.disconnects_seen == 1, WAIT)
    no_noise(capfd)


# -- a second turn on the first turn's connection ------------------------------------


def test_tk_chat_shows_a_model_gone_silent_on_the_second_turn(
    server: FakeOllama, tk_root: Any, examples_path: None
) -> None:
    """The second Send goes out on the first answer's pooled connection; the
    model then goes silent, and the app shows the read timeout as such. (The
    old engine left the first stream's drain bound on that connection: its
    first empty read then failed at once, an error of another kind.)"""
    tk_chat = load("tk_chat")
    with StreamingClient(server.url, read_timeout=0.3) as client:  # httpx
        app = tk_chat.ChatApp(tk_root, client, "m")
        server.enqueue(reply("First answer."))
        app.prompt.insert(0, "Hi")
        app.send_button.invoke()
        assert tk_run_until(tk_root, lambda: app.handle is None)
        assert status_of(app).startswith("Done.")
        server.enqueue([Chunk(content="Second"), Stall()])
        app.prompt.insert(0, "And?")
        app.send_button.invoke()
        assert tk_run_until(tk_root, lambda: app.handle is None)
        assert app.text_with_tag("answer").endswith("Second")
        assert "the stream went silent" in status_of(app), status_of(app)
