"""Peak memory of a very long stream, per character of text it holds.

Each measurement runs in a fresh interpreter (``python bench_memory.py child
...``) so that nothing from an earlier stream hides in the heap. The child
builds its client, streams a short warm-up, then resets the kernel's peak
resident-set mark (``/proc/self/clear_refs``) and reads ``VmRSS``; it streams
the long answer, keeps the result, and reads ``VmHWM`` (the peak since the
reset) and ``VmRSS`` (what is still held). Growth is divided by the size of the
final text as a Python ``str`` (1 byte per ASCII character).

Contenders: ``start_chat()`` without callbacks (the handle's accumulator holds
the text) over httpx and ``session=``, the iterator when the API exists, and,
for reference, the bare SDK loop collecting deltas in a list and joining them
at the end, as a user of the bare SDK would.
"""

from __future__ import annotations

import gc
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _harness import (
    USER,
    Config,
    Samples,
    ServerProcess,
    at_most,
    batched,
    expected_chars,
    fmt_range,
    print_table,
    run_child,
)

TARGET = at_most(2.0)
KEYS = ("bare", "httpx", "session", "iterator")
LABELS = {
    "bare": "bare SDK loop, list + join (reference)",
    "httpx": "start_chat() httpx, result()",
    "session": "start_chat() session=, result()",
    "iterator": "stream_chat() iterator",
}


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def child(url: str, key: str, n: int) -> None:
    """Measure one contender's memory for an ``n``-line stream; print JSON."""
    import ollama  # noqa: PLC0415  # only the child pays for these imports
    import requests  # noqa: PLC0415

    from ollama_stream_sync import StreamingClient  # noqa: PLC0415

    model = batched(n)
    # Each way streams a model and returns (characters delivered, the object
    # that holds the text), so the text stays alive until the peak is read.
    stream: Callable[[str], tuple[int, object]]
    if key == "bare":
        sdk = ollama.Client(url)

        def bare(m: str) -> tuple[int, object]:
            parts = []
            for part in sdk.chat(m, USER, stream=True):
                if part.message.content:
                    parts.append(part.message.content)
            text = "".join(parts)
            return len(text), text

        stream = bare
    else:
        session = requests.Session() if key == "session" else None
        client = StreamingClient(url, session=session)

        def handle(m: str) -> tuple[int, object]:
            result = client.start_chat(m, USER).result(timeout=600)
            return len(result.content), result

        def iterator(m: str) -> tuple[int, object]:
            loose: Any = client  # the API is newer than some measured versions
            it = loose.stream_chat(m, USER)
            # Only counted here: whatever text the iterator keeps is its own.
            return sum(len(t) for t in it.text()), it

        stream = iterator if key == "iterator" else handle

    stream(batched(10))  # warm: imports, connection, first allocations
    gc.collect()
    reset = _reset_peak()
    before = _status_kb("VmRSS")
    chars, holder = stream(model)
    hwm = _status_kb("VmHWM")
    after = _status_kb("VmRSS")
    del holder
    print(
        json.dumps(
            {
                "before_kb": before,
                "hwm_kb": hwm,
                "after_kb": after,
                "text_bytes": sys.getsizeof("") + expected_chars(n),
                "reset": reset,
                "ok": chars == expected_chars(n),
            }
        )
    )


def run(srv: ServerProcess, cfg: Config) -> None:
    """Every contender in a fresh process, round by round; one table."""
    from contenders import has_iterator  # noqa: PLC0415  # imports the library

    n = cfg.big_chunks
    keys = [k for k in KEYS if k != "iterator" or has_iterator()]
    peak = {k: Samples() for k in keys}
    kept = {k: Samples() for k in keys}
    resets = True
    for _ in range(cfg.mem_rounds):
        for key in keys:
            if peak[key].error:
                continue
            try:
                data = run_child(
                    Path(__file__), ["child", srv.url, key, str(n)], 120 + n / 1000
                )
            except Exception as exc:  # noqa: BLE001  # reported in the table
                peak[key].error = kept[key].error = str(exc)[:120]
                continue
            if not data["ok"]:
                peak[key].error = kept[key].error = "wrong text"
                continue
            resets = resets and data["reset"]
            size = data["text_bytes"]
            peak[key].values.append((data["hwm_kb"] - data["before_kb"]) * 1024 / size)
            kept[key].values.append(
                (data["after_kb"] - data["before_kb"]) * 1024 / size
            )
    rows = []
    for key in keys:
        reference = key == "bare"
        verdict = (
            TARGET.verdict(peak[key].median) if peak[key].ok and not reference else ""
        )
        rows.append(
            [
                LABELS[key],
                fmt_range(peak[key], lambda v: f"{v:.1f}x"),
                fmt_range(kept[key], lambda v: f"{v:.1f}x"),
                "-" if reference else TARGET.text,
                verdict,
            ]
        )
    text_mb = (sys.getsizeof("") + expected_chars(n)) / 1e6
    print_table(
        f"MEMORY: {n:,}-line stream, {text_mb:.1f} MB of text; peak RSS growth"
        f" / text size, each in a fresh process, {cfg.mem_rounds} rounds"
        " interleaved (lower is better)",
        ["contender", "peak growth / text", "held at end / text", "target", ""],
        rows,
    )
    if not resets:
        print(
            "  /proc/self/clear_refs was not writable: the peak includes start-up,"
            " so these figures are upper bounds"
        )
    if n < 200_000:
        print("  (short stream: allocator and buffer noise dominate; use the full run)")
    print(
        "  'peak growth' is VmHWM after the stream minus VmRSS before it; 'held at"
        " end' is VmRSS with the result still referenced"
    )


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        sys.exit("usage: bench_memory.py child URL KEY N (run.py starts it)")
