"""What every benchmark section shares: the server process, the machine, the tables.

Kept apart from the sections so each section reads as "what is measured and
against what", and the mechanics (starting and reaping the server, statistics,
formatting, PASS/MISS) are written once.
"""

from __future__ import annotations

import contextlib
import gc
import http.client
import importlib.metadata
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SERVER_SCRIPT = HERE / "_server.py"
CONTENT_CHARS = 5
"""Characters of content per line: must match ``_server.CONTENT_CHARS``."""

USER = [{"role": "user", "content": "Write a long story."}]
"""The history every contender sends (the server ignores it)."""


def batched(n: int) -> str:
    """The model name that makes the server send ``n`` lines back to back."""
    return f"batched:{n}"


def paced(n: int, interval_ms: float) -> str:
    """The model name that makes the server send one line every ``interval_ms``."""
    return f"paced:{n}:{round(interval_ms * 1000)}"


def gated(n: int, run: int, streams: int) -> str:
    """The model name for ``n`` lines, held until ``streams`` of run ``run`` wait."""
    return f"gated:{n}:{run}:{streams}"


def expected_chars(n: int) -> int:
    """Characters of content in a stream of ``n`` lines."""
    return CONTENT_CHARS * n


# -- the server process ----------------------------------------------------


class ServerProcess:
    """The benchmark server (``_server.py``) in its own process, reaped on exit.

    The child also exits by itself when our end of its stdin closes, so even a
    benchmark killed with SIGKILL leaves no server behind.
    """

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, str(SERVER_SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None  # PIPE was asked for
        line = self._proc.stdout.readline()
        if not line.startswith("PORT "):
            self.close()
            raise RuntimeError(f"benchmark server did not start: {line!r}")
        self.port = int(line.split()[1])
        self.url = f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The server's process id (for reading its CPU time from /proc)."""
        return self._proc.pid

    def _call(self, method: str, path: str) -> dict[str, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path)
            data: dict[str, Any] = json.loads(conn.getresponse().read())
            return data
        finally:
            conn.close()

    def stats(self) -> dict[str, Any]:
        """The server's counters since the last reset."""
        return self._call("GET", "/stats")

    def gate(self, run: int) -> dict[str, Any]:
        """When run ``run``'s gate opened (``time.monotonic()``) and how many waited."""
        return self._call("GET", f"/gate/{run}")

    def reset_stats(self) -> None:
        """Clear the server's counters."""
        self._call("POST", "/stats/reset")

    def close(self) -> None:
        """Stop the server and reap it (terminate, then kill if it lingers)."""
        if self._proc.stdin is not None:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        try:
            self._proc.wait(2)
        except subprocess.TimeoutExpired:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        if self._proc.stdout is not None:
            self._proc.stdout.close()


@contextlib.contextmanager
def server() -> Iterator[ServerProcess]:
    """A running benchmark server for the duration of the block."""
    proc = ServerProcess()
    try:
        yield proc
    finally:
        proc.close()


def run_child(script: Path, args: Sequence[str], timeout: float) -> dict[str, Any]:
    """Run a benchmark helper in a fresh interpreter; return the JSON it prints last.

    A fresh process is the only way to measure peak memory from zero or the
    effect of an audit hook, which can never be removed once added.
    """
    proc = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"child exited {proc.returncode}: {' | '.join(tail)}")
    data: dict[str, Any] = json.loads(lines[-1])
    return data


# -- the machine -----------------------------------------------------------


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(HERE), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip()


def loadavg() -> str:
    """The 1-minute load average: other work on the machine makes numbers noisy."""
    with contextlib.suppress(OSError):
        return Path("/proc/loadavg").read_text().split()[0]
    return "?"


def machine_lines() -> list[str]:
    """What the numbers were measured on, one fact per line."""
    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    orjson = importlib.util.find_spec("orjson") is not None
    versions = ", ".join(
        f"{name} {_version(name)}"
        for name in ("ollama", "httpx", "httpcore", "requests", "urllib3", "pydantic")
    )
    return [
        f"CPU:      {_cpu_model()}, {cores} cores ({usable} usable by this process)",
        f"Python:   {platform.python_implementation()} {platform.python_version()}",
        f"OS:       {platform.platform()}",
        f"Packages: {versions}",
        f"orjson:   {'installed' if orjson else 'not installed'}",
        f"Library:  ollama-stream-sync {_version('ollama-stream-sync')}"
        f" at {_git_commit()}",
        f"Load:     {loadavg()} (1-minute load average at start)",
    ]


# -- statistics and tables -------------------------------------------------


