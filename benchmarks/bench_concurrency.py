"""Many concurrent streams on one client, against as many threads running the bare loop.

Each run starts every stream and waits for all of them:

- bare SDK loop: one thread per stream, each with its own ``ollama.Client``
  (created once, before the runs), as a user without this library would write it;
- ``StreamingClient``: one client, ``start_chat()`` called once per stream from
  this thread, then ``result()`` on every handle; over httpx and over
  ``session=``.

Streams started one by one would not overlap (the first would be done before
the last began), so the server holds every stream of a run at a gate until all
of them have arrived, then releases them together (see ``_server.py``). The
aggregate chunks/s counts every line of every stream from the moment the gate
opened to the end of the last stream; "start-up" is the time from the first
start to the gate opening (thread creation, connecting). A client that cannot
have every stream open at once (a connection-pool limit) leaves the gate to open
after half a second without arrivals: "open at once" shows it.

Also counted per run: streams that raised or delivered the wrong text, and the
peak number of Python threads (``threading.active_count()`` sampled every 2 ms,
the sampler itself not counted). The server's CPU time over the runs shows
whether it could keep up.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import ollama
import requests
from _harness import (
    USER,
    Config,
    Samples,
    ServerProcess,
    at_least,
    expected_chars,
    fmt_range,
    gated,
    print_table,
    ratio_cells,
    settle,
)
from contenders import RunStream, bare_sdk_loop, has_iterator, iterate

from ollama_stream_sync import StreamingClient

THREAD_SLACK = 8
"""The "small constant": threads allowed beyond one per stream."""
RATE_TARGET = at_least(1.0)
RUN_TIMEOUT = 300.0
"""Seconds one run may take before its stragglers count as errors."""

_runs = itertools.count(1)


class ThreadSampler:
    """Samples ``threading.active_count()`` on its own thread; keeps the peak."""

    def __init__(self, every: float = 0.002) -> None:
        self._every = every
        self._stop = threading.Event()
        self.peak = 0
        self._thread = threading.Thread(target=self._loop, name="bench-sampler")

    def _loop(self) -> None:
        while not self._stop.wait(self._every):
            self.peak = max(self.peak, threading.active_count() - 1)  # not itself

    def __enter__(self) -> ThreadSampler:
        self.peak = threading.active_count()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


class DiscardCounter(logging.Handler):
    """Counts urllib3's "Connection pool is full, discarding connection" warnings."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        """Count the record instead of printing it (hundreds of lines per run)."""
        self.count += 1


@dataclass
class RunOutcome:
    """What one run of all the streams measured (``time.monotonic()`` instants)."""

    started: float
    ended: float
    errors: list[str]
    peak_threads: int


@dataclass
class Tally:
    """One contender's runs."""

    rate: Samples = field(default_factory=Samples)
    startup: Samples = field(default_factory=Samples)
    errors: int = 0
    peak_threads: int = 0
    least_at_once: int | None = None
    gate_timeouts: int = 0
    server_cpu: float = 0.0
    wall: float = 0.0
    first_error: str | None = None


def _check(parts: list[str], n: int) -> str | None:
    got = sum(map(len, parts))
    return None if got == expected_chars(n) else f"{got} of {expected_chars(n)} chars"


def threads_each(loops: list[RunStream], model: str, n: int) -> RunOutcome:
    """One thread per stream, each running its own loop (bare SDK, or iterator)."""
    outcome: list[str | None] = ["did not finish"] * len(loops)

    def worker(i: int) -> None:
        parts: list[str] = []
        try:
            loops[i](model, parts.append)
            outcome[i] = _check(parts, n)
        except Exception as exc:  # noqa: BLE001  # counted, not raised
            outcome[i] = f"{type(exc).__name__}: {exc}"

    with ThreadSampler() as sampler:
        started = time.monotonic()
        threads = [
            threading.Thread(target=worker, args=(i,), daemon=True)
            for i in range(len(loops))
        ]
        for t in threads:
            t.start()
        deadline = started + RUN_TIMEOUT
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        ended = time.monotonic()
    errors = [e for e in outcome if e is not None]
    return RunOutcome(started, ended, errors, sampler.peak)


def library_streams(
    client: StreamingClient, streams: int, model: str, n: int
) -> RunOutcome:
    """``start_chat`` once per stream on one client, then every ``result()``."""
    parts: list[list[str]] = [[] for _ in range(streams)]
    errors: list[str] = []
    with ThreadSampler() as sampler:
        started = time.monotonic()
        handles = [
            client.start_chat(model, USER, on_content=parts[i].append)
            for i in range(streams)
        ]
        deadline = started + RUN_TIMEOUT
        for i, handle in enumerate(handles):
            try:
                handle.result(timeout=max(0.0, deadline - time.monotonic()))
            except Exception as exc:  # noqa: BLE001  # counted, not raised
                handle.cancel()
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            problem = _check(parts[i], n)
            if problem:
                errors.append(problem)
        ended = time.monotonic()
    return RunOutcome(started, ended, errors, sampler.peak)


