"""What OpenTelemetry costs a stream: off, the API alone, and an SDK recording.

Run alone: ``python benchmarks/bench_telemetry.py [--quick]`` (the same as
``python benchmarks/run.py --only telemetry``).

Three clients read the same streams, round by round:

- ``off``: ``StreamingClient(url, telemetry=False)``;
- ``API only``: ``StreamingClient(url)`` with ``opentelemetry-api`` installed and
  no SDK configured (this process never sets a global provider), the state of
  every program that has the API only because some dependency pulled it in;
- ``SDK``: a client whose calls an SDK records, every span exported to an
  in-memory exporter by a ``SimpleSpanProcessor`` (synchronously, on the stream's
  thread) and every measurement aggregated by the SDK's meter provider. The
  providers are private to that client, as the tests hand them in.

The paced table is the issue's measurement: one NDJSON line per HTTP chunk,
about 1 ms apart, client CPU per chunk. The batched table shows the same cost
per chunk without the waiting, where it is easier to see.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator

from _harness import (
    Config,
    Samples,
    ServerProcess,
    batched,
    fmt_range,
    paced,
    print_table,
    ratio_cells,
)
from bench_stream import interleaved, one_stream
from contenders import Contender, chat_with_callback

from ollama_stream_sync import StreamingClient

KEYS = ("off", "api", "sdk")
LABELS = {"off": "telemetry=False", "api": "API only (no SDK)", "sdk": "SDK, in-memory"}


@contextlib.contextmanager
def contenders(url: str) -> Iterator[list[Contender]]:
    """The three clients, closed together; the SDK's providers shut down after."""
    # Here, not at the top: without the SDK the section says so instead.
    from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: PLC0415
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: PLC0415
        InMemorySpanExporter,
    )

    from ollama_stream_sync._telemetry import Telemetry  # noqa: PLC0415

    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    with contextlib.ExitStack() as stack:
        stack.callback(meter_provider.shutdown)
        stack.callback(tracer_provider.shutdown)
        off = stack.enter_context(StreamingClient(url, telemetry=False))
        api = stack.enter_context(StreamingClient(url))
        sdk = stack.enter_context(StreamingClient(url, telemetry=False))
        sdk._engine.observers.append(Telemetry(tracer_provider, meter_provider))
        run_sdk = chat_with_callback(sdk)

        def recorded(model: str, sink: object) -> None:
            exporter.clear()  # keep memory flat across rounds
            run_sdk(model, sink)  # type: ignore[arg-type]

        yield [
            Contender("off", LABELS["off"], chat_with_callback(off)),
            Contender("api", LABELS["api"], chat_with_callback(api)),
            Contender("sdk", LABELS["sdk"], recorded),
        ]


def _table(title: str, results: dict[str, dict[str, Samples]]) -> None:
    base = results["off"].get("cpu", Samples(error="no data"))
    rows = []
    for key in KEYS:
        cpu_us = results[key].get("cpu") or results[key].get("", Samples())
        ratio = ratio_cells(cpu_us, base, None, is_base=key == "off")[0]
        added = (
            f"{cpu_us.median - base.median:+.2f}"
            if key != "off" and cpu_us.ok and base.ok
            else ""
        )
        cells = fmt_range(cpu_us, lambda v: f"{v:.2f}")
        rows.append([LABELS[key], cells, ratio, added])
    print_table(
        title,
        ["client", "CPU us/chunk median [min-max]", "ratio to off", "added us/chunk"],
        rows,
    )


def run(srv: ServerProcess, cfg: Config) -> None:
    """The paced and the batched tables."""
    if importlib.util.find_spec("opentelemetry.sdk") is None:
        print("\nTELEMETRY: needs opentelemetry-sdk (pip install -e '.[dev]')")
        return
    with contenders(srv.url) as items:
        for c in items:
            one_stream(c, batched(10), 10)  # warm: connections open
        n, interval = cfg.pace_chunks, cfg.pace_ms

        def pace(c: Contender) -> dict[str, float]:
            _, cpu_s = one_stream(c, paced(n, interval), n)
            return {"cpu": cpu_s / (n + 1) * 1e6}

        paced_results = interleaved(items, cfg.pace_rounds, pace)
        big = cfg.peak_chunks // 5

        def burst(c: Contender) -> dict[str, float]:
            _, cpu_s = one_stream(c, batched(big), big)
            return {"cpu": cpu_s / (big + 1) * 1e6}

        batched_results = interleaved(items, cfg.peak_rounds, burst)
    _table(
        f"TELEMETRY AT REAL PACE: {n:,} lines, one per HTTP chunk every"
        f" {interval:g} ms, {cfg.pace_rounds} rounds interleaved (client CPU, all"
        " threads; lower is better)",
        paced_results,
    )
    _table(
        f"TELEMETRY PER CHUNK, BATCHED: {big:,} lines back to back,"
        f" {cfg.peak_rounds} rounds interleaved (client CPU; lower is better)",
        batched_results,
    )


if __name__ == "__main__":
    import run as run_all

    run_all.main(default_only=("telemetry",))
