"""A GUI never hangs: the toolkit dispatchers under a real Tk (Xvfb) and a real
Qt (offscreen).

Blocking calls made on the toolkit thread with the toolkit's dispatcher return;
closing a window mid-stream stops the stream cleanly; a nested event loop (a
modal dialog) inside a callback runs while another stream delivers. Every loop
waits for toolkit events, bounded by a timer in case of a hang; a hang *inside*
a toolkit callback cannot be bounded from there, so the module's timeout bounds
it (they all finish in seconds). Delivery is the engine's: once, on httpx.
"""

from __future__ import annotations

import functools
import gc
import threading
from collections.abc import Callable
from typing import Any

import pytest

from ollama_stream_sync import (
    ChatResult,
    Conversation,
    DispatchError,
    QtDispatcher,
    StreamError,
    StreamingClient,
    TkDispatcher,
)
from ollama_stream_sync.testing import Chunk, FakeOllama, Script, Stall, reply

from .support import USER, WAIT
from .support.clients import Recorder, more_disconnects_than
from .support.gui import no_noise, qt_run_until, tk_run_until

pytestmark = pytest.mark.timeout(60)

MID_STREAM: Script = [
    Chunk(thinking="Thinking "),
    Chunk(content="Hello "),
    Chunk(content="wor"),
    Stall(),  # the model goes on "forever": only a stop ends it
]


def shows(record: Recorder, text: str) -> bool:
    """Whether ``record``'s callbacks have shown ``text`` so far."""
    return record.text() == text


# -- blocking calls on the toolkit thread ---------------------------------------

BLOCKING: dict[str, Callable[[StreamingClient, Any, dict[str, Any]], ChatResult]] = {
    # The docs' own snippet (dispatchers, coalescing): the toolkit's dispatcher.
    "chat": lambda client, d, kw: client.chat(
        "m", USER, dispatcher=d, coalesce_interval=0.03, **kw
    ),
    "generate": lambda client, d, kw: client.generate(
        "m", "hi", dispatcher=d, coalesce_interval=0.03, **kw
    ),
    "Conversation.send": lambda client, d, kw: Conversation(client, "m").send(
        "hi", dispatcher=d, coalesce_interval=0.03, **kw
    ),
}


def tk_blocking_trial(
    client: StreamingClient, root: Any, dispatcher: TkDispatcher, call: str
) -> None:
    record = Recorder()
    returned: list[tuple[ChatResult, list[tuple[str, Any]]]] = []

    def on_click() -> None:  # e.g. a button's command
        result = BLOCKING[call](client, dispatcher, record.kwargs())
        returned.append((result, list(record.terminals)))

    root.after(0, on_click)
    assert tk_run_until(root, lambda: bool(returned)), "the blocking call hung"
    result, terminals_when_it_returned = returned[0]
    assert result.content == record.text() == "one two three"
    # The callbacks ran here, on_done among them, before the call returned.
    assert terminals_when_it_returned == [("done", result)]
    assert record.threads == {threading.get_ident()}


@pytest.mark.parametrize("call", BLOCKING)
def test_tk_a_blocking_call_in_a_tk_callback_returns(
    server: FakeOllama, client: StreamingClient, tk_root: Any, call: str
) -> None:
    dispatcher = TkDispatcher(tk_root)
    for _ in range(20):
        server.enqueue(reply("one two three", thinking="hmm"))
        tk_blocking_trial(client, tk_root, dispatcher, call)


def qt_blocking_trial(
    client: StreamingClient, app: Any, dispatcher: QtDispatcher, call: str
) -> None:
    from PySide6.QtCore import QTimer

    record = Recorder()
    returned: list[tuple[ChatResult, list[tuple[str, Any]]]] = []

    def on_click() -> None:
        result = BLOCKING[call](client, dispatcher, record.kwargs())
        returned.append((result, list(record.terminals)))

    QTimer.singleShot(0, on_click)
    assert qt_run_until(app, lambda: bool(returned)), "the blocking call hung"
    result, terminals_when_it_returned = returned[0]
    assert result.content == record.text() == "one two three"
    assert terminals_when_it_returned == [("done", result)]
    assert record.threads == {threading.get_ident()}


