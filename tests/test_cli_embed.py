"""``ollama-stream-sync embed``: vectors alone on stdout, the pull bar on stderr."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ollama_stream_sync.testing import FakeOllama, Stall, embedding

from .support.terminal import (
    SCREEN_WAIT,
    Terminal,
    assert_one_line_failure,
    run_cli,
)

SIZE = 4
MODELS = [{"name": "emb", "embedding_length": SIZE}]


def write_texts(tmp_path: Path, count: int) -> tuple[Path, list[str]]:
    texts = [f"line number {i}" for i in range(count)]
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return path, texts


def test_piped_embed_writes_only_vectors_in_order(tmp_path: Path) -> None:
    path, texts = write_texts(tmp_path, 150)
    with FakeOllama(models=MODELS) as server:
        done = run_cli("embed", "--model", "emb", "--host", server.url, str(path))
    assert done.returncode == 0, done.stderr
    vectors = [json.loads(line) for line in done.stdout.splitlines()]
    assert vectors == [embedding(text, SIZE) for text in texts]
    assert done.stderr.splitlines() == [
        "embedded 64 of 150",
        "embedded 128 of 150",
        "embedded 150 of 150",
    ]


def test_standard_input_and_an_empty_one() -> None:
    with FakeOllama(models=MODELS) as server:
        done = run_cli("embed", "-m", "emb", "--host", server.url, "-", stdin="a\nb\n")
        assert [r.body["input"] for r in server.requests] == [["a", "b"]]
        empty = run_cli("embed", "-m", "emb", "--host", server.url, "-", stdin="")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "".join(json.dumps(embedding(t, SIZE)) + "\n" for t in "ab")
    assert (empty.returncode, empty.stdout) == (0, ""), empty.stderr


def test_failures_are_one_line(tmp_path: Path, refused_url: str) -> None:
    assert "cannot read" in assert_one_line_failure(
        run_cli("embed", "-m", "emb", str(tmp_path / "missing.txt"))
    )
    path, _ = write_texts(tmp_path, 3)
    failed = assert_one_line_failure(
        run_cli("embed", "-m", "emb", "--host", refused_url, str(path))
    )
    assert "could not connect" in failed
    usage = run_cli("embed", "-m", "", str(path))
    assert usage.returncode == 2 and "model must be a non-empty" in usage.stderr
    assert "Traceback" not in usage.stderr


def test_a_terminal_shows_the_bar_and_ctrl_c_cancels(
    terminal: Terminal, tmp_path: Path
) -> None:
    path, _ = write_texts(tmp_path, 100)
    with FakeOllama(models=MODELS) as server:
        server.enqueue([], [Stall()], endpoint="embed")
        terminal.start("embed", "-m", "emb", "--host", server.url, str(path))
        screen = terminal.wait("embedded 64 of 100", "the bar after a batch")
        assert re.search(r"embedded 64 of 100\s+64% \|", screen), screen
        assert server.wait_stalled(timeout=SCREEN_WAIT)
        terminal.keys("C-c")
        assert terminal.exit_status() == 130
        assert server.wait_for(lambda s: s.disconnects_seen == 1, SCREEN_WAIT)
    screen = terminal.screen()
    assert "ollama-stream-sync: embed cancelled after 64 of 100" in screen
    assert "Traceback" not in screen and "[" not in screen.split("cancelled")[0]
