"""Routing over a fleet: time to first token with each strategy, side by side.

Three ``FakeOllama`` hosts, in this order on ``hosts=``:

- **cold**: has the model on disk but not in memory, and every answer starts
  only after ``--routing-slow`` seconds (a model loading, or a slow machine);
- **lacking**: does not have the model (404 ``model 'm' not found``);
- **warm**: has the model loaded and answers at once.

Each strategy gets fresh hosts and a fresh client, then ``--routing-chats``
chats from ``--routing-threads`` threads, with no retry policy. The time to
first token is the caller's: from the call to the first content callback, so
a failover's extra attempt counts. Strategies alternate round by round and
each row shows the median over rounds. The target (issue 22): with
``model_aware``, zero failures and a p95 at least 2x better than round robin.

Run alone: ``python benchmarks/bench_routing.py [--quick]``, or as the
``routing`` section of ``run.py``.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from _harness import Config, Samples, ServerProcess, at_least, fmt_range, print_table

from ollama_stream_sync import StreamingClient
from ollama_stream_sync.testing import Delay, FakeOllama, http_error, reply

MODEL = "m"
STRATEGIES = ("round_robin", "least_busy", "model_aware")
P95_TARGET = at_least(2.0)
WAIT = 120.0
"""Seconds one chat may take before the run counts it as failed."""


@dataclass
class Run:
    """One strategy's run: every chat's time to first token, failures, load."""

    ttfts: list[float] = field(default_factory=list)
    failures: int = 0
    asked: dict[str, int] = field(default_factory=dict)

    def p(self, q: float) -> float:
        """The ``q`` quantile of time to first token (inclusive method)."""
        return statistics.quantiles(self.ttfts, n=100, method="inclusive")[q - 1]


@contextlib.contextmanager
def fleet(slow: float) -> Iterator[dict[str, FakeOllama]]:
    """The three hosts, started; stopped afterwards."""
    with (
        FakeOllama(models=[MODEL]) as cold,
        FakeOllama(models=["other"]) as lacking,
        FakeOllama(models=[MODEL]) as warm,
    ):
        cold.default_reply = [Delay(slow), *reply("An answer.")]
        lacking.default_reply = http_error(404, f"model '{MODEL}' not found")
        warm.default_reply = reply("An answer.")
        warm.loaded = [MODEL]
        yield {"cold": cold, "lacking": lacking, "warm": warm}


def run_once(routing: str, cfg: Config) -> Run:
    """``cfg.routing_chats`` chats from ``cfg.routing_threads`` threads."""
    run = Run()
    lock = threading.Lock()
    left = iter(range(cfg.routing_chats))
    with fleet(cfg.routing_slow) as hosts:
        urls = [h.url for h in hosts.values()]
        with StreamingClient(hosts=urls, routing=routing) as client:  # type: ignore[arg-type]

            def chat() -> None:
                first = threading.Event()
                started = time.perf_counter()
                arrived: list[float] = []

                def on_content(text: str) -> None:
                    if not first.is_set():
                        arrived.append(time.perf_counter() - started)
                        first.set()

                try:
                    handle = client.start_chat(
                        MODEL,
                        [{"role": "user", "content": "Hi"}],
                        on_content=on_content,
                    )
                    handle.result(WAIT)
                except Exception:  # noqa: BLE001  # a failure is a figure here
                    with lock:
                        run.failures += 1
                    return
                with lock:
                    run.ttfts += arrived[:1]

            def worker() -> None:
                while True:
                    with lock:
                        if next(left, None) is None:
                            return
                    chat()

            threads = [
                threading.Thread(target=worker, name=f"bench-routing-{i}")
                for i in range(cfg.routing_threads)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        run.asked = {name: len(h.stream_requests()) for name, h in hosts.items()}
    return run


def run(_server: ServerProcess | None, cfg: Config) -> None:
    """Print TTFT per strategy, side by side, and the target's verdict."""
    runs: dict[str, list[Run]] = {name: [] for name in STRATEGIES}
    for _ in range(cfg.routing_rounds):
        for name in STRATEGIES:
            runs[name].append(run_once(name, cfg))

    def samples(name: str, q: int) -> Samples:
        return Samples([r.p(q) for r in runs[name] if len(r.ttfts) > 1])

    base = samples("round_robin", 95)
    rows = []
    for name in STRATEGIES:
        p95 = samples(name, 95)
        last = runs[name][-1]
        ratio = base.median / p95.median if p95.ok and base.ok else 0.0
        asked = " / ".join(str(last.asked[h]) for h in ("cold", "lacking", "warm"))
        rows.append(
            [
                name,
                str(sum(r.failures for r in runs[name])),
                fmt_range(samples(name, 50), _ms),
                fmt_range(p95, _ms),
                "(baseline)" if name == "round_robin" else f"{ratio:.1f}x",
                asked,
            ]
        )
    print_table(
        f"ROUTING ({cfg.routing_chats} chats from {cfg.routing_threads} threads, "
        f"{cfg.routing_rounds} rounds; hosts: cold {cfg.routing_slow:g} s, "
        "lacking the model, warm)",
        [
            "strategy",
            "failures",
            "p50 TTFT ms",
            "p95 TTFT ms",
            "p95 better",
            "requests cold / lacking / warm",
        ],
        rows,
    )
    aware = samples("model_aware", 95)
    failures = sum(r.failures for r in runs["model_aware"])
    if aware.ok and base.ok:
        ratio = base.median / aware.median
        verdict = P95_TARGET.verdict(ratio) if failures == 0 else "MISS"
        print(
            f"model_aware: {failures} failures, p95 {ratio:.1f}x better than "
            f"round_robin (target: zero failures, {P95_TARGET.text}): {verdict}"
        )


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


if __name__ == "__main__":
    quick = "--quick" in sys.argv[1:]
    run(None, Config.quick() if quick else Config())
