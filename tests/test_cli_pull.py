"""``ollama-stream-sync pull``: a bar in a real terminal (tmux), plain lines in pipes.

The bar's figures come from the library's ``Progress``; the tests check what a
person sees: one bar redrawn in place with the stage, speed and time left, a
clean Ctrl-C that hangs up on the server, one line for a failure. A paced
script (``Delay`` between lines) is there only so the speed becomes known; a
``Stall`` holds the pull mid-download for as long as a test needs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ollama_stream_sync import Progress, QueueDispatcher, StreamingClient
from ollama_stream_sync._cli._pull import clock, human_bytes, progress_detail
from ollama_stream_sync.testing import Chunk, Delay, FakeOllama, Stall, pull_script

from .support import USER, WAIT
from .support.terminal import (
    SCREEN_WAIT,
    Terminal,
    assert_one_line_failure,
    cli_env,
    run_cli,
    run_in_pty,
)

MODEL = "llama3.2"
LAYERS = [50_000_000, 2_000, 500]
BAR = re.compile(r"^(\S.*?)\s+(\d+)% \|.*\| (.*)$")


def paced(script: list, delay: float = 0.04) -> list:
    """The script with a pause before each line, so the speed becomes known."""
    steps: list = []
    for step in script:
        steps += [Delay(delay), step]
    return steps


def bars(screen: str) -> list[re.Match[str]]:
    return [m for m in map(BAR.match, screen.splitlines()) if m]


# -- a terminal -------------------------------------------------------------------


def test_a_terminal_shows_one_bar_with_stage_speed_and_eta(
    terminal: Terminal,
) -> None:
    lines = pull_script(MODEL, layers=LAYERS, steps=40)
    # 36 lines of the big layer (1.4 s at least), then the pull holds at 85%.
    with FakeOllama() as server:
        server.enqueue([*paced(lines[:36]), Stall(), *lines[36:]], endpoint="pull")
        terminal.start("pull", MODEL, "--host", server.url)
        screen = terminal.wait(lambda s: "ETA" in s, "a bar with an ETA")
        (bar,) = bars(screen)  # one bar, redrawn in place
        stage, done, detail = bar.groups()
        assert stage == "downloading" and 0 < int(done) < 100
        assert re.fullmatch(
            r"[\d.]+ MB / 50\.0 MB · [\d.]+ [KMG]?B/s · ETA \d+:\d\d", detail
        ), detail
        assert server.wait_stalled(timeout=SCREEN_WAIT)
        server.release()
        assert terminal.exit_status() == 0
        assert server.requests[-1].body == {"model": MODEL, "stream": True}
    screen = terminal.screen()
    (bar,) = bars(screen)
    assert bar.group(1, 2) == ("done", "100")
    assert "pulled llama3.2 (50.0 MB) in " in screen
    assert "Traceback" not in screen


def test_ctrl_c_cancels_the_pull_hangs_up_and_says_it_resumes(
    terminal: Terminal,
) -> None:
    lines = pull_script(MODEL, layers=LAYERS, steps=40)
    with FakeOllama() as server:
        server.enqueue([*lines[:12], Stall()], endpoint="pull")
        terminal.start("pull", MODEL, "--host", server.url)
        terminal.wait(lambda s: "downloading" in s and "25%" in s, "25% downloaded")
        assert server.wait_stalled(timeout=SCREEN_WAIT)
        terminal.keys("C-c")
        assert terminal.exit_status() == 130
        assert server.wait_for(lambda s: s.disconnects_seen == 1, SCREEN_WAIT)
    screen = terminal.screen()
    (bar,) = bars(screen)  # left where it stopped
    assert bar.group(1, 2) == ("downloading", "25")
    assert (
        "ollama-stream-sync: pull cancelled at 25% (12.5 MB of 50.0 MB); Ollama "
        "keeps the layers it has downloaded, so pulling llama3.2 again resumes"
    ) in " ".join(screen.split())
    assert "Traceback" not in screen


def test_an_unknown_model_in_a_terminal_is_one_line_and_no_bar(
    terminal: Terminal,
) -> None:
    with FakeOllama(unknown_models=["nope"]) as server:
        terminal.start("pull", "nope", "--host", server.url)
        assert terminal.exit_status() == 1
    screen = terminal.screen().splitlines()
    # tmux adds "Pane is dead (...)" once bash has exited too: not ours.
    lines = [s for s in screen if s.strip() and not s.startswith("Pane is dead")]
    assert len(lines) == 2 and lines[1] == "[exit status 1]", lines
    assert lines[0].startswith("ollama-stream-sync: error: model 'nope' not found")


def test_without_tqdm_a_terminal_gets_plain_lines(
    terminal: Terminal, tmp_path: Path
) -> None:
    blocker = tmp_path / "no-tqdm" / "tqdm"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('tqdm blocked')\n")
    with FakeOllama() as server:
        server.enqueue(pull_script(MODEL, layers=LAYERS, steps=4), endpoint="pull")
        env = cli_env(PYTHONPATH=str(blocker.parent))
        terminal.start("pull", MODEL, "--host", server.url, env=env)
        assert terminal.exit_status() == 0
    screen = terminal.screen()
    assert not bars(screen)
    assert "pulling manifest\ndownloading   0%" in screen
    assert "verifying sha256 digest\nwriting manifest\npulled llama3.2" in screen


def test_no_color_leaves_the_bar_without_escape_codes() -> None:
    with FakeOllama() as server:
        server.enqueue(pull_script(MODEL, layers=LAYERS, steps=4), endpoint="pull")
        raw = run_in_pty(["pull", MODEL, "--host", server.url], cli_env(NO_COLOR="1"))
    assert "\x1b" not in raw
    assert "\r" in raw and "100%" in raw and "pulled llama3.2" in raw


# -- pipes ---------------------------------------------------------------------------


def test_piped_pull_prints_a_line_per_stage_and_per_ten_percent() -> None:
    with FakeOllama() as server:
        server.enqueue(pull_script(MODEL, layers=LAYERS, steps=40), endpoint="pull")
        done = run_cli("pull", MODEL, "--host", server.url, "--insecure")
        assert server.requests[-1].body == {
            "model": MODEL,
            "stream": True,
            "insecure": True,
        }
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "\r" not in done.stdout and "\x1b" not in done.stdout
    lines = done.stdout.splitlines()
    assert lines[0] == "pulling manifest"
    downloading = [line for line in lines if line.startswith("downloading")]
    shown = [int(line.split()[1].rstrip("%")) for line in downloading]
    assert shown == sorted(shown) and shown[0] == 0 and shown[-1] == 100
    assert len({p // 10 for p in shown}) == len(shown)  # one line per 10%
    assert downloading[-1].startswith("downloading 100%  (50.0 MB / 50.0 MB")
    assert lines[-3:-1] == ["verifying sha256 digest", "writing manifest"]
    assert re.fullmatch(r"pulled llama3\.2 \(50\.0 MB\) in \d+\.\d s", lines[-1])


def test_an_unknown_model_is_one_line_with_status_1() -> None:
    with FakeOllama(unknown_models=["nope"]) as server:
        done = run_cli("pull", "nope", "--host", server.url)
    line = assert_one_line_failure(done)
    assert line == (
        f"ollama-stream-sync: error: model 'nope' not found on {server.url} (pull "
        "model manifest: file does not exist); check its name and tag, e.g. on "
        "https://ollama.com/library"
    )


def test_no_server_is_one_line_with_status_1(refused_url: str) -> None:
    done = run_cli("pull", MODEL, "--host", refused_url)
    line = assert_one_line_failure(done)
    assert refused_url in line and "ollama serve" in line
    assert done.stdout == ""


def test_a_failure_mid_pull_is_one_line_with_status_1() -> None:
    from ollama_stream_sync.testing import ErrorLine

    lines = pull_script(MODEL, layers=LAYERS, steps=4)
    with FakeOllama() as server:
        server.enqueue(
            [*lines[:4], ErrorLine("max retries exceeded: EOF")], endpoint="pull"
        )
        done = run_cli("pull", MODEL, "--host", server.url)
    line = assert_one_line_failure(done)
    assert "max retries exceeded: EOF" in line


@pytest.mark.parametrize("command", ["pull", "chat", "demo"])
def test_a_host_naming_the_api_path_is_a_usage_error(command: str) -> None:
    args = {"pull": [MODEL], "chat": ["--model", MODEL], "demo": []}[command]
    done = run_cli(command, *args, "--host", "http://127.0.0.1:9/api")
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("ollama-stream-sync: error: host 'http://127.0.0.1:9/api'")
    assert "'http://127.0.0.1:9'" in line and "Traceback" not in done.stderr


def test_pull_needs_a_model_name() -> None:
    assert run_cli("pull").returncode == 2
    assert_one_line_failure(run_cli("pull", " "))


# -- the figures -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "text"),
    [(0, "0 B"), (999, "999 B"), (1500, "1.5 KB"), (2_019_377_376, "2.0 GB")],
)
def test_sizes_are_decimal_as_ollama_shows_them(count: int, text: str) -> None:
    assert human_bytes(count) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.4, "0:00"), (42, "0:42"), (725, "12:05"), (3723, "1:02:03")],
)
def test_time_left_reads_like_a_clock(seconds: float, text: str) -> None:
    assert clock(seconds) == text


def test_speed_is_not_available_until_the_library_knows_it() -> None:
    early = Progress(stage="downloading", completed=1_000_000, total=4_000_000)
    assert progress_detail(early) == "1.0 MB / 4.0 MB · speed n/a"
    steady = Progress(
        stage="downloading",
        completed=1_000_000,
        total=4_000_000,
        bytes_per_second=2_500_000.0,
        eta=1.2,
    )
    assert progress_detail(steady) == "1.0 MB / 4.0 MB · 2.5 MB/s · ETA 0:01"
    assert progress_detail(Progress(stage="manifest")) == ""
    verifying = Progress(stage="verifying", completed=5, total=5)
    assert progress_detail(verifying) == "5 B / 5 B"


# -- a library bug the pull's Ctrl-C works around ------------------------------------


def test_ctrl_c_landing_in_a_pumped_callback_cancels_the_stream() -> None:
    done: list[object] = []
    errors: list[object] = []

    def interrupted(text: str) -> None:
        raise KeyboardInterrupt  # what SIGINT does if it lands in the callback

    with FakeOllama() as server:
        server.enqueue([Chunk(content="Once"), Stall()])
        queue = QueueDispatcher()
        with StreamingClient(server.url) as client:
            handle = client.start_chat(
                MODEL,
                USER,
                on_content=interrupted,
                on_done=done.append,
                on_error=errors.append,
                dispatcher=queue,
            )
            with pytest.raises(KeyboardInterrupt):
                queue.pump_until(lambda: False, WAIT)
            handle.cancel()  # what a program does on Ctrl-C
            assert queue.pump_until(lambda: bool(done or errors), WAIT)
    assert errors == []
    assert handle.cancelled() and handle.result(WAIT).cancelled
