"""The pull windows, Tk under Xvfb and Qt offscreen, driven as a person would.

Each test presses Pull, watches the bar grow while the fake server reports a
download (paced, so the speed becomes known), presses Cancel mid-download,
pulls again to the end, and asks for a model the registry lacks. Every repaint
is recorded (the window's own ``on_progress`` is wrapped), so what the widgets
showed is checked against the ``Progress`` that was painted. The loops wait
for GUI events, bounded by a timer in case of a hang.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

from ollama_stream_sync import ModelNotFound, Progress, StreamingClient
from ollama_stream_sync.testing import Delay, FakeOllama, Stall, Step, pull_script

from .support import WAIT
from .support.gui import load, qt_run_until, tk_shows_whole, too_long_for_a_line

MODEL = "llama3.2"
LAYERS = [40_000_000, 2_000, 500]
HELD_AT = 35
"""The mid-download pull stops after this many lines: the manifest's, and the big
layer's first 34 (0 to 33 fortieths of it)."""


def mid_download() -> list[Step]:
    """A pull paced for 1.4 s at least (the speed settles after 1 s), then held."""
    lines = pull_script(MODEL, layers=LAYERS, steps=40)
    paced: list[Step] = []
    for line in lines[:HELD_AT]:
        paced += [Delay(0.04), line]
    return [*paced, Stall(), *lines[HELD_AT:]]


HELD_PERCENT = 82  # 33/40 of 40 MB, the only size known yet: 82.5%


class Painted:
    """Every repaint: the ``Progress`` and what the widgets showed after it."""

    def __init__(self, read: Callable[[], tuple[float, str, str]]) -> None:
        self.read = read
        self.seen: list[tuple[Progress, float, str, str]] = []

    def wrap(self, show: Callable[[Progress], None]) -> Callable[[Progress], None]:
        def spy(progress: Progress) -> None:
            show(progress)
            self.seen.append((progress, *self.read()))

        return spy

    @property
    def last(self) -> Progress | None:
        return self.seen[-1][0] if self.seen else None

    def check(self) -> None:
        """The bar only grew, and speed and ETA were shown as they were known."""
        bars = [bar for _, bar, _, _ in self.seen]
        assert bars == sorted(bars), bars
        for progress, _, speed, eta in self.seen:
            if progress.bytes_per_second is None:
                assert speed == "speed n/a"
            else:
                assert speed.endswith("/s") and speed[0].isdigit()
            assert eta.startswith("ETA ") == (progress.eta is not None)


def drive(
    app: Any,
    server: FakeOllama,
    painted: Painted,
    run_until: Callable[[Callable[[], bool]], None],
    press: Callable[[Any], None],
    status: Callable[[], str],
) -> None:
    """The scenario both windows go through, pressing their buttons."""
    # 1. Pull: the bar grows, the speed becomes known, then the server holds.
    server.enqueue(mid_download(), endpoint="pull")
    press(app.pull_button)
    assert app.handle is not None
    handle = app.handle
    run_until(lambda: painted.last is not None)
    assert painted.seen[0][2] == "speed n/a"  # nothing measured yet
    assert server.wait_stalled(timeout=WAIT)
    run_until(lambda: painted.last == handle.snapshot())  # the held line is shown
    held = painted.last
    assert held is not None and held.stage == "downloading"
    assert held.bytes_per_second is not None and held.eta is not None
    assert int(painted.seen[-1][1]) == HELD_PERCENT
    assert text_of(app.stage) == "Downloading: 33.0 MB of 40.0 MB"
    assert status() == f"Pulling {MODEL}…"

    # 2. Cancel mid-download: the handle is cancelled, the server sees the hang-up.
    press(app.cancel_button)
    run_until(lambda: app.last_result is not None)
    cancelled = app.last_result
    assert cancelled.cancelled and handle.cancelled()
    assert server.wait_for(lambda s: s.disconnects_seen == 1)
    assert status() == (
        f"Cancelled at {HELD_PERCENT}%. Pull again to resume: Ollama keeps what it "
        "downloaded."
    )
    painted.check()

    # 3. Pull again, to the end: the bar reaches 100%.
    painted.seen.clear()
    server.enqueue(pull_script(MODEL, layers=LAYERS, steps=40), endpoint="pull")
    press(app.pull_button)
    run_until(lambda: app.last_result is not cancelled)
    assert not app.last_result.cancelled
    assert painted.last is not None and painted.last.done
    assert painted.seen[-1][1] == 100
    assert status().startswith(f"Pulled {MODEL} in ")
    painted.check()

    # 4. A model the registry does not have: the error in the status line.
    server.unknown_models = {"no-such-model"}
    app_model_set(app, "no-such-model")
    press(app.pull_button)
    run_until(lambda: app.last_error is not None)
    assert isinstance(app.last_error, ModelNotFound)
    assert status() == (
        "No model 'no-such-model' to pull (pull model manifest: file does not exist)."
    )
    assert app.handle is None  # Pull works again


