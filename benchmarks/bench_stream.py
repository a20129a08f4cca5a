"""One stream at a time: peak chunks/s, CPU per chunk at pace, time to first callback.

Run alone: ``python benchmarks/bench_stream.py [--quick]`` (the same as
``python benchmarks/run.py --only peak,pace,ttfc``).

Every section warms each contender's connection first, then runs the contenders
round by round (A B C D, A B C D, ...), so a slow moment of the machine hits all
of them alike; ratios compare medians taken in the same run.
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Callable, Sequence

from _harness import (
    Config,
    Samples,
    ServerProcess,
    Target,
    at_least,
    at_most,
    batched,
    cpu,
    expected_chars,
    fmt_range,
    now,
    paced,
    print_table,
    ratio_cells,
    settle,
)
from contenders import ALL_KEYS, BASELINE, Contender, Contenders

PEAK_TARGETS: dict[str, Target] = {
    "httpx": at_least(1.5),
    "session": at_least(2.0),
    "iterator": at_least(0.9),
}
PACE_TARGETS: dict[str, Target] = {
    "httpx": at_most(0.7),
    "session": at_most(0.5),
    "queue": at_most(0.8),
    "calllater": at_most(0.8),
}
TTFC_ADDED_MS = 0.15
"""Time to first callback may exceed the bare SDK loop's by this much (ms)."""


class WrongText(RuntimeError):
    """A contender delivered a different text than the server sent."""


def one_stream(c: Contender, model: str, lines: int) -> tuple[float, float]:
    """Run one stream of ``lines`` content lines; return (wall, CPU) seconds.

    The text that reached the sink is checked, so a fast but broken contender
    shows as an error rather than as a win.
    """
    parts: list[str] = []
    settle()
    t0, c0 = now(), cpu()
    c.run(model, parts.append)
    c1, t1 = cpu(), now()
    if c.verify:
        got = sum(map(len, parts))
        if got != expected_chars(lines):
            raise WrongText(f"{got} of {expected_chars(lines)} characters arrived")
    return t1 - t0, c1 - c0


def interleaved(
    contenders: Sequence[Contender],
    rounds: int,
    measure: Callable[[Contender], dict[str, float]],
) -> dict[str, dict[str, Samples]]:
    """Run ``measure`` for each contender, round by round; collect named values.

    A contender that raises keeps its error and sits out the remaining rounds;
    the others go on.
    """
    results: dict[str, dict[str, Samples]] = {c.key: {} for c in contenders}
    failed: dict[str, str] = {}
    for _ in range(rounds):
        for c in contenders:
            if c.key in failed:
                continue
            try:
                values = measure(c)
            except Exception as exc:  # noqa: BLE001  # one broken contender must not end the run
                failed[c.key] = f"{type(exc).__name__}: {exc}"[:120]
                continue
            for name, value in values.items():
                results[c.key].setdefault(name, Samples()).values.append(value)
    for key, error in failed.items():
        results[key] = {"": Samples(error=error)}
    return results


def _pick(results: dict[str, dict[str, Samples]], key: str, name: str) -> Samples:
    by_name = results.get(key, {})
    if name in by_name:
        return by_name[name]
    error = by_name.get("", Samples()).error
    return Samples(error=error or "no data")


def _warm(contenders: Contenders) -> None:
    for c in contenders.items:
        # A failure here shows again, and is reported, in the measured rounds.
        with contextlib.suppress(Exception):
            one_stream(c, batched(10), 10)


def run_peak(srv: ServerProcess, cfg: Config, keys: Sequence[str] = ALL_KEYS) -> None:
    """Peak chunks/s on batched streams, and the client CPU each chunk cost."""
    n = cfg.peak_chunks
    lines = n + 1  # the done line is a chunk too
    with Contenders(srv.url, srv.port, keys) as contenders:
        _warm(contenders)
        srv.reset_stats()

        def measure(c: Contender) -> dict[str, float]:
            wall, cpu_s = one_stream(c, batched(n), n)
            return {"rate": lines / wall, "cpu": cpu_s / lines * 1e6}

        results = interleaved(contenders.items, cfg.peak_rounds, measure)
        stats = srv.stats()
        base = _pick(results, BASELINE, "rate")
        rows = []
        for c in contenders.items:
            rate, cpu_us = _pick(results, c.key, "rate"), _pick(results, c.key, "cpu")
            ratio = (
                ["-", "(reference)", ""]
                if c.reference
                else ratio_cells(
                    rate, base, PEAK_TARGETS.get(c.key), is_base=c.key == BASELINE
                )
            )
            rows.append(
                [
                    c.label,
                    fmt_range(rate, lambda v: f"{v:,.0f}"),
                    fmt_range(cpu_us, lambda v: f"{v:.1f}") if cpu_us.ok else "",
                    *ratio,
                ]
            )
    print_table(
        f"PEAK CHUNKS/S: batched stream of {n:,} lines, {cfg.peak_rounds} rounds"
        " interleaved (higher is better; ratio = median / bare median"
        " [min-max of per-round ratios])",
        [
            "contender",
            "chunks/s median [min-max]",
            "client CPU us/chunk",
            "ratio",
            "target",
            "",
        ],
        rows,
    )
    for line in contenders.unavailable:
        print(f"  {line}")
    server_us = stats["cpu_s"] / max(1, stats["lines"]) * 1e6
    print(
        f"  server (own process): {server_us:.2f} us CPU per line sent;"
        " the raw socket row is the server's ceiling"
    )


