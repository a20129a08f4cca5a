"""Every performance target of ollama-stream-sync, measured against the bare SDK loop.

Run: ``python benchmarks/run.py`` (full, several minutes), ``--quick`` (a smoke
run, under a minute), ``--only peak,pace`` (some sections). ``--help`` lists
the sizes you can change. See ``benchmarks/README.md`` for how to read it.

The server runs in its own process. The client side runs here, contenders
interleaved round by round, except where a section needs a fresh interpreter
(memory from zero, audit hooks that cannot be removed). It prints figures and
PASS/MISS markers; it never fails: timing belongs here, not in the test suite.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable, Sequence

import bench_audit
import bench_concurrency
import bench_memory
import bench_routing
import bench_snapshot
import bench_stream
import bench_telemetry
from _harness import Config, ServerProcess, loadavg, machine_lines, server

Section = Callable[[ServerProcess, Config], None]
SECTIONS: dict[str, Section] = {
    "peak": bench_stream.run_peak,
    "pace": bench_stream.run_pace,
    "ttfc": bench_stream.run_ttfc,
    "concurrency": bench_concurrency.run,
    "snapshot": bench_snapshot.run,
    "memory": bench_memory.run,
    "audit": bench_audit.run,
    "telemetry": bench_telemetry.run,
    "routing": bench_routing.run,
}
"""Every section, in the order they run and print."""


def parse_args(
    argv: Sequence[str] | None, default_only: Sequence[str]
) -> argparse.Namespace:
    """The command line: --quick, --only, and one flag per size in ``Config``."""
    parser = argparse.ArgumentParser(
        description="Benchmark ollama-stream-sync against the bare ollama SDK loop."
    )
    parser.add_argument(
        "--quick", action="store_true", help="a short smoke run (under a minute)"
    )
    parser.add_argument(
        "--only",
        default=",".join(default_only),
        help=f"comma-separated sections to run, from: {', '.join(SECTIONS)}",
    )
    for f in dataclasses.fields(Config):
        parser.add_argument(
            f"--{f.name.replace('_', '-')}",
            type=type(f.default),
            default=None,
            help=f"{f.metadata['help']} (full run: {f.default})",
        )
    return parser.parse_args(argv)


def main(
    argv: Sequence[str] | None = None, default_only: Sequence[str] = tuple(SECTIONS)
) -> None:
    """Print the machine, then every chosen section's tables."""
    args = parse_args(argv, default_only)
    cfg = Config.quick() if args.quick else Config()
    overrides = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(Config)
        if getattr(args, f.name) is not None
    }
    cfg = dataclasses.replace(cfg, **overrides)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        sys.exit(
            f"unknown section(s): {', '.join(unknown)}; choose from {list(SECTIONS)}"
        )

    started = time.monotonic()
    print("ollama-stream-sync benchmarks" + (" (--quick)" if args.quick else ""))
    for line in machine_lines():
        print(f"  {line}")
    if args.quick:
        print("  --quick: a smoke run; too few rounds for the verdicts to mean much")
    with server() as srv:
        for name, section in SECTIONS.items():
            if name in chosen:
                began = time.monotonic()
                section(srv, cfg)
                print(f"  [{name}: {time.monotonic() - began:.0f} s]")
                sys.stdout.flush()
    minutes, seconds = divmod(time.monotonic() - started, 60)
    print()
    print(
        f"done in {minutes:.0f} min {seconds:.0f} s;"
        f" 1-minute load average at the end: {loadavg()}"
    )


if __name__ == "__main__":
    main()
