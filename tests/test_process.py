"""The whole process: Ctrl-C, exiting with streams open, a fork, what the library
installs process-wide, and where it logs.

Issue 7: a child forked while a stream runs owns none of the parent's streams;
its normal exit (exit handlers run) or its ``client.close()`` must not shut
down the sockets it shares with the parent (on both transports: each pools its
own sockets). Issue 9: the requests transport costs unrelated code nothing: no
audit hook, no patched class or function, and tracking only in the session's
pool for the Ollama URL. Each runs a fresh interpreter, so that only its own
state is there (not, say, a QApplication an earlier test made).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ollama_stream_sync.testing import (
    Chunk,
    DoneLine,
    FakeOllama,
    Stall,
    http_error,
    reply,
)

CTRL_C = """
import signal
signal.signal(signal.SIGINT, signal.default_int_handler)
"""
"""A child's first lines: Ctrl-C raises KeyboardInterrupt, as in a terminal.

A child inherits an ignored SIGINT (pytest started by ``nohup`` or ``cmd &``
from a script), and Python then leaves it ignored: the child would never see
the test's Ctrl-C."""

CHILD_PRELUDE = (
    CTRL_C
    + """
import sys
from ollama_stream_sync import StreamingClient
client = StreamingClient(sys.argv[1])
user = [{"role": "user", "content": "hi"}]
def on_content(text):
    print("content", text, flush=True)
"""
)


CHILD_LIFE = 60  # bounds a hung child process; never a timing assertion


def end(child: subprocess.Popen[str]) -> None:
    """Kill ``child`` if it still runs, reap it and close its pipes: no
    ResourceWarning surfaces in a later test."""
    if child.poll() is None:
        child.kill()
    child.communicate()


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
        out, err = child.communicate(timeout=CHILD_LIFE)
    finally:
        end(child)
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
        end(child)
    assert child.returncode == 0, err
    assert "main code ends" in out
    # the atexit hook cancelled both streams and closed their connections
    assert server.wait_for(lambda s: s.disconnects_seen == 2)


