"""A fast, minimal Ollama ``/api/chat`` server for the benchmarks, in its own process.

Why a separate process: the client's CPU time and its GIL must not include the
server's work. Why not ``ollama_stream_sync.testing.FakeOllama``: that server is
built for faults, not for speed, and runs in the caller's process.

The request's ``model`` name chooses the stream, so every client path (bare SDK,
httpx, ``requests.Session``, the iterator) reaches the same answers with the same
arguments:

- ``batched:N``: N content lines then the done line. Every line is its own HTTP
  chunk, as Ollama frames them, but they are written back to back in large
  writes: the client, not the pace, is the limit (peak chunks/s).
- ``paced:N:US``: one line per HTTP chunk and per write, every US microseconds on
  absolute deadlines (a late line does not delay the next deadline), the pace of
  a real model.
- ``gated:N:RUN:K``: like ``batched:N``, but held at a gate until K requests of
  run RUN have arrived, so K streams really run at once (a client that starts
  them one by one would otherwise finish the first before starting the last).
  A client that cannot open K at once (a connection-pool limit) would wait
  forever: the gate also opens after ``GATE_QUIET`` seconds without a new
  arrival, and says so. ``GET /gate/RUN`` tells when it opened (on the
  system-wide monotonic clock, which the client shares) and how many waited.

Every content delta is five characters (`` w000`` to `` w999``, cycling), so a
stream of N lines holds exactly ``5 * N`` characters of text; clients check it.

HTTP/1.1 keep-alive, chunked transfer encoding, ``TCP_NODELAY``, one thread per
connection (256 concurrent streams are 256 mostly idle threads blocked in
``sendall``). ``GET /stats`` answers counters (the most streams active at once,
the server's own CPU time, how late paced lines were); ``POST /stats/reset``
clears them.

Run as a script it prints ``PORT <n>`` and serves until its stdin closes, so it
never outlives the benchmark that started it.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import sys
import threading
import time
from typing import Any

CONTENT_CHARS = 5
"""Characters of content in every line."""
CYCLE = 1000
"""Distinct lines before the content repeats (pre-rendered once)."""
MAX_HEADER_BYTES = 65536
WRITE_BYTES = 65536
"""Target size of one write in batched mode."""

GATE_QUIET = 0.5
"""Seconds without a new arrival after which a gate opens anyway."""
GATE_LIMIT = 60.0
"""Seconds after which a gate opens whatever happens (every wait is bounded)."""

_CREATED = "2026-01-01T00:00:00.000000000Z"


def _frame(line: bytes) -> bytes:
    """One NDJSON line as one HTTP chunk (the newline is part of the chunk)."""
    return b"%x\r\n%s\n\r\n" % (len(line) + 1, line)


def _content_line(i: int, model: str) -> bytes:
    return json.dumps(
        {
            "model": model,
            "created_at": _CREATED,
            "message": {"role": "assistant", "content": f" w{i % CYCLE:03d}"},
            "done": False,
        },
        separators=(",", ":"),
    ).encode()


def done_line(n: int, model: str = "bench") -> bytes:
    """The final line, with Ollama's counters, framed as one HTTP chunk; it names
    the model asked for, as Ollama's does (the client checks it)."""
    line = json.dumps(
        {
            "model": model,
            "created_at": _CREATED,
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "stop",
            "total_duration": 1_000_000 + n * 1000,
            "load_duration": 1000,
            "prompt_eval_count": 10,
            "prompt_eval_duration": 1000,
            "eval_count": n,
            "eval_duration": n * 1000,
        },
        separators=(",", ":"),
    ).encode()
    return _frame(line)


@functools.cache
def frames(model: str) -> tuple[list[bytes], bytes]:
    """The CYCLE distinct content lines naming ``model`` (as Ollama's do), each
    framed as one HTTP chunk, and all of them in one block (batched streams
    write whole blocks); made once per model name."""
    framed = [_frame(_content_line(i, model)) for i in range(CYCLE)]
    return framed, b"".join(framed)


END = b"0\r\n\r\n"
HEADERS = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: application/x-ndjson\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"\r\n"
)