def run(srv: ServerProcess, cfg: Config) -> None:
    """``conc_runs`` runs of ``conc_streams`` streams per contender, interleaved."""
    streams, n, runs = cfg.conc_streams, cfg.conc_chunks, cfg.conc_runs
    discards = DiscardCounter()
    pool_log = logging.getLogger("urllib3.connectionpool")
    pool_log.addHandler(discards)
    pool_log.propagate = False
    sdks = [ollama.Client(srv.url) for _ in range(streams)]
    session = requests.Session()
    client = StreamingClient(srv.url)
    via_session = StreamingClient(srv.url, session=session)
    Run = Callable[[str, int], RunOutcome]
    bare_loops = [bare_sdk_loop(sdk) for sdk in sdks]
    contenders: dict[str, tuple[str, Run]] = {
        "bare": (
            "bare SDK loop, a thread + ollama.Client each",
            lambda model, k: threads_each(bare_loops, model, k),
        ),
        "httpx": (
            "StreamingClient.start_chat httpx",
            lambda model, k: library_streams(client, streams, model, k),
        ),
        "session": (
            "StreamingClient.start_chat session=",
            lambda model, k: library_streams(via_session, streams, model, k),
        ),
    }
    if has_iterator():
        # The iterator runs in its caller's thread: one thread per stream, as
        # the bare loop has, all on the one client.
        iterators = [iterate(client)] * streams
        contenders["iterator"] = (
            "stream_chat() iterator, a thread each",
            lambda model, k: threads_each(iterators, model, k),
        )
    tallies = {key: Tally() for key in contenders}
    warm_errors: list[str] = []
    try:
        for _, fn in contenders.values():  # warm: connections, pools, imports
            warm_errors += fn(gated(1, next(_runs), streams), 1).errors
        for _ in range(runs):
            for key, (_, fn) in contenders.items():
                settle()
                srv.reset_stats()
                run_id = next(_runs)
                out = fn(gated(n, run_id, streams), n)
                gate, stats = srv.gate(run_id), srv.stats()
                _tally(tallies[key], out, gate, stats, streams * (n + 1))
    finally:
        client.close()
        via_session.close()
        session.close()
        for sdk in sdks:
            sdk.close()  # type: ignore[no-untyped-call]  # the SDK is untyped here
        pool_log.removeHandler(discards)
        pool_log.propagate = True
    _report(cfg, contenders, tallies, warm_errors, discards.count)


def _tally(
    t: Tally,
    out: RunOutcome,
    gate: dict[str, float],
    stats: dict[str, float],
    lines: int,
) -> None:
    opened = gate.get("opened_at") if gate.get("open") else None
    start = opened if opened is not None else out.started
    t.rate.values.append(lines / max(1e-9, out.ended - start))
    if opened is not None:
        t.startup.values.append((opened - out.started) * 1e3)
        at_once = int(gate["waiting_at_open"])
        t.least_at_once = min(t.least_at_once or at_once, at_once)
        t.gate_timeouts += bool(gate["by_timeout"])
    t.errors += len(out.errors)
    t.first_error = t.first_error or (out.errors[0] if out.errors else None)
    t.peak_threads = max(t.peak_threads, out.peak_threads)
    t.server_cpu += stats["cpu_s"]
    t.wall += out.ended - out.started


def _report(
    cfg: Config,
    contenders: Mapping[str, tuple[str, object]],
    tallies: dict[str, Tally],
    warm_errors: list[str],
    discarded: int,
) -> None:
    streams, n, runs = cfg.conc_streams, cfg.conc_chunks, cfg.conc_runs
    base = tallies["bare"].rate
    rows = []
    for key, (label, _) in contenders.items():
        t = tallies[key]
        is_base = key == "bare"
        ratio = ratio_cells(
            t.rate, base, None if is_base else RATE_TARGET, is_base=is_base
        )
        missed = []
        if not is_base and ratio[-1] == "MISS":
            missed.append("rate")
        if t.errors:
            missed.append("errors")
        if t.peak_threads > streams + THREAD_SLACK:
            missed.append("threads")
        verdict = (
            "" if is_base else "PASS" if not missed else "MISS: " + ", ".join(missed)
        )
        at_once = "-" if t.least_at_once is None else str(t.least_at_once)
        if t.gate_timeouts:
            at_once += f" ({t.gate_timeouts} timed out)"
        rows.append(
            [
                label,
                fmt_range(t.rate, lambda v: f"{v:,.0f}"),
                ratio[0],
                str(t.errors),
                f"{t.peak_threads} ({t.peak_threads - streams:+d})",
                at_once,
                fmt_range(t.startup, lambda v: f"{v:.0f}"),
                f"{t.server_cpu / t.wall * 100:.0f}%" if t.wall else "",
                verdict,
            ]
        )
    print_table(
        f"CONCURRENT STREAMS: {streams} streams of {n:,} batched lines released"
        f" together, {runs} runs interleaved (targets: aggregate chunks/s >= 1.0x"
        f" the bare threads, zero errors, peak threads <= streams + {THREAD_SLACK})",
        [
            "contender",
            "aggregate chunks/s median [min-max]",
            "ratio",
            "errors",
            "peak threads (vs streams)",
            "open at once",
            "start-up ms",
            "server CPU",
            "",
        ],
        rows,
    )
    print(
        "  'open at once': fewest streams waiting at the server's gate when it"
        " opened (less than the streams: a pool limit, and the gate opened after"
        " 0.5 s without arrivals); 'server CPU': its CPU time over the runs' wall"
        " time (near 100% would make it the bottleneck)"
    )
    if not has_iterator():
        print("  stream_chat() iterator: not available in this version")
    for key, t in tallies.items():
        if t.first_error:
            print(f"  {key}: first error: {t.first_error[:150]}")
    if warm_errors:
        print(
            f"  warm-up (1-line streams, not counted above): {len(warm_errors)}"
            f" errors; first: {warm_errors[0][:150]}"
        )
    if discarded:
        print(
            f"  urllib3 discarded {discarded:,} connections after use ('Connection"
            " pool is full': requests' pool_maxsize defaults to 10)"
        )
