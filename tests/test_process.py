"""Whole-process behaviour: Ctrl-C in chat(), and exiting with streams still open."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

from ollama_stream_sync.testing import Chunk, FakeOllama, Stall

from .conftest import WAIT

CHILD_PRELUDE = """
import sys
from ollama_stream_sync import StreamingClient
client = StreamingClient(sys.argv[1])
user = [{"role": "user", "content": "hi"}]
def on_content(text):
    print("content", text, flush=True)
"""


CHILD_LIFE = 60  # bounds a hung child process; never a timing assertion


def spawn(server: FakeOllama, body: str) -> subprocess.Popen[str]:
    code = CHILD_PRELUDE + textwrap.dedent(body)
    return subprocess.Popen(
        [sys.executable, "-c", code, server.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_ctrl_c_in_blocking_chat_cancels_and_raises(server: FakeOllama) -> None:
    server.enqueue([Chunk(content="partial"), Stall()])
    child = spawn(
        server,
        """
        try:
            client.chat("m", user, on_content=on_content)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            raise SystemExit(42)
        """,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "content partial"
        assert server.wait_stalled()
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=WAIT)
    finally:
        child.kill()
    assert child.returncode == 42, err
    assert "interrupted" in out
    assert server.wait_for(lambda s: s.disconnects_seen == 1)  # stream was closed


def test_program_exits_with_background_streams_open(server: FakeOllama) -> None:
    server.enqueue([Chunk(content="a"), Stall()], [Chunk(content="b"), Stall()])
    child = spawn(
        server,
        """
        import threading
        started = threading.Barrier(3)
        h1 = client.start_chat("m", user, on_content=lambda t: started.wait(5))
        h2 = client.start_chat("m", user, on_content=lambda t: started.wait(5))
        started.wait(5)
        print("main code ends", flush=True)
        """,
    )
    try:
        # A hang guard for the child's whole life, imports included (seconds on
        # a busy machine): it measures nothing.
        out, err = child.communicate(timeout=CHILD_LIFE)
    finally:
        child.kill()
    assert child.returncode == 0, err
    assert "main code ends" in out
    # the atexit hook cancelled both streams and closed their connections
    assert server.wait_for(lambda s: s.disconnects_seen == 2)