def run_pace(srv: ServerProcess, cfg: Config, keys: Sequence[str] = ALL_KEYS) -> None:
    """Client CPU per chunk when lines arrive one by one at a real model's pace."""
    n, interval = cfg.pace_chunks, cfg.pace_ms
    lines = n + 1
    with Contenders(srv.url, srv.port, keys) as contenders:
        _warm(contenders)
        srv.reset_stats()

        def measure(c: Contender) -> dict[str, float]:
            wall, cpu_s = one_stream(c, paced(n, interval), n)
            return {"cpu": cpu_s / lines * 1e6, "pace": wall / lines * 1e3}

        results = interleaved(contenders.items, cfg.pace_rounds, measure)
        stats = srv.stats()
        base = _pick(results, BASELINE, "cpu")
        rows = []
        for c in contenders.items:
            cpu_us, pace = _pick(results, c.key, "cpu"), _pick(results, c.key, "pace")
            ratio = (
                ["-", "(reference)", ""]
                if c.reference
                else ratio_cells(
                    cpu_us, base, PACE_TARGETS.get(c.key), is_base=c.key == BASELINE
                )
            )
            rows.append(
                [
                    c.label,
                    fmt_range(cpu_us, lambda v: f"{v:.1f}"),
                    f"{pace.median:.3f}" if pace.ok else "",
                    *ratio,
                ]
            )
    print_table(
        f"CPU PER CHUNK AT REAL PACE: {n:,} lines, one per HTTP chunk every"
        f" {interval:g} ms, {cfg.pace_rounds} rounds interleaved (client process"
        " user+sys CPU, all threads; lower is better)",
        [
            "contender",
            "CPU us/chunk median [min-max]",
            "ms/chunk",
            "ratio",
            "target",
            "",
        ],
        rows,
    )
    for line in contenders.unavailable:
        print(f"  {line}")
    print(
        f"  server pacing: lines {stats['paced_late_mean_us']:.0f} us late on"
        f" average, {stats['paced_late_max_us'] / 1000:.1f} ms at worst,"
        f" {stats['paced_behind']} of {stats['paced_lines']:,} more than one"
        " interval late (those may arrive merged with the next)"
    )


def run_ttfc(srv: ServerProcess, cfg: Config, keys: Sequence[str] = ALL_KEYS) -> None:
    """Time from just before the call to the first content callback."""
    keys = [k for k in keys if k != "raw"]  # it has no callback to time
    trials = cfg.ttfc_trials
    model = batched(1)  # one content line, then done, in one write
    with Contenders(srv.url, srv.port, keys) as contenders:
        _warm(contenders)

        def measure(c: Contender) -> dict[str, float]:
            first: list[float] = []

            def sink(_: str) -> None:
                if not first:
                    first.append(now())

            start = now()
            c.run(model, sink)
            if not first:
                raise WrongText("no content callback")
            return {"ms": (first[0] - start) * 1e3}

        results = interleaved(contenders.items, trials, measure)
        base = _pick(results, BASELINE, "ms")
        rows = []
        for c in contenders.items:
            ms = _pick(results, c.key, "ms")
            p90 = (
                f"{statistics.quantiles(ms.values, n=10)[-1]:.3f}"
                if ms.ok and len(ms.values) >= 10
                else ""
            )
            if c.key == BASELINE:
                tail = ["", "(baseline)", ""]
            elif ms.ok and base.ok:
                added = ms.median - base.median
                target = at_most(TTFC_ADDED_MS, " ms")
                tail = [
                    f"{added:+.3f} ms",
                    f"<= +{TTFC_ADDED_MS} ms",
                    target.verdict(added),
                ]
            else:
                tail = ["-", f"<= +{TTFC_ADDED_MS} ms", "ERROR"]
            rows.append([c.label, fmt_range(ms, lambda v: f"{v:.3f}"), p90, *tail])
    print_table(
        f"TIME TO FIRST CALLBACK: median of {trials} trials interleaved, server"
        " answers one line then done at once (ms; lower is better)",
        ["contender", "ms median [min-max]", "p90", "added", "target", ""],
        rows,
    )
    for line in contenders.unavailable:
        print(f"  {line}")


if __name__ == "__main__":
    import run

    run.main(default_only=("peak", "pace", "ttfc"))