def test_ctrl_c_in_a_for_loop_cancels_and_exits_promptly(server: FakeOllama) -> None:
    """A real SIGINT, in a real process, while the loop waits on a silent model."""
    server.enqueue([Chunk(content="Half"), Stall()])
    script = CTRL_C + textwrap.dedent(
        f"""
        import sys
        from ollama_stream_sync import StreamingClient
        with StreamingClient({server.url!r}) as client:
            stream = client.stream_chat("m", [{{"role": "user", "content": "hi"}}])
            try:
                for text in stream.text():
                    print("got", text, flush=True)
            except KeyboardInterrupt:
                print("interrupted", stream.handle.result().cancelled, flush=True)
                sys.exit(130)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "got Half"
        assert server.wait_stalled()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=CHILD_LIFE)
    finally:
        end(proc)
    assert proc.returncode == 130, err
    assert out.strip() == "interrupted True"
    assert server.wait_for(lambda s: s.disconnects_seen == 1)


QUIET_CHILD = """
import sys
from ollama_stream_sync import RetryPolicy, StreamingClient
client = StreamingClient(sys.argv[1], retry=RetryPolicy(initial_delay=0, jitter=False))
print(client.chat("m", [{"role": "user", "content": "hi"}]).content)
client.close()
"""


def test_no_logging_configured_means_nothing_on_stderr(server: FakeOllama) -> None:
    # A retry logs a warning; with no logging set up it must go nowhere.
    server.enqueue(http_error(503, "busy"), reply("after a retry"))
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(QUIET_CHILD), server.url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == "after a retry"
    assert len(server.stream_requests()) == 2  # the retry (and its warning) happened
    assert child.stderr == ""


def test_the_library_logger_has_a_null_handler() -> None:

    handlers = logging.getLogger("ollama_stream_sync").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)


FORK_PROGRAM = """
import faulthandler, json, os, sys, threading
import requests
from ollama_stream_sync import StreamingClient

url, transport, child_does = sys.argv[1:4]
session = requests.Session() if transport == "requests" else None
kwargs = {"session": session} if session is not None else {}
client = StreamingClient(url, read_timeout=None, **kwargs)
got = threading.Event()
handle = client.start_chat(
    "m", [{"role": "user", "content": "hi"}], on_content=lambda _: got.set()
)
assert got.wait(60), "no first chunk"
print("streaming", flush=True)
sys.stdin.readline()  # the test saw the server stall: fork now
pid = os.fork()
if pid == 0:  # the child: a normal exit, exit handlers and finalizers included
    # stuck (a lock held at fork time?): say where on stderr, then exit 1
    faulthandler.dump_traceback_later(10, exit=True)
    if child_does == "close then exit":
        client.close()
        if session is not None:
            session.close()
    sys.exit(0)
_, status = os.waitpid(pid, 0)
print("child", os.waitstatus_to_exitcode(status), flush=True)
sys.stdin.readline()  # the test released the server
result = handle.result(60)
print(json.dumps({"content": result.content, "done": result.done,
                  "cancelled": result.cancelled}), flush=True)
client.close()
if session is not None:
    session.close()
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("child_does", ["exit", "close then exit"])
def test_a_forked_child_leaves_the_parents_stream_alone(
    server: FakeOllama, transport: str, child_does: str, tmp_path: Path
) -> None:
    """A program forks while its stream runs; the child exits normally (its
    exit handlers and finalizers run), after ``client.close()`` or not. The
    parent's stream never sees a hang-up and completes. A fresh interpreter,
    so that only this program's state is forked (not, say, the QApplication
    an earlier test made, whose own exit handler cannot run in a fork)."""
    server.enqueue(
        [Chunk(content="before "), Stall(), Chunk(content="after"), DoneLine()]
    )
    errors = tmp_path / "stderr"
    with errors.open("w") as stderr:
        program = subprocess.Popen(
            [
                sys.executable,
                "-c",
                textwrap.dedent(FORK_PROGRAM),
                server.url,
                transport,
                child_does,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    assert program.stdin is not None and program.stdout is not None
    try:
        assert program.stdout.readline() == "streaming\n", errors.read_text()
        assert server.wait_stalled()
        program.stdin.write("\n")
        program.stdin.flush()
        line = program.stdout.readline()
        assert line == "child 0\n", f"the child failed: {line!r}\n{errors.read_text()}"
        # the parent's stream is still there: the server never saw it hang up
        assert server.disconnects_seen == 0, "the child hung up the parent's stream"
        server.release()
        out, _ = program.communicate("\n", timeout=60)
        assert program.returncode == 0, errors.read_text()
        report = json.loads(out.strip().splitlines()[-1])
        assert report == {"content": "before after", "done": True, "cancelled": False}
    finally:
        server.release()
        if program.poll() is None:
            program.kill()
            program.wait()
    assert server.wait_closed()


AUDIT_CHILD = """
import json, sys

added = []
def first_hook(event, args):
    if event == "sys.addaudithook":
        added.append(event)
sys.addaudithook(first_hook)  # sees every later sys.addaudithook call

import http.client, socket
import requests, requests.adapters, urllib3, urllib3.connection, urllib3.connectionpool

def snapshot():
    watched = {
        "socket.socket": socket.socket,
        "http.client.HTTPConnection": http.client.HTTPConnection,
        "urllib3.connection.HTTPConnection": urllib3.connection.HTTPConnection,
        "urllib3.connection.HTTPSConnection": urllib3.connection.HTTPSConnection,
        "urllib3.connectionpool.HTTPConnectionPool":
            urllib3.connectionpool.HTTPConnectionPool,
        "requests.adapters.HTTPAdapter": requests.adapters.HTTPAdapter,
        "requests.Session": requests.Session,
    }
    out = {name: sorted((k, id(v)) for k, v in vars(cls).items())
           for name, cls in watched.items()}
    out["socket functions"] = [id(socket.getaddrinfo), id(socket.create_connection)]
    out["urllib3 classes"] = [id(urllib3.connection.HTTPConnection),
                              id(urllib3.connectionpool.HTTPConnectionPool.ConnectionCls)]
    return out

before = snapshot()
from ollama_stream_sync import StreamingClient

ollama_url, other_url = sys.argv[1], sys.argv[2]
session = requests.Session()
with StreamingClient(ollama_url, session=session) as client:
    content = client.chat("m", [{"role": "user", "content": "hi"}]).content
# the same session, another host: the caller's own request
assert session.get(other_url + "/api/version", timeout=5).status_code == 200
adapter = session.get_adapter(other_url)
pools = [p for p in adapter.poolmanager.pools._container.values()
         if p.port == int(other_url.rsplit(":", 1)[1])]
other_plain = bool(pools) and all(
    p.ConnectionCls is urllib3.connection.HTTPConnection
    and all(type(c) is urllib3.connection.HTTPConnection
            for c in list(p.pool.queue) if c is not None)
    for p in pools
)
after = snapshot()
print(json.dumps({
    "content": content,
    "audit hooks added": len(added),
    "patched": sorted(k for k in before if before[k] != after[k]),
    "other host pool untouched": other_plain,
}))
"""


def test_the_requests_transport_installs_nothing_process_wide(
    server: FakeOllama,
) -> None:
    """Issue 9, in a fresh interpreter: streaming once over ``session=`` adds
    no audit hook (an audit hook installed first sees every later
    ``sys.addaudithook``, C callers included), patches no class or function
    of socket, http.client, urllib3 or requests, and leaves the session's pool
    for another host exactly as urllib3 made it."""
    server.enqueue([Chunk(content="streamed"), DoneLine()])
    with FakeOllama() as other:
        child = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(AUDIT_CHILD), server.url, other.url],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert child.returncode == 0, child.stderr
    report = json.loads(child.stdout.strip().splitlines()[-1])
    assert report["content"] == "streamed"
    assert report["audit hooks added"] == 0
    assert report["patched"] == []
    assert report["other host pool untouched"] is True