class Stats:
    """Counters the benchmark reads through ``GET /stats``."""

    def __init__(self) -> None:
        # Guards every counter: connection threads update them concurrently.
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Clear the counters (the CPU clock is read as a difference)."""
        with self.lock:
            self.active = 0
            self.max_active = 0
            self.streams = 0
            self.lines = 0
            self.paced_lines = 0
            self.paced_late_sum = 0.0
            self.paced_late_max = 0.0
            self.paced_behind = 0  # lines sent more than one interval late
            self.cpu0 = time.process_time()

    def as_dict(self) -> dict[str, Any]:
        """The counters, as JSON-ready values."""
        with self.lock:
            paced = self.paced_lines or 1
            return {
                "active": self.active,
                "max_active": self.max_active,
                "streams": self.streams,
                "lines": self.lines,
                "cpu_s": time.process_time() - self.cpu0,
                "paced_lines": self.paced_lines,
                "paced_late_mean_us": self.paced_late_sum / paced * 1e6,
                "paced_late_max_us": self.paced_late_max * 1e6,
                "paced_behind": self.paced_behind,
            }


STATS = Stats()


class Gate:
    """Holds the streams of one run until all have arrived (or arrivals stop)."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.arrived = 0
        self.first_arrival = self.last_arrival = time.monotonic()
        self.opened = threading.Event()
        self.opened_at = 0.0
        self.waiting_at_open = 0
        self.by_timeout = False

    def as_dict(self) -> dict[str, Any]:
        """When it opened and why, as JSON-ready values."""
        return {
            "open": self.opened.is_set(),
            "opened_at": self.opened_at,
            "first_arrival": self.first_arrival,
            "waiting_at_open": self.waiting_at_open,
            "arrived": self.arrived,
            "by_timeout": self.by_timeout,
        }


# Guards GATES and every Gate's counters: arrivals come on many threads.
_gates_lock = threading.Lock()
GATES: dict[int, Gate] = {}


def _open(gate: Gate, *, by_timeout: bool) -> None:
    # Called with _gates_lock held.
    if not gate.opened.is_set():
        gate.opened_at = time.monotonic()
        gate.waiting_at_open = gate.arrived
        gate.by_timeout = by_timeout
        gate.opened.set()


def _pass_gate(run: int, expected: int) -> None:
    """Wait at run ``run``'s gate; it opens when ``expected`` have arrived."""
    with _gates_lock:
        gate = GATES.get(run)
        if gate is None:
            gate = GATES[run] = Gate(expected)
            for old in sorted(GATES)[:-100]:  # keep the last hundred runs
                del GATES[old]
        gate.arrived += 1
        gate.last_arrival = time.monotonic()
        if gate.arrived >= gate.expected:
            _open(gate, by_timeout=False)
    give_up = time.monotonic() + GATE_LIMIT
    while not gate.opened.wait(0.05):
        with _gates_lock:
            now = time.monotonic()
            if now - gate.last_arrival > GATE_QUIET or now > give_up:
                _open(gate, by_timeout=True)


def _send_batched(conn: socket.socket, n: int, model: str) -> None:
    """N lines back to back in large writes, then the done line."""
    full, rest = divmod(n, CYCLE)
    FRAMES, BLOCK = frames(model)  # the module's constants once
    pending = [HEADERS]
    size = len(HEADERS)
    for _ in range(full):
        pending.append(BLOCK)
        size += len(BLOCK)
        if size >= WRITE_BYTES:
            conn.sendall(b"".join(pending))
            pending, size = [], 0
    pending.extend(FRAMES[:rest])
    pending.append(done_line(n, model))
    pending.append(END)
    conn.sendall(b"".join(pending))


def _send_paced(conn: socket.socket, n: int, interval: float, model: str) -> None:
    """One line per write on absolute deadlines ``start + i * interval``."""
    clock, sleep = time.perf_counter, time.sleep
    start = clock()
    late_sum = late_max = 0.0
    behind = 0
    FRAMES = frames(model)[0]  # the module's constant once
    conn.sendall(HEADERS + FRAMES[0])
    for i in range(1, n + 1):
        deadline = start + i * interval
        wait = deadline - clock()
        if wait > 0:
            sleep(wait)
        late = clock() - deadline
        late_sum += late
        late_max = max(late_max, late)
        if late > interval:
            behind += 1
        if i < n:
            conn.sendall(FRAMES[i % CYCLE])
        else:
            conn.sendall(done_line(n, model) + END)
    with STATS.lock:
        STATS.paced_lines += n
        STATS.paced_late_sum += late_sum
        STATS.paced_late_max = max(STATS.paced_late_max, late_max)
        STATS.paced_behind += behind


