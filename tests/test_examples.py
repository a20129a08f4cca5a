"""The demo and the examples run as a user would run them, against the fake server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 60  # a hang fails the test; this bounds it, it measures nothing


def run(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_demo_streams_thinking_tool_call_and_answer() -> None:
    out = run("-m", "ollama_stream_sync", "demo", "--delay", "0")
    thinking, answer = out.index("Thinking:"), out.index("Answer:")
    assert thinking < out.index("Tool call:") < out.index("Tool result:") < answer
    assert 'get_weather({"city": "Paris"})' in out
    assert "take an umbrella" in out
    assert "done: stop" in out and "tokens" in out


def test_cli_without_command_prints_usage() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ollama_stream_sync"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 2 and "usage" in done.stdout


def test_basic_chat_example_keeps_history() -> None:
    out = run("examples/basic_chat.py")
    assert out.count("Thinking:") == 2 and out.count("Answer:") == 2
    assert "391 - 17 = 374." in out


def test_background_cancel_example_keeps_partial_text() -> None:
    out = run("examples/background_cancel.py")
    assert "[on_done: cancelled=True]" in out
    assert "kept " in out and "Once upon a time" in out


def test_tools_chat_example_runs_the_tool_loop() -> None:
    out = run("examples/tools_chat.py")
    assert '-> get_weather({"city": "Paris"})' in out
    assert "<- 77.0" in out
    assert "Tokyo: 25 °C (77 °F)" in out
    assert "You asked about Paris and Tokyo." in out
    roles = "system > user > assistant > tool > tool > assistant > tool > assistant"
    assert f"History: {roles} > user > assistant" in out


@pytest.mark.parametrize("example", ["basic_chat", "background_cancel", "tools_chat"])
def test_an_example_without_a_server_says_so_in_one_line(
    example: str, refused_url: str
) -> None:
    done = subprocess.run(
        [sys.executable, f"examples/{example}.py", "--host", refused_url],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()  # the error's own line, no traceback
    assert refused_url in line and "ollama serve" in line


def test_telemetry_example_prints_the_spans_of_a_tool_round_and_a_cancel() -> None:
    out = run("examples/telemetry_spans.py")
    tree = out[out.index("weather question") :]
    chat = tree.index("  chat qwen3")
    assert chat < tree.index("  execute_tool get_weather") < tree.rindex("  chat qwen3")
    assert "finish_reasons=('tool_call',)" in tree
    assert "ollama_stream_sync.tool_call gen_ai.tool.name=get_weather" in tree
    cancelled = tree[tree.index("cancelled question") :]
    assert "ollama_stream_sync.cancelled=True" in cancelled
    assert "phase=thinking" in cancelled and "error.type" not in cancelled