def text_of(label: Any) -> str:
    return str(label.text() if hasattr(label, "text") else label.cget("text"))


def app_model_set(app: Any, name: str) -> None:
    widget = app.model
    if hasattr(widget, "setText"):  # Qt
        widget.setText(name)
    else:  # Tk
        widget.delete(0, "end")
        widget.insert(0, name)


def test_tk_pull_grows_cancels_completes_and_reports_errors(
    server: FakeOllama, tk_root: Any, examples_path: None
) -> None:
    tk_pull = load("tk_pull")
    root = tk_root
    client = StreamingClient(server.url)
    app = tk_pull.PullApp(root, client, MODEL)
    bars: list[float] = []

    def run_until(condition: Callable[[], bool]) -> None:
        expired: list[bool] = []
        timer = root.after(int(WAIT * 1000), lambda: expired.append(True))
        while not condition() and not expired:
            root.tk.dooneevent(0)  # waits for the next Tk event
            bars.append(float(app.bar["value"]))
        root.after_cancel(timer)
        assert condition()

    painted = Painted(
        lambda: (
            float(app.bar["value"]),
            str(app.speed.cget("text")),
            str(app.eta.cget("text")),
        )
    )
    app.show = painted.wrap(app.show)
    try:
        drive(
            app,
            server,
            painted,
            run_until,
            lambda button: button.invoke(),
            lambda: str(app.status.cget("text")),
        )
        # The last message is wider than the window: it wraps, all of it seen.
        assert too_long_for_a_line(app.status)
        run_until(lambda: tk_shows_whole(app.status))
    finally:
        app.dispatcher.close()
        client.close()
    # Sampled after every Tk event: the bar only fell when a new pull began.
    falls = [i for i in range(1, len(bars)) if bars[i] < bars[i - 1]]
    assert all(bars[i] == 0 for i in falls)


def test_qt_pull_grows_cancels_completes_and_reports_errors(
    server: FakeOllama, qt_app: Any, examples_path: None
) -> None:
    import shiboken6

    qt_pull = load("qt_pull")
    client = StreamingClient(server.url)

    def run_until(condition: Callable[[], bool]) -> None:
        assert qt_run_until(qt_app, condition)

    window = qt_pull.PullWindow(client, MODEL)
    painted = Painted(
        lambda: (window.bar.value() / 10, window.speed.text(), window.eta.text())
    )
    window.show_progress = painted.wrap(window.show_progress)
    try:
        window.show()
        drive(
            window,
            server,
            painted,
            run_until,
            lambda button: button.click(),
            window.status.text,
        )
    finally:
        window.close()
        client.close()
        shiboken6.delete(window)  # on the Qt thread, not by a later GC elsewhere
        gc.collect()


def test_the_demo_server_paces_only_the_big_layer(examples_path: None) -> None:
    server_module = load("pull_demo_server")
    script = server_module.paced_pull(MODEL)
    delays = sum(isinstance(step, Delay) for step in script)
    lines = [step for step in script if not isinstance(step, Delay)]
    assert lines == pull_script(MODEL, steps=120)
    assert delays == 121  # the 2 GB layer's lines: the rest pass at once
