"""``hosts``: a table of Ollama hosts as the library sees them, one row each."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ollama_stream_sync import HostHealth

from ._failure import EXIT_OK, Failure, open_client

COLUMNS = ("HOST", "STATUS", "BREAKER", "IN FLIGHT", "VERSION", "LATENCY", "LOADED")


def run(args: argparse.Namespace) -> int:
    """Show each host's health: version, latency, breaker, streams, models loaded.

    One row per --host (give it several times for a fleet; default: $OLLAMA_HOST,
    then http://127.0.0.1:11434), asked in parallel: whether it answers, its
    version and how long the answer took, its breaker and streams in flight as
    this process sees them, and the models in its memory (with how many it has
    on disk). Exit status 1 when a host does not answer.
    """
    hosts: list[str] = args.host or []
    one = hosts[0] if len(hosts) == 1 else None
    with open_client(one, hosts=hosts if len(hosts) > 1 else None) as client:
        health = client.health(timeout=args.timeout or None)
    down = [h for h in health if not h.reachable]
    sys.stdout.write(table(health) + "\n")
    sys.stdout.writelines(f"{h.url}: {h.error}\n" for h in down)
    if down:
        raise Failure(f"{len(down)} of {len(health)} hosts did not answer")
    return EXIT_OK


def table(health: Sequence[HostHealth]) -> str:
    """The rows under their headings, columns padded to the widest cell."""
    rows = [COLUMNS, *(_row(h) for h in health)]
    widths = [max(map(len, column)) for column in zip(*rows, strict=True)]
    return "\n".join("  ".join(map(str.ljust, row, widths)).rstrip() for row in rows)


def _row(h: HostHealth) -> tuple[str, ...]:
    loaded = ", ".join(h.models_loaded or ()) or "-"
    if h.models_available is not None:
        loaded += f" (of {len(h.models_available)} on disk)"
    return (
        h.url,
        "ok" if h.reachable else "down",
        h.breaker.replace("_", "-"),
        str(h.in_flight),
        h.version or "-",
        "-" if h.latency is None else f"{h.latency * 1000:.0f} ms",
        loaded if h.reachable else "-",
    )