@pytest.mark.parametrize("call", BLOCKING)
def test_qt_a_blocking_call_in_a_qt_callback_returns(
    server: FakeOllama, client: StreamingClient, qt_app: Any, call: str
) -> None:
    dispatcher = QtDispatcher()
    try:
        for _ in range(20):
            server.enqueue(reply("one two three", thinking="hmm"))
            qt_blocking_trial(client, qt_app, dispatcher, call)
    finally:
        dispatcher.close()


def tk_nested_chat_trial(
    client: StreamingClient, root: Any, dispatcher: TkDispatcher
) -> None:
    outer, inner = Recorder(), Recorder()
    results: list[ChatResult] = []

    def on_content(text: str) -> None:
        outer.add("content", text)
        if len(outer.events) == 1:  # the next deltas run inside this call
            results.append(
                client.chat("m", USER, dispatcher=dispatcher, **inner.kwargs())
            )

    kwargs = {**outer.kwargs(), "on_content": on_content}
    client.start_chat("m", USER, dispatcher=dispatcher, **kwargs)
    assert tk_run_until(root, outer.ended.is_set)
    assert outer.text() == "outer text"
    assert results[0].content == inner.text() == "inner text"
    assert [k for k, _ in inner.terminals] == ["done"]


def test_tk_a_blocking_chat_inside_a_callback_of_its_dispatcher(
    server: FakeOllama, client: StreamingClient, tk_root: Any
) -> None:
    dispatcher = TkDispatcher(tk_root)
    for _ in range(20):
        server.enqueue(reply("outer text"), reply("inner text"))
        tk_nested_chat_trial(client, tk_root, dispatcher)


# -- closing the window mid-stream ------------------------------------------------


def tk_close_trial(
    server: FakeOllama, client: StreamingClient, root: Any, window: Any, trial: int
) -> None:
    dispatcher = TkDispatcher(window)
    server.enqueue(MID_STREAM)
    record = Recorder()
    handle = client.start_chat("m", USER, dispatcher=dispatcher, **record.kwargs())
    assert tk_run_until(root, lambda: record.text() == "Hello wor")
    gone: list[object] = []
    window.bind("<Destroy>", gone.append, "+")
    root.after(0, window.destroy)  # what the close button's handler does
    assert tk_run_until(root, lambda: bool(gone))
    with pytest.raises(DispatchError) as info:
        handle.result(timeout=WAIT)  # the stream stopped with the window...
    assert info.value.partial.content == "Hello wor"
    assert dispatcher.closed
    # ...and closed its socket; nothing was delivered to the dead window.
    assert server.wait_for(lambda s: s.disconnects_seen > trial, WAIT)
    assert record.terminals == []


def test_tk_closing_a_window_mid_stream_is_clean(
    server: FakeOllama,
    client: StreamingClient,
    tk_root: Any,
    capfd: pytest.CaptureFixture[str],
) -> None:
    import tkinter

    for trial in range(20):
        tk_close_trial(server, client, tk_root, tkinter.Toplevel(tk_root), trial)
    no_noise(capfd)


def tk_main_window_trial(
    server: FakeOllama, client: StreamingClient, trial: int
) -> None:
    import tkinter

    root = tkinter.Tk()
    errors: list[BaseException] = []
    root.report_callback_exception = lambda kind, exc, tb: errors.append(exc)
    tk_close_trial(server, client, root, root, trial)
    assert errors == []
    del root
    gc.collect()  # here, on Tk's thread


