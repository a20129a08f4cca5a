"""embed(): 10,000 short texts in batches of 64, against the bare SDK loop.

The issue's target: ``client.embed(..., batch_size=64, max_concurrency=4)`` is at
least as fast as a bare ``ollama.Client.embed`` loop sending the same batches one
after another, and returns the same vectors in the same order.

The server is ``FakeOllama`` (its ``/api/embed``: deterministic vectors from the
text) in its own process, so its CPU and GIL are not the client's. Contenders
run interleaved, round by round, after one warm-up call each; every result is
compared with the bare loop's, so a fast but wrong contender shows as an ERROR.

Run: ``python benchmarks/bench_embed.py`` (``--quick`` for a smoke run,
``--help`` for the sizes).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from array import array
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import ollama
import requests

from ollama_stream_sync import StreamingClient

MODEL = "bench-embed"
SERVER = """
import sys
from ollama_stream_sync.testing import FakeOllama
with FakeOllama(models=[{"name": %r, "embedding_length": %d}]) as server:
    print(server.url, flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin
"""


@contextmanager
def fake_ollama(dimensions: int) -> Iterator[str]:
    """A FakeOllama in a child process; its URL."""
    child = subprocess.Popen(
        [sys.executable, "-c", SERVER % (MODEL, dimensions)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdin is not None
    try:
        yield child.stdout.readline().strip()
    finally:
        child.stdin.close()
        child.wait(10)


Contender = Callable[[list[str]], list[Any]]


def contenders(url: str, batch: int, concurrency: int) -> dict[str, Contender]:
    """Each a function from the texts to their vectors."""
    sdk = ollama.Client(url)
    plain = StreamingClient(url)
    session = StreamingClient(url, session=requests.Session())

    def bare(texts: list[str]) -> list[Any]:
        vectors: list[Any] = []
        for start in range(0, len(texts), batch):
            vectors += sdk.embed(MODEL, texts[start : start + batch]).embeddings
        return vectors

    def ours(client: StreamingClient, limit: int, **extra: Any) -> Contender:
        def run(texts: list[str]) -> list[Any]:
            result = client.embed(
                MODEL, texts, batch_size=batch, max_concurrency=limit, **extra
            )
            return list(result.embeddings)

        return run

    return {
        "bare SDK loop (sequential)": bare,
        "embed() httpx, one at a time": ours(plain, 1),
        "embed() session=, one at a time": ours(session, 1),
        f"embed() httpx, max_concurrency={concurrency}": ours(plain, concurrency),
        f"embed() session=, max_concurrency={concurrency}": ours(session, concurrency),
        f"embed() httpx, {concurrency}, compact=True": ours(
            plain, concurrency, compact=True
        ),
    }


def main() -> None:
    """Print each contender's median time and its ratio to the bare loop."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--dimensions", type=int, default=384)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1,000 texts, 2 rounds")
    args = parser.parse_args()
    if args.quick:
        args.inputs, args.rounds = 1000, 2
    texts = [f"short text number {i} about topic {i % 97}" for i in range(args.inputs)]
    print(
        f"embed: {args.inputs} texts, batches of {args.batch}, "
        f"{args.dimensions} dimensions, {args.rounds} rounds (FakeOllama, own process)"
    )
    with fake_ollama(args.dimensions) as url:
        runs = contenders(url, args.batch, args.concurrency)
        reference = [list(v) for v in runs["bare SDK loop (sequential)"](texts)]
        compact = [list(array("f", v)) for v in reference]
        for run in runs.values():
            run(texts[: args.batch])  # warm: connections open
        times: dict[str, list[float]] = {name: [] for name in runs}
        errors: set[str] = set()
        for _ in range(args.rounds):
            for name, run in runs.items():
                began = time.perf_counter()
                vectors = run(texts)
                times[name].append(time.perf_counter() - began)
                # compact=True keeps float32: the reference rounded the same way.
                wanted = compact if "compact" in name else reference
                if [list(v) for v in vectors] != wanted:
                    errors.add(name)
    base = statistics.median(times["bare SDK loop (sequential)"])
    print(f"  {'contender':<42} {'median s':>9} {'[min-max]':>15} {'speed':>7}")
    for name, samples in times.items():
        median = statistics.median(samples)
        spread = f"[{min(samples):.2f}-{max(samples):.2f}]"
        verdict = "ERROR: vectors differ" if name in errors else ""
        print(
            f"  {name:<42} {median:>9.2f} {spread:>15} {base / median:>6.2f}x {verdict}"
        )
    print("  speed: the bare loop's median time over the contender's (higher: faster)")


if __name__ == "__main__":
    main()