@dataclass
class Samples:
    """The values one contender produced, one per round, or the error it raised."""

    values: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when there are values and no error."""
        return self.error is None and bool(self.values)

    @property
    def median(self) -> float:
        """The median value."""
        return statistics.median(self.values)


def fmt_range(s: Samples, fmt: Callable[[float], str]) -> str:
    """``median [min-max]`` of a sample set."""
    if not s.ok:
        return f"ERROR: {s.error}" if s.error else "no data"
    return f"{fmt(s.median)} [{fmt(min(s.values))}-{fmt(max(s.values))}]"


@dataclass(frozen=True)
class Target:
    """A target from the issue: ``ratio <= limit`` (``upper``) or ``>= limit``."""

    limit: float
    upper: bool
    text: str

    def verdict(self, value: float) -> str:
        """PASS or MISS (informational: the benchmark never fails a build)."""
        ok = value <= self.limit if self.upper else value >= self.limit
        return "PASS" if ok else "MISS"


def at_most(limit: float, unit: str = "x") -> Target:
    """A target that the measured value must not exceed."""
    return Target(limit, True, f"<= {limit:g}{unit}")


def at_least(limit: float, unit: str = "x") -> Target:
    """A target that the measured value must reach."""
    return Target(limit, False, f">= {limit:g}{unit}")


def paired_ratios(a: Samples, b: Samples) -> list[float]:
    """Round-by-round ratios a/b: adjacent rounds share the machine's mood."""
    return [x / y for x, y in zip(a.values, b.values, strict=False) if y]


def print_table(
    title: str, header: Sequence[str], rows: Sequence[Sequence[str]]
) -> None:
    """A plain-text table: left-aligned first column, others right-aligned."""
    widths = [len(h) for h in header]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    print()
    print(title)

    def line(cells: Sequence[str]) -> str:
        parts = [cells[0].ljust(widths[0])]
        parts += [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=False)]
        return "  ".join(parts).rstrip()

    print(line(header))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))


def ratio_cells(
    s: Samples, base: Samples, target: Target | None, *, is_base: bool = False
) -> list[str]:
    """``ratio [paired min-max]``, the target and the verdict for one row."""
    if is_base:
        return ["1.00x", "(baseline)", ""]
    if not (s.ok and base.ok):
        return ["-", target.text if target else "-", "ERROR" if s.error else ""]
    ratio = s.median / base.median
    pairs = paired_ratios(s, base)
    spread = f" [{min(pairs):.2f}-{max(pairs):.2f}]" if pairs else ""
    if target is None:
        return [f"{ratio:.2f}x{spread}", "-", ""]
    return [f"{ratio:.2f}x{spread}", target.text, target.verdict(ratio)]


def settle() -> None:
    """Collect garbage between measurements, so one's garbage is not the next's."""
    gc.collect()


def now() -> float:
    """Wall clock for durations."""
    return time.perf_counter()


def cpu() -> float:
    """CPU time of this whole process (user + system, all threads)."""
    return time.process_time()


# -- settings ----------------------------------------------------------------


def _opt(default: Any, help_text: str) -> Any:
    """A ``Config`` field whose help text becomes its command-line flag's."""
    return field(default=default, metadata={"help": help_text})


@dataclass
class Config:
    """Sizes and repetitions of every section; ``quick()`` for a smoke run."""

    peak_rounds: int = _opt(7, "rounds of the peak table")
    peak_chunks: int = _opt(50_000, "lines per stream in the peak table")
    pace_rounds: int = _opt(5, "rounds of the pace table")
    pace_chunks: int = _opt(2_000, "lines per stream in the pace table")
    pace_ms: float = _opt(1.0, "milliseconds between paced lines")
    ttfc_trials: int = _opt(200, "trials per contender for time to first callback")
    conc_streams: int = _opt(256, "concurrent streams")
    conc_chunks: int = _opt(500, "lines per concurrent stream")
    conc_runs: int = _opt(10, "runs per contender in the concurrency table")
    big_chunks: int = _opt(1_000_000, "lines of the long stream (snapshot, memory)")
    big_rounds: int = _opt(3, "rounds of the snapshot table")
    poll_ms: float = _opt(10.0, "milliseconds between snapshot() polls")
    mem_rounds: int = _opt(3, "rounds of the memory table (a process each)")
    audit_rounds: int = _opt(5, "rounds of the audit table (a process per case)")
    audit_repeats: int = _opt(5, "timing repeats inside each audit process")
    routing_chats: int = _opt(200, "chats per strategy and round in the routing table")
    routing_threads: int = _opt(16, "threads sending the routing table's chats")
    routing_rounds: int = _opt(3, "rounds of the routing table")
    routing_slow: float = _opt(0.5, "seconds the cold host takes to its first token")

    @classmethod
    def quick(cls) -> Config:
        """A short run to check the suite works (under a minute on 2 idle cores)."""
        return cls(
            peak_rounds=3,
            peak_chunks=5_000,
            pace_rounds=2,
            pace_chunks=300,
            ttfc_trials=50,
            conc_chunks=50,
            conc_runs=2,
            big_chunks=50_000,
            big_rounds=2,
            mem_rounds=1,
            audit_rounds=1,
            audit_repeats=2,
            routing_chats=48,
            routing_rounds=1,
            routing_slow=0.2,
        )
