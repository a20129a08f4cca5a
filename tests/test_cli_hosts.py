"""``ollama-stream-sync hosts``: one row per host; status 1 if one is down."""

from __future__ import annotations

from ollama_stream_sync.testing import FakeOllama

from .support.terminal import assert_one_line_failure, cli_env, run_cli


def rows(stdout: str) -> dict[str, list[str]]:
    """The table's rows by host URL, cells split on runs of two spaces or more."""
    lines = stdout.strip().splitlines()
    assert lines[0].split()[:2] == ["HOST", "STATUS"]
    cells = [[c.strip() for c in line.split("  ") if c.strip()] for line in lines[1:]]
    return {row[0]: row[1:] for row in cells if row[0].startswith("http")}


def test_a_row_per_host_with_its_models() -> None:
    with FakeOllama(models=["qwen3", "llama3.2"]) as a, FakeOllama() as b:
        a.loaded = ["qwen3"]
        done = run_cli("hosts", "--host", a.url, "--host", b.url)
    assert done.returncode == 0, done.stderr
    table = rows(done.stdout)
    status, breaker, in_flight, version = table[a.url][:4]
    assert (status, breaker, in_flight, version) == ("ok", "closed", "0", "0.13.0-fake")
    assert table[a.url][-1] == "qwen3 (of 2 on disk)"
    assert table[b.url][-1] == "- (of 1 on disk)"


def test_a_host_that_does_not_answer_is_a_row_a_reason_and_status_1(
    refused_url: str,
) -> None:
    with FakeOllama() as server:
        done = run_cli("hosts", "--host", server.url, "--host", refused_url)
    line = assert_one_line_failure(done)
    assert line.endswith("1 of 2 hosts did not answer")
    assert rows(done.stdout)[refused_url][0] == "down"
    assert f"{refused_url}: could not connect" in done.stdout


def test_without_host_it_asks_ollama_host() -> None:
    with FakeOllama() as server:
        done = run_cli("hosts", env=cli_env(OLLAMA_HOST=server.url))
    assert done.returncode == 0, done.stderr
    assert list(rows(done.stdout)) == [server.url]