def _respond(conn: socket.socket, method: str, path: str, body: bytes) -> None:
    """Answer one request: a chat stream, or one of the small control answers."""
    if method == "POST" and path == "/api/chat":
        _chat(conn, str(json.loads(body).get("model", "")))
    elif method == "GET" and path == "/stats":
        _send_json(conn, STATS.as_dict())
    elif method == "GET" and path.startswith("/gate/"):
        with _gates_lock:
            gate = GATES.get(int(path.rsplit("/", 1)[1]))
            answer = gate.as_dict() if gate else {"open": False}
        _send_json(conn, answer)
    elif method == "POST" and path == "/stats/reset":
        STATS.reset()
        _send_json(conn, {"ok": True})
    elif method in {"GET", "HEAD"} and path == "/":
        _send_plain(conn, 200, b"Ollama is running", head=method == "HEAD")
    elif method == "GET" and path == "/api/version":
        _send_json(conn, {"version": "0.0.0-bench"})
    else:
        _send_plain(conn, 404, b"404 page not found")


def _chat(conn: socket.socket, model: str) -> None:
    """Stream the answer the model name describes (see the module docstring)."""
    kind, _, rest = model.partition(":")
    args = [int(x) for x in rest.split(":")] if rest else []
    with STATS.lock:
        STATS.active += 1
        STATS.streams += 1
        STATS.max_active = max(STATS.max_active, STATS.active)
    try:
        if kind == "batched" and len(args) == 1:
            _send_batched(conn, args[0], model)
        elif kind == "gated" and len(args) == 3:
            _pass_gate(args[1], args[2])
            _send_batched(conn, args[0], model)
        elif kind == "paced" and len(args) == 2:
            _send_paced(conn, args[0], args[1] / 1e6, model)
        else:
            error = json.dumps({"error": f"model '{model}' not found"}).encode()
            _send_plain(conn, 404, error)
    finally:
        with STATS.lock:
            STATS.active -= 1
            STATS.lines += args[0] + 1 if args else 0


def _send_json(conn: socket.socket, data: object) -> None:
    _send_plain(conn, 200, json.dumps(data).encode(), "application/json")


def _send_plain(
    conn: socket.socket,
    status: int,
    body: bytes,
    content_type: str = "text/plain; charset=utf-8",
    *,
    head: bool = False,
) -> None:
    reason = {200: b"OK", 404: b"Not Found"}.get(status, b"Error")
    head_bytes = b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n" % (
        status,
        reason,
        content_type.encode(),
        len(body),
    )
    conn.sendall(head_bytes if head else head_bytes + body)


def _serve_connection(conn: socket.socket) -> None:
    """Answer requests on one keep-alive connection until the client closes it."""
    buf = b""
    try:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            while b"\r\n\r\n" not in buf:
                if len(buf) > MAX_HEADER_BYTES:
                    return
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
            head, _, buf = buf.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            length = 0
            for header in lines[1:]:
                name, _, value = header.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            while len(buf) < length:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
            body, buf = buf[:length], buf[length:]
            _respond(conn, method, path, body)
    except OSError:
        pass  # the client hung up mid-stream: nothing to do but close
    finally:
        conn.close()


def serve(listener: socket.socket) -> None:
    """Accept connections forever, one daemon thread each."""
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_serve_connection, args=(conn,), daemon=True).start()


def _exit_when_parent_goes() -> None:
    # The parent holds our stdin: when it exits (or closes it), so do we.
    sys.stdin.buffer.read()
    os._exit(0)


def main() -> None:
    """Listen on a free loopback port, print it, serve until stdin closes."""
    # Big stacks are not needed: 256 connection threads stay small.
    threading.stack_size(256 * 1024)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(2048)
    threading.Thread(target=_exit_when_parent_goes, daemon=True).start()
    print(f"PORT {listener.getsockname()[1]}", flush=True)
    serve(listener)


if __name__ == "__main__":
    main()
