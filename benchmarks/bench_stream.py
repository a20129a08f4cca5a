"""Chunks per second and time to first callback: StreamingClient vs the bare SDK loop.

Run: ``python benchmarks/bench_stream.py [--chunks 30000] [--rounds 5]``

A server in a separate process answers /api/chat with a pre-rendered NDJSON
stream (one HTTP chunk per line, as Ollama sends it), so the server's own cost
and the GIL do not skew the client figures. Rounds interleave the contenders.
Prints figures and ratios; asserts nothing (timing belongs here, not in tests).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import socket
import statistics
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import ollama
import requests

from ollama_stream_sync import StreamingClient

USER = [{"role": "user", "content": "Write a long story."}]


def render(n: int) -> bytes:
    out = []
    for i in range(n):
        line = json.dumps(
            {
                "model": "bench",
                "created_at": "2026-01-01T00:00:00Z",
                "message": {"role": "assistant", "content": f" tok{i}"},
                "done": False,
            }
        ).encode()
        out.append(b"%x\r\n%s\n\r\n" % (len(line) + 1, line))
    done = json.dumps(
        {
            "model": "bench",
            "created_at": "2026-01-01T00:00:00Z",
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "stop",
            "eval_count": n,
        }
    ).encode()
    out.append(b"%x\r\n%s\n\r\n0\r\n\r\n" % (len(done) + 1, done))
    return b"".join(out)


def serve(port_out: Any, long_n: int, short_n: int) -> None:
    bodies = {long_n: render(long_n), short_n: render(short_n)}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def setup(self) -> None:
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            n = int(body.get("options", {}).get("num_predict", long_n))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(bodies[n])

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port_out.put(httpd.server_address[1])
    httpd.serve_forever()


def bare_sdk(sdk: ollama.Client, n: int, sink: Callable[[str], None]) -> int:
    """The loop the SDK's docs show, with the same sink as our callback."""
    count = 0
    for part in sdk.chat("bench", USER, stream=True, options={"num_predict": n}):
        sink(part.message.content or "")
        count += 1
    return count


def wrapper(client: StreamingClient, n: int, sink: Callable[[str], None]) -> int:
    result = client.chat("bench", USER, options={"num_predict": n}, on_content=sink)
    return result.chunk_count


def first_callback_latency(run: Callable[[Callable[[str], None]], object]) -> float:
    start = time.perf_counter()
    first: list[float] = []

    def sink(_: str) -> None:
        if not first:
            first.append(time.perf_counter())

    run(sink)
    return first[0] - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ttft-trials", type=int, default=200)
    args = parser.parse_args()
    short = 5
    ports: Any = multiprocessing.Queue()
    proc = multiprocessing.Process(
        target=serve, args=(ports, args.chunks, short), daemon=True
    )
    proc.start()
    url = f"http://127.0.0.1:{ports.get(timeout=10)}"
    sink_total = 0

    def sink(text: str) -> None:
        nonlocal sink_total
        sink_total += len(text)

    try:
        with StreamingClient(url) as client, ollama.Client(url) as sdk:
            wrapper(client, short, sink)  # warm both paths and their connections
            bare_sdk(sdk, short, sink)
            session = requests.Session()
            via_requests = StreamingClient(url, session=session)
            wrapper(via_requests, short, sink)
            contenders: dict[str, Callable[[], int]] = {
                "bare SDK loop": lambda: bare_sdk(sdk, args.chunks, sink),
                "StreamingClient": lambda: wrapper(client, args.chunks, sink),
                "  over requests": lambda: wrapper(via_requests, args.chunks, sink),
            }
            rates: dict[str, list[float]] = {name: [] for name in contenders}
            for _ in range(args.rounds):
                for name, fn in contenders.items():
                    t0 = time.perf_counter()
                    count = fn()
                    rates[name].append(count / (time.perf_counter() - t0))
            print(f"{args.chunks} chunks x {args.rounds} rounds, interleaved")
            for name, values in rates.items():
                print(
                    f"  {name:16s} median {statistics.median(values):>10,.0f} chunks/s"
                    f"  (best {max(values):,.0f})"
                )
            bare = statistics.median(rates["bare SDK loop"])
            for name in ("StreamingClient", "  over requests"):
                ratio = statistics.median(rates[name]) / bare
                print(f"  ratio {name.strip()} / bare SDK loop: {ratio:.2f}x")

            lat: dict[str, list[float]] = {"bare": [], "ours": [], "requests": []}
            for _ in range(args.ttft_trials):
                lat["bare"].append(
                    first_callback_latency(lambda s: bare_sdk(sdk, short, s))
                )
                lat["ours"].append(
                    first_callback_latency(lambda s: wrapper(client, short, s))
                )
                lat["requests"].append(
                    first_callback_latency(lambda s: wrapper(via_requests, short, s))
                )
            via_requests.close()
            session.close()
            bare_ms = statistics.median(lat["bare"]) * 1000
            ours_ms = statistics.median(lat["ours"]) * 1000
            print(f"time to first callback, median of {args.ttft_trials}:")
            print(f"  bare SDK loop    {bare_ms:.3f} ms")
            added = ours_ms - bare_ms
            print(f"  StreamingClient  {ours_ms:.3f} ms  (adds {added:+.3f} ms)")
            req_ms = statistics.median(lat["requests"]) * 1000
            print(
                f"    over requests  {req_ms:.3f} ms  (adds {req_ms - bare_ms:+.3f} ms)"
            )
    finally:
        proc.terminate()
        proc.join(5)


if __name__ == "__main__":
    main()
