"""The Tk example under Xvfb and the Qt one offscreen, driven like a person would.

Each test presses Send, waits for text to appear, presses Stop mid-stream, and
checks what the widgets show against the stream's result; then a second turn
checks that the history was kept. The loops below wait for GUI events (they
block in the toolkit's event wait), bounded by a timer in case of a hang.
"""

from __future__ import annotations

import gc
from typing import Any

from ollama_stream_sync import StreamingClient
from ollama_stream_sync.testing import Chunk, Delay, FakeOllama, Stall, reply

from .support.gui import (
    load,
    qt_run_until,
    tk_run_until,
    tk_shows_whole,
    too_long_for_a_line,
)

MID_STREAM = [
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