def test_tk_closing_the_main_window_mid_stream_is_clean(
    server: FakeOllama,
    client: StreamingClient,
    xvfb_display: str,
    capfd: pytest.CaptureFixture[str],
) -> None:
    for trial in range(5):
        tk_main_window_trial(server, client, trial)
    no_noise(capfd)


def tk_close_in_blocking_chat_trial(
    server: FakeOllama, client: StreamingClient, root: Any, trial: int
) -> None:
    import tkinter

    window = tkinter.Toplevel(root)
    dispatcher = TkDispatcher(window)
    server.enqueue(MID_STREAM)
    outcome: list[BaseException | ChatResult] = []

    def on_content(text: str) -> None:
        if text.endswith("wor"):
            window.destroy()  # the user closed it, from a callback

    def on_click() -> None:
        try:
            outcome.append(
                client.chat("m", USER, dispatcher=dispatcher, on_content=on_content)
            )
        except StreamError as exc:
            outcome.append(exc)

    root.after(0, on_click)
    assert tk_run_until(root, lambda: bool(outcome)), "the blocking chat hung"
    assert isinstance(outcome[0], DispatchError), outcome
    assert server.wait_for(lambda s: s.disconnects_seen > trial, WAIT)


def test_tk_a_callback_that_closes_the_window_ends_a_blocking_chat(
    server: FakeOllama,
    client: StreamingClient,
    tk_root: Any,
    capfd: pytest.CaptureFixture[str],
) -> None:
    for trial in range(20):
        tk_close_in_blocking_chat_trial(server, client, tk_root, trial)
    no_noise(capfd)


def test_tk_closing_a_window_after_the_stream_ended_drops_its_callbacks(
    server: FakeOllama,
    client: StreamingClient,
    tk_root: Any,
    capfd: pytest.CaptureFixture[str],
) -> None:
    import tkinter

    for _ in range(20):
        window = tkinter.Toplevel(tk_root)
        dispatcher = TkDispatcher(window)
        server.enqueue(reply("all of it"))
        record = Recorder()
        handle = client.start_chat("m", USER, dispatcher=dispatcher, **record.kwargs())
        assert handle.join(WAIT)  # ended; its callbacks wait for Tk
        window.destroy()
        assert dispatcher.closed
        assert handle.result(timeout=WAIT).content == "all of it"  # it stands
        assert dispatcher.pending == 0
        tk_root.update()  # whatever Tk had pending runs: nothing of ours
        assert record.events == [] and record.terminals == []
    no_noise(capfd)


def test_qt_closing_a_window_mid_stream_is_clean(
    server: FakeOllama,
    client: StreamingClient,
    qt_app: Any,
    capfd: pytest.CaptureFixture[str],
) -> None:
    import shiboken6
    from PySide6.QtCore import QEvent
    from PySide6.QtWidgets import QWidget

    for trial in range(20):
        window = QWidget()
        window.show()
        dispatcher = QtDispatcher(parent=window)
        server.enqueue(MID_STREAM)
        record = Recorder()
        handle = client.start_chat("m", USER, dispatcher=dispatcher, **record.kwargs())
        assert qt_run_until(qt_app, functools.partial(shows, record, "Hello wor"))
        window.close()
        if trial % 2:
            window.deleteLater()  # as WA_DeleteOnClose does; then, as the event
            # loop would when control returns to it:
            qt_app.sendPostedEvents(None, QEvent.Type.DeferredDelete.value)
        else:
            shiboken6.delete(window)
        assert dispatcher.closed
        with pytest.raises(DispatchError) as info:
            handle.result(timeout=WAIT)
        assert info.value.partial.content == "Hello wor"
        assert server.wait_for(more_disconnects_than(trial), WAIT)
        assert record.terminals == []
    no_noise(capfd)


# -- nested event loops in a callback ----------------------------------------------


