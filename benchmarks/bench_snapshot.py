"""A very long stream read through ``snapshot()`` while it runs, as a GUI timer would.

The same batched stream (1,000,000 lines by default) runs unpolled and polled
(``handle.snapshot()`` every 10 ms from this thread while the worker streams),
interleaved round by round; the total times are compared. Every poll is timed
with how much text it returned, which shows how a poll's cost grows along the
stream: amortised O(new text) means a late poll costs about what an early one
does (the text that arrived in 10 ms is about the same all along); a poll that
copies all the text so far grows with the stream. Then ``snapshot()`` with
nothing changed is timed on a finished short stream and on the finished long
one: O(1) means the same cost for both.
"""

from __future__ import annotations

import statistics

from _harness import (
    USER,
    Config,
    Samples,
    ServerProcess,
    at_most,
    batched,
    cpu,
    expected_chars,
    fmt_range,
    now,
    print_table,
    ratio_cells,
    settle,
)

from ollama_stream_sync import StreamHandle, StreamingClient

TOTAL_TARGET = at_most(1.2)
GROWTH_LIMIT = at_most(2.0)
"""A late poll / an early one, and a long stream's idle snapshot / a short one's."""
IDLE_CALLS = 300
SMALL = 1_000


def poll(handle: StreamHandle, every: float, limit: float) -> list[tuple[float, int]]:
    """``snapshot()`` every ``every`` seconds until the stream ends; (seconds, chars).

    Deadlines are absolute; after a slow poll the next one is not hurried.
    """
    records: list[tuple[float, int]] = []
    give_up = now() + limit
    next_at = now() + every
    while not handle.done():
        if now() > give_up:
            handle.cancel()
            break
        handle.wait(max(0.0, next_at - now()))
        next_at = max(next_at + every, now())
        t0 = now()
        snap = handle.snapshot()
        records.append((now() - t0, len(snap.content)))
    return records


def idle_snapshot_us(handle: StreamHandle) -> float:
    """Median time of ``snapshot()`` on a finished stream (nothing changes)."""
    handle.snapshot()  # the first may still join what arrived last
    times = []
    for _ in range(IDLE_CALLS):
        t0 = now()
        handle.snapshot()
        times.append(now() - t0)
    return statistics.median(times) * 1e6


def run(srv: ServerProcess, cfg: Config) -> None:
    """Polled vs unpolled long stream, then the cost of one snapshot."""
    n, every = cfg.big_chunks, cfg.poll_ms / 1000
    limit = 60 + n / 2000  # generous: 2,000 lines/s would be a 50x regression
    totals = {"unpolled": Samples(), "polled": Samples()}
    cpus = {"unpolled": Samples(), "polled": Samples()}
    polls: list[list[tuple[float, int]]] = []
    with StreamingClient(srv.url) as client:
        client.chat(batched(10), USER)  # warm the connection
        for _ in range(cfg.big_rounds):
            for mode, samples in totals.items():
                if samples.error:
                    continue
                settle()
                t0, c0 = now(), cpu()
                handle = client.start_chat(batched(n), USER)
                if mode == "polled":
                    polls.append(poll(handle, every, limit))
                try:
                    result = handle.result(timeout=limit)
                except Exception as exc:  # noqa: BLE001  # reported in the table
                    handle.cancel()
                    samples.error = f"{type(exc).__name__}: {exc}"[:120]
                    continue
                wall, cpu_s = now() - t0, cpu() - c0
                if len(result.content) != expected_chars(n):
                    samples.error = (
                        f"{len(result.content)} chars, not {expected_chars(n)}"
                    )
                    continue
                samples.values.append(wall)
                cpus[mode].values.append(cpu_s)
        big_idle = idle_snapshot_us(handle)
        small = client.start_chat(batched(SMALL), USER)
        small.result(timeout=60)
        small_idle = idle_snapshot_us(small)
        del handle, small, result

    base, cpu_base = totals["unpolled"], cpus["unpolled"]
    print_table(
        f"SNAPSHOT UNDER LOAD: {n:,}-line batched stream, start_chat() over httpx,"
        f" snapshot() every {cfg.poll_ms:g} ms from another thread vs none,"
        f" {cfg.big_rounds} rounds interleaved (seconds; lower is better; the"
        " target is on wall time, CPU is the steadier figure on a busy machine)",
        ["case", "total s median [min-max]", "ratio", "target", "", "CPU s", "ratio"],
        [
            [
                "unpolled",
                fmt_range(base, lambda v: f"{v:.2f}"),
                *ratio_cells(base, base, None, is_base=True),
                fmt_range(cpu_base, lambda v: f"{v:.2f}"),
                "1.00x",
            ],
            [
                f"polled every {cfg.poll_ms:g} ms",
                fmt_range(totals["polled"], lambda v: f"{v:.2f}"),
                *ratio_cells(totals["polled"], base, TOTAL_TARGET),
                fmt_range(cpus["polled"], lambda v: f"{v:.2f}"),
                ratio_cells(cpus["polled"], cpu_base, None)[0],
            ],
        ],
    )

    rows: list[list[str]] = []
    flat = [p for run_polls in polls for p in run_polls]
    if flat:
        early, late = _early_late(polls)
        total_s = sum(t for t, _ in flat)
        text_mb = expected_chars(n) / 1e6 * len(polls)
        rows += [
            [
                "polls per stream (median)",
                f"{statistics.median(len(p) for p in polls):.0f}",
                "",
                "",
            ],
            [
                "poll time, median of all polls",
                f"{statistics.median(t for t, _ in flat) * 1e6:.1f} us",
                "",
                "",
            ],
            ["poll time, first 10% of each stream's polls", f"{early:.1f} us", "", ""],
            ["poll time, last 10% of each stream's polls", f"{late:.1f} us", "", ""],
            [
                "  late / early (amortised O(new text): ~1x)",
                f"{late / early:.1f}x" if early else "-",
                GROWTH_LIMIT.text,
                GROWTH_LIMIT.verdict(late / early) if early else "",
            ],
            [
                "all polls' time per MB of final text",
                f"{total_s * 1e3 / text_mb:.2f} ms/MB",
                "",
                "",
            ],
        ]
    rows += [
        [
            f"snapshot(), nothing changed, finished {SMALL:,}-line stream",
            f"{small_idle:.2f} us",
            "",
            "",
        ],
        [
            f"snapshot(), nothing changed, finished {n:,}-line stream",
            f"{big_idle:.2f} us",
            "",
            "",
        ],
        [
            f"  {n:,} / {SMALL:,} lines (O(1): ~1x)",
            f"{big_idle / small_idle:.2f}x",
            GROWTH_LIMIT.text,
            GROWTH_LIMIT.verdict(big_idle / small_idle),
        ],
    ]
    print_table(
        "SNAPSHOT COST: each poll timed, with the text it returned (the 2x limits"
        " are this suite's reading of 'O(1)' and 'amortised O(new text)')",
        ["measure", "value", "target", ""],
        rows,
    )


def _early_late(polls: list[list[tuple[float, int]]]) -> tuple[float, float]:
    """Median poll time (us) in the first and in the last tenth of each stream."""
    early: list[float] = []
    late: list[float] = []
    for run_polls in polls:
        # The very last poll may see the final join: leave it out.
        timed = [t for t, _ in run_polls[:-1]]
        tenth = max(1, len(timed) // 10)
        early += timed[:tenth]
        late += timed[-tenth:]
    if not early or not late:
        return 0.0, 0.0
    return statistics.median(early) * 1e6, statistics.median(late) * 1e6
