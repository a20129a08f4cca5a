"""Races with the whole process: a forked child, and what the library installs.

Issue 7: a child forked while a stream runs owns none of the parent's streams;
its normal exit (exit handlers run) or its ``client.close()`` must not shut
down the sockets it shares with the parent.

Issue 9: the requests transport costs unrelated code nothing: no audit hook,
no patched class or function, and tracking only in the session's pool for the
Ollama URL.
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import traceback

import pytest

from ollama_stream_sync.testing import Chunk, Done, FakeOllama, Stall

from .conftest import USER, WAIT, MakeClient


def wait_child(pid: int) -> int:
    """Wait (bounded) for a forked child; its exit code, or kill it and fail."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("the forked child did not exit")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:.*multi-threaded.*fork:DeprecationWarning")
@pytest.mark.parametrize("child_does", ["exit", "close then exit"])
def test_a_forked_child_leaves_the_parents_stream_alone(
    server: FakeOllama, make_client: MakeClient, child_does: str
) -> None:
    server.enqueue([Chunk(content="before "), Stall(), Chunk(content="after"), Done()])
    client = make_client(server.url, read_timeout=None)
    got = threading.Event()
    handle = client.start_chat("m", USER, on_content=lambda _: got.set())
    try:
        assert got.wait(WAIT) and server.wait_stalled()
        pid = os.fork()
        if pid == 0:  # the child: exit normally, exit handlers included
            code = 0
            # stuck (a lock held at fork time?): say where, then exit 3
            with contextlib.suppress(Exception):  # diagnostics only
                faulthandler.dump_traceback_later(WAIT / 2, file=sys.__stderr__)
            try:
                if child_does == "close then exit":
                    client.close()
                    for session in make_client.sessions:
                        session.close()
                import atexit

                atexit._run_exitfuncs()
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        code = wait_child(pid)
        assert code == 0, f"the child failed (exit code {code}): see its stderr"
        # the parent's stream is still there: the server never saw it hang up
        assert server.disconnects_seen == 0, "the child hung up the parent's stream"
        server.release()
        result = handle.result(WAIT)
        assert result.content == "before after" and result.done
        assert not result.cancelled
    finally:
        server.release()
        client.close()
        make_client.release()
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
    server.enqueue([Chunk(content="streamed"), Done()])
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