def tk_modal_trial(
    client: StreamingClient, root: Any, dispatcher: TkDispatcher, loop: str
) -> None:
    import tkinter

    first, second = Recorder(), Recorder()
    opened: list[bool] = []
    closed: list[bool] = []

    def on_content(text: str) -> None:
        first.add("content", text)
        if opened:  # the later deltas run inside the dialog's loop
            return
        opened.append(True)
        dialog = tkinter.Toplevel(root)

        def second_done(result: ChatResult) -> None:
            second.add("done", result)
            dialog.destroy()  # the dialog closes when the other stream ends

        client.start_chat(
            "m",
            USER,
            dispatcher=dispatcher,
            **{**second.kwargs(), "on_done": second_done},
        )
        guard = root.after(int(WAIT * 1000), dialog.destroy)  # bounds a hang
        if loop == "wait_window":
            root.wait_window(dialog)  # a modal dialog's nested event loop
        else:
            while not second.ended.is_set() and dialog.winfo_exists():
                root.tk.dooneevent(0)  # waits for an event
                if loop == "update":
                    root.update()
        root.after_cancel(guard)
        closed.append(second.ended.is_set())

    client.start_chat(
        "m", USER, dispatcher=dispatcher, **{**first.kwargs(), "on_content": on_content}
    )
    assert tk_run_until(root, lambda: bool(closed) and first.ended.is_set())
    assert closed == [True], "the other stream was not delivered in the dialog"
    assert first.text() == "first answer"
    assert second.text() == "second answer"
    assert [k for k, _ in first.terminals] == ["done"]
    assert [k for k, _ in second.terminals] == ["done"]


@pytest.mark.parametrize("loop", ["wait_window", "dooneevent", "update"])
def test_tk_a_modal_dialog_in_a_callback_while_another_stream_delivers(
    server: FakeOllama, client: StreamingClient, tk_root: Any, loop: str
) -> None:
    dispatcher = TkDispatcher(tk_root)
    for _ in range(30):
        server.enqueue(reply("first answer"), reply("second answer"))
        tk_modal_trial(client, tk_root, dispatcher, loop)


def qt_modal_trial(
    client: StreamingClient, app: Any, dispatcher: QtDispatcher, loop: str
) -> None:
    import shiboken6
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QDialog

    first, second = Recorder(), Recorder()
    opened: list[bool] = []
    closed: list[bool] = []

    def on_content(text: str) -> None:
        first.add("content", text)
        if opened:
            return
        opened.append(True)
        dialog, nested = QDialog(), QEventLoop()
        stop = dialog.accept if loop == "exec" else nested.quit

        def second_done(result: ChatResult) -> None:
            second.add("done", result)
            stop()

        client.start_chat(
            "m",
            USER,
            dispatcher=dispatcher,
            **{**second.kwargs(), "on_done": second_done},
        )
        guard = QTimer()
        guard.setSingleShot(True)
        guard.timeout.connect(stop)  # bounds a hang
        guard.start(int(WAIT * 1000))
        if loop == "exec":
            dialog.exec()  # a modal dialog's nested event loop
        else:
            nested.exec()
        guard.stop()
        closed.append(second.ended.is_set())
        shiboken6.delete(dialog)

    client.start_chat(
        "m", USER, dispatcher=dispatcher, **{**first.kwargs(), "on_content": on_content}
    )
    assert qt_run_until(app, lambda: bool(closed) and first.ended.is_set())
    assert closed == [True], "the other stream was not delivered in the dialog"
    assert first.text() == "first answer"
    assert second.text() == "second answer"
    assert [k for k, _ in first.terminals] == ["done"]


@pytest.mark.parametrize("loop", ["exec", "QEventLoop"])
def test_qt_a_modal_dialog_in_a_callback_while_another_stream_delivers(
    server: FakeOllama, client: StreamingClient, qt_app: Any, loop: str
) -> None:
    dispatcher = QtDispatcher()
    try:
        for _ in range(30):
            server.enqueue(reply("first answer"), reply("second answer"))
            qt_modal_trial(client, qt_app, dispatcher, loop)
    finally:
        dispatcher.close()
