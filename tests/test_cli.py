"""The command line, driven as a person would: in a real terminal (tmux) and in pipes.

Answers are scripted on a ``FakeOllama`` started by each test; a ``Stall`` keeps
an answer streaming for as long as a test needs it, so Ctrl-C always lands
mid-answer. How the terminal is driven: ``tests/terminal.py``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sysconfig
from importlib import metadata
from pathlib import Path

import pytest

from ollama_stream_sync._cli._chat import LEAVE_HINT
from ollama_stream_sync.testing import Chunk, FakeOllama, Stall, http_error, reply

from .support.terminal import (
    CLI,
    ROOT,
    SCREEN_WAIT,
    TIMEOUT,
    WIDTH,
    Terminal,
    assert_one_line_failure,
    cli_env,
    run_cli,
    run_in_pty,
)

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
MODEL = "fake-model"  # FakeOllama lists this one by default


def prompts(screen: str) -> int:
    return sum(1 for line in screen.splitlines() if line.startswith(">>>"))


# -- demo -----------------------------------------------------------------------------


def test_demo_in_a_terminal_colours_wraps_stops_and_points_on(
    terminal: Terminal,
) -> None:
    terminal.start("demo", "--delay", "0")
    assert terminal.exit_status() == 0
    screen = terminal.screen()
    coloured = terminal.screen(escapes=True)
    assert "\x1b[90m" in coloured  # thinking in grey
    # Our own line breaks, at word boundaries: no line reaches past the edge.
    assert max(len(line) for line in screen.splitlines()) <= WIDTH
    words = " ".join(screen.split())
    assert "so take an umbrella." in words
    assert "[stopped]" in screen
    assert "Next steps:" in screen
    assert "python -m ollama_stream_sync chat --model qwen3 --think" in screen
    assert "Traceback" not in screen


def test_demo_next_steps_wrap_at_50_columns_and_name_no_interpreter_path(
    terminal: Terminal, long_python: str
) -> None:
    terminal.start("demo", "--delay", "0", width=50, python=long_python)
    assert terminal.exit_status() == 0
    screen = terminal.screen()
    assert max(len(line) for line in screen.splitlines()) <= 50, screen
    steps = " ".join(screen.split("Next steps:")[1].split())
    assert "python -m ollama_stream_sync chat --model qwen3 --think" in steps
    assert "a-long-folder-name" not in screen


def test_demo_with_no_color_in_a_terminal_has_plain_sections(
    terminal: Terminal,
) -> None:
    terminal.start("demo", "--delay", "0", env=cli_env(NO_COLOR="1"))
    assert terminal.exit_status() == 0
    coloured = terminal.screen(escapes=True)
    assert not ANSI.search(coloured), coloured
    assert "Thinking:" in coloured and "Answer:" in coloured


def test_ctrl_c_in_the_demo_stops_it_with_status_130(terminal: Terminal) -> None:
    with FakeOllama(models=[MODEL]) as server:
        server.enqueue([Chunk(thinking="Pondering the weather"), Stall()])
        terminal.start("demo", "--host", server.url, "--model", MODEL)
        terminal.wait("Pondering the weather")
        assert server.wait_stalled(timeout=SCREEN_WAIT)
        terminal.keys("C-c")
        assert terminal.exit_status() == 130
        assert server.wait_closed(timeout=SCREEN_WAIT)  # the cancel hung up
    screen = terminal.screen()
    assert "interrupted" in screen and "Traceback" not in screen


def test_piped_demo_has_no_escapes_and_keeps_lines_whole() -> None:
    done = run_cli("demo", "--delay", "0")
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout and "\r" not in done.stdout
    assert "It is 18 °C in Paris with light rain, so take an umbrella." in done.stdout
    assert done.stdout.index("Thinking:") < done.stdout.index("Answer:")
    assert "[stopped]" in done.stdout and "Next steps:" in done.stdout
    assert (
        "\n    python -m ollama_stream_sync chat --model qwen3 --think\n" in done.stdout
    )
    # Each answer's phases, as on_phase reported them; no live status piped.
    trails = [line for line in done.stdout.splitlines() if line.startswith("phases:")]
    assert len(trails) == 2, done.stdout
    first, second = (line.removeprefix("phases: ").split(" → ") for line in trails)
    assert first[0] == "connecting" and first[-1] == "done"
    assert "tool_call" in first and first.count("connecting") == 2  # two rounds
    assert second[0] == "connecting" and second[-2:] == ["answering", "cancelled"]
    assert "…" not in done.stdout


def test_demo_in_a_terminal_shows_the_loading_phase_live(terminal: Terminal) -> None:
    with FakeOllama(models=[MODEL]) as server:  # /api/ps lists nothing: not loaded
        server.enqueue([Stall(), *reply("Ready now.")])
        terminal.start("demo", "--host", server.url, "--model", MODEL)
        terminal.wait(f"loading {MODEL}…")
        assert server.wait_stalled(timeout=SCREEN_WAIT)
        server.release()
        assert terminal.exit_status() == 0  # the second answer is the default one
    screen = terminal.screen()
    assert "Ready now." in screen
    assert f"loading {MODEL}…" not in screen  # the answer replaced it
    # The probe may answer before the request is sent ("waiting" skipped) or after.
    assert "loading → answering → done" in screen.split("phases: connecting → ")[1]


def test_no_color_is_honoured_on_a_terminal() -> None:
    coloured = run_in_pty(["demo", "--delay", "0"], cli_env())
    plain = run_in_pty(["demo", "--delay", "0"], cli_env(NO_COLOR="1"))
    assert "\x1b[90m" in coloured
    assert "\x1b" not in plain
    assert "Thinking:" in plain and "[stopped]" in plain


def test_demo_against_a_server_that_refuses(refused_url: str) -> None:
    line = assert_one_line_failure(run_cli("demo", "--host", refused_url))
    assert refused_url in line and "ollama serve" in line


def test_demo_with_a_model_the_server_lacks() -> None:
    with FakeOllama() as server:
        server.enqueue(http_error(404, "model 'nope' not found"))
        done = run_cli("demo", "--host", server.url, "--model", "nope")
    line = assert_one_line_failure(done)
    assert "model 'nope' not found" in line and "ollama pull nope" in line


# -- chat -----------------------------------------------------------------------------


def test_chat_in_a_terminal_streams_stops_keeps_history_and_leaves(
    terminal: Terminal,
) -> None:
    with FakeOllama() as server:
        server.enqueue(
            reply("Hello there, human.", thinking="They greet me."),
            [Chunk(content="Once upon a time"), Stall()],
            reply("And so it ended."),
        )
        terminal.start("chat", "--model", MODEL, "--host", server.url, "--think")
        terminal.wait(lambda s: prompts(s) == 1, "the first prompt")
        terminal.keys("hi", "Enter")
        screen = terminal.wait(lambda s: prompts(s) == 2, "the second prompt")
        assert "Thinking:" in screen and "They greet me." in screen
        assert "Hello there, human." in screen and "tokens/s]" in screen

        terminal.keys("tell me a story", "Enter")
        terminal.wait("Once upon a time")
        assert server.wait_stalled(timeout=SCREEN_WAIT)
        terminal.keys("C-c")  # stops the answer, not the chat
        screen = terminal.wait(lambda s: prompts(s) == 3, "the prompt after Stop")
        assert "[stopped" in screen and screen.count(LEAVE_HINT) == 1
        # the stalled stream hung up (an idle keep-alive connection may stay)
        assert server.wait_for(lambda s: s.disconnects_seen == 1, SCREEN_WAIT)

        terminal.keys("go on", "Enter")
        terminal.wait(lambda s: prompts(s) == 4, "the prompt after the 3rd answer")
        sent = server.stream_requests()[-1].body["messages"]
        assert [m["role"] for m in sent] == ["user", "assistant"] * 2 + ["user"]
        assert sent[3]["content"] == "Once upon a time"  # the partial answer kept

        # Typing a line started afresh: at an idle prompt, the first Ctrl-C
        # only says how to leave, and a second one leaves.
        terminal.keys("C-c")
        screen = terminal.wait(lambda s: prompts(s) == 5, "the prompt after the hint")
        assert screen.count(LEAVE_HINT) == 2
        terminal.keys("C-c")
        assert terminal.exit_status() == 0
    assert "Traceback" not in terminal.screen()


def test_chat_in_a_terminal_says_the_model_is_loading_and_ctrl_c_twice_leaves(
    terminal: Terminal,
) -> None:
    with FakeOllama() as server:
        server.loaded = []  # /api/ps: the model is not in memory
        server.enqueue([Stall(), *reply("Too late.")])  # loading takes "forever"
        terminal.start("chat", "--model", MODEL, "--host", server.url)
        terminal.wait(lambda s: prompts(s) == 1, "the prompt")
        terminal.keys("hi", "Enter")
        terminal.wait(f"loading {MODEL}…")
        assert server.wait_stalled(timeout=SCREEN_WAIT)
        terminal.keys("C-c")  # cancel works while loading, too
        screen = terminal.wait(lambda s: prompts(s) == 2, "the prompt after Stop")
        assert "[stopped; the 0 characters so far stay in the history]" in screen
        assert "loading" not in screen  # the status line was cleared
        assert server.wait_closed(timeout=SCREEN_WAIT)
        # The Ctrl-C that stopped the answer was the first of two: the hint
        # says so, and the next Ctrl-C, at the prompt, leaves.
        assert LEAVE_HINT in screen
        terminal.keys("C-c")
        assert terminal.exit_status() == 0
    assert terminal.screen().count(LEAVE_HINT) == 1


def test_chat_in_a_terminal_shows_waiting_until_the_answer_replaces_it(
    terminal: Terminal,
) -> None:
    with FakeOllama() as server:
        server.loaded = [MODEL]  # in memory: the model reads the prompt
        server.enqueue([Stall(), *reply("Here it is.", thinking="Hmm.")])
        terminal.start("chat", "--model", MODEL, "--host", server.url, "--think")
        terminal.wait(lambda s: prompts(s) == 1, "the prompt")
        terminal.keys("hi", "Enter")
        terminal.wait(f"waiting for {MODEL}…")
        assert server.wait_stalled(timeout=SCREEN_WAIT)
        server.release()
        screen = terminal.wait(lambda s: prompts(s) == 2, "the second prompt")
        # The status was blanked with spaces: what is left is seen as nothing.
        lines = [line.rstrip() for line in screen.splitlines()]
        start = lines.index(">>> hi")
        assert lines[start + 1 : start + 5] == ["Thinking:", "Hmm.", "", "Answer:"]
        assert "waiting" not in screen and "Here it is." in screen
        terminal.keys("C-d")
        assert terminal.exit_status() == 0


def test_piped_chat_shows_no_status_line(tmp_path: Path) -> None:
    typed = tmp_path / "typed.txt"
    typed.write_text("hi\n", encoding="utf-8")
    with FakeOllama() as server, typed.open(encoding="utf-8") as stdin:
        server.enqueue([Stall(), *reply("Done loading.")])
        with subprocess.Popen(
            [*CLI, "chat", "--model", MODEL, "--host", server.url],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=cli_env(),
        ) as child:
            assert server.wait_stalled(timeout=SCREEN_WAIT)  # "loading" by now
            server.release()
            out, err = child.communicate(timeout=TIMEOUT)
    assert child.returncode == 0, err
    assert "Done loading." in out
    assert "loading fake" not in out and "…" not in out and "\r" not in out


def test_chat_in_a_terminal_leaves_on_ctrl_d(terminal: Terminal) -> None:
    with FakeOllama() as server:
        terminal.start("chat", "--model", MODEL, "--host", server.url)
        terminal.wait(lambda s: prompts(s) == 1, "the prompt")
        terminal.keys("/help", "Enter")
        terminal.wait("/load FILE")
        terminal.keys("C-d")
        assert terminal.exit_status() == 0


def test_chat_in_a_terminal_without_a_server_says_so_in_one_line(
    terminal: Terminal, refused_url: str
) -> None:
    terminal.start("chat", "--model", MODEL, "--host", refused_url)
    assert terminal.exit_status() == 1
    screen = terminal.screen().splitlines()
    # tmux adds "Pane is dead (...)" once bash has exited too: not ours.
    lines = [s for s in screen if s.strip() and not s.startswith("Pane is dead")]
    assert lines[1:] == ["[exit status 1]"]
    line = lines[0]
    assert line.startswith("ollama-stream-sync: error: could not connect to ")
    assert refused_url in line and "ollama serve" in line and "--host URL" in line


def test_chat_without_a_server_fails_before_the_prompt(refused_url: str) -> None:
    done = run_cli("chat", "--model", MODEL, "--host", refused_url)
    line = assert_one_line_failure(done)
    assert refused_url in line and "ollama serve" in line


def test_chat_host_defaults_to_ollama_host(refused_url: str) -> None:
    done = run_cli("chat", "--model", MODEL, env=cli_env(OLLAMA_HOST=refused_url))
    assert refused_url in assert_one_line_failure(done)


def test_chat_with_a_model_the_server_lacks_fails_before_the_prompt() -> None:
    with FakeOllama(models=["qwen3:latest", "llama3.2:latest"]) as server:
        done = run_cli("chat", "--model", "nope", "--host", server.url)
        assert server.stream_requests() == []
    line = assert_one_line_failure(done)
    assert "'nope'" in line and "ollama pull nope" in line and "qwen3:latest" in line


def test_chat_finds_a_model_named_without_its_tag() -> None:
    with FakeOllama(models=["qwen3:latest"]) as server:
        server.enqueue(reply("Yes."))
        done = run_cli("chat", "--model", "qwen3", "--host", server.url, stdin="hi\n")
    assert done.returncode == 0, done.stderr
    assert "Yes." in done.stdout


def test_an_error_in_a_turn_keeps_the_chat_going() -> None:
    with FakeOllama() as server:
        server.enqueue(http_error(404, "model 'fake-model' not found"), reply("Back."))
        done = run_cli(
            "chat", "--model", MODEL, "--host", server.url, stdin="hi\nagain\n"
        )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    errors = done.stderr.strip().splitlines()
    assert len(errors) == 1 and "ollama pull fake-model" in errors[0]
    assert "Back." in done.stdout


def test_chat_save_then_load_continues_the_conversation(tmp_path: Path) -> None:
    saved = tmp_path / "chat.json"
    with FakeOllama() as server:
        server.enqueue(reply("Paris."), reply("About two million."))
        first = run_cli(
            "chat", "--model", MODEL, "--host", server.url, "--system", "Be brief.",
            stdin=f"Capital of France?\n/save {saved}\n",
        )  # fmt: skip
        assert first.returncode == 0, first.stderr
        assert f"saved 3 messages to {saved}" in first.stdout
        data = json.loads(saved.read_text(encoding="utf-8"))
        assert [m["role"] for m in data["messages"]] == ["system", "user", "assistant"]

        second = run_cli(
            "chat", "--model", MODEL, "--host", server.url,
            stdin=f"/load {saved}\nHow many people live there?\n",
        )  # fmt: skip
        assert second.returncode == 0, second.stderr
        assert f"loaded 3 messages from {saved}" in second.stdout
        assert "About two million." in second.stdout
        sent = server.stream_requests()[-1].body["messages"]
    assert [m["content"] for m in sent] == [
        "Be brief.",
        "Capital of France?",
        "Paris.",
        "How many people live there?",
    ]


def test_chat_load_of_a_bad_file_says_so_and_goes_on(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{}", encoding="utf-8")
    with FakeOllama() as server:
        done = run_cli(
            "chat", "--model", MODEL, "--host", server.url,
            stdin=f"/load {bad}\n/load {tmp_path / 'missing.json'}\n/nope\n/save\n",
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "is not a chat saved with /save" in done.stdout
    assert "could not read" in done.stdout
    assert "unknown command /nope" in done.stdout
    assert "usage: /save FILE" in done.stdout


# -- the command line itself ---------------------------------------------------------


def test_version_comes_from_the_package_metadata() -> None:
    done = run_cli("--version")
    assert done.returncode == 0
    version = metadata.version("ollama-stream-sync")
    assert done.stdout.startswith(f"ollama-stream-sync {version} (ollama ")


@pytest.mark.parametrize("name", [None, "demo", "chat", "pull"])
def test_help_of_each_command_documents_exit_codes(name: str | None) -> None:
    done = run_cli(*([name] if name else []), "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: ")
    assert "exit status:" in done.stdout and "130" in done.stdout


def test_usage_errors_exit_with_2() -> None:
    assert run_cli("frobnicate").returncode == 2
    assert run_cli("demo", "--no-such-option").returncode == 2
    negative = run_cli("demo", "--delay", "-1")
    assert negative.returncode == 2 and "--delay" in negative.stderr
    missing_model = run_cli("chat")
    assert missing_model.returncode == 2
    assert "--model" in missing_model.stderr


def test_console_script_is_declared() -> None:
    scripts = metadata.entry_points(group="console_scripts")
    (script,) = [s for s in scripts if s.name == "ollama-stream-sync"]
    assert script.value == "ollama_stream_sync._cli:main"


def test_usage_names_the_program_as_people_type_it(long_python: str) -> None:
    module = subprocess.run(
        [long_python, "-m", "ollama_stream_sync", "chat"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=ROOT,
        env=cli_env(),
        check=False,
    )
    assert module.returncode == 2
    assert module.stderr.startswith("usage: python -m ollama_stream_sync chat ")
    script = Path(sysconfig.get_path("scripts")) / "ollama-stream-sync"
    done = subprocess.run(
        [str(script), "--help"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=cli_env(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: ollama-stream-sync ")
    assert "Start with 'ollama-stream-sync demo'" in done.stdout


def test_output_cut_short_by_a_closed_pipe_is_quiet() -> None:
    with subprocess.Popen(
        [*CLI, "demo", "--delay", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=cli_env(),
    ) as child:
        assert child.stdout is not None and child.stderr is not None
        child.stdout.readline()
        child.stdout.close()  # like `| head -1`
        err = child.stderr.read()
        assert child.wait(timeout=TIMEOUT) in (0, 1)
    assert b"Traceback" not in err


# -- what the phase display relies on in the engine -------------------------------


def test_a_conversation_round_after_the_model_answered_is_not_loading() -> None:
    from ollama_stream_sync import Conversation, Phase, StreamingClient
    from ollama_stream_sync.testing import tool_call

    def weather(city: str) -> str:
        """The weather in a city.

        Args:
            city: its name.
        """
        return "sunny"

    with FakeOllama() as server:
        server.loaded = []  # not in memory: the first round loads it
        call = tool_call("weather", {"city": "Paris"})
        server.enqueue([Stall(), *reply(tool_calls=[call])], reply("Sunny."))
        with StreamingClient(server.url, probe_loading=True) as client:
            conv = Conversation(client, MODEL, tools=[weather])
            stream = conv.stream_send("Weather in Paris?")
            handle = stream.handle
            assert handle.wait_for(lambda _: handle.phase == "loading", 5.0)
            assert server.wait_stalled(timeout=5.0)
            server.release()
            names = [e.name for e in stream if isinstance(e, Phase)]
        assert MODEL in server.loaded  # the first round loaded it
    second_round = names[names.index("tool_call") + 1 :]
    assert "loading" not in second_round, names


def test_fake_ollama_lists_a_model_in_ps_while_it_answers() -> None:
    import ollama

    with FakeOllama() as server:
        server.enqueue([Chunk(content="Once"), Stall()])
        with ollama.Client(server.url) as sdk:
            stream = sdk.chat(MODEL, [{"role": "user", "content": "?"}], stream=True)
            next(iter(stream))
            assert server.wait_stalled(timeout=5.0)
            names = [m.model for m in sdk.ps().models]
            server.release()
    assert MODEL in names
