"""The OpenTelemetry spans of a chat with a tool call, and of a cancelled chat.

Run: python examples/telemetry_spans.py [--host URL --model NAME]
Needs: pip install 'ollama-stream-sync[otel]' opentelemetry-sdk
Without --host it starts the built-in fake Ollama, scripted to call the tool and
then to think until it is cancelled. The spans are kept in memory and printed as
a tree at the end, with their attributes and events.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from ollama_stream_sync import Conversation, StreamingClient
from ollama_stream_sync.testing import Chunk, FakeOllama, Stall, reply, tool_call

SHOWN = (
    "gen_ai.operation.name",
    "server.address",
    "server.port",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.response.finish_reasons",
    "gen_ai.tool.name",
    "ollama_stream_sync.cancelled",
    "error.type",
)


def get_weather(city: str) -> str:
    """Get the current weather for a city.

    Args:
        city: The city's name, e.g. Paris.
    """
    return f"Sunny and 21 C in {city}"


@contextlib.contextmanager
def ollama_host(host: str | None) -> Iterator[str]:
    if host:
        yield host
        return
    with FakeOllama() as server:
        server.enqueue(
            reply(
                thinking="The weather tool knows.",
                tool_calls=[tool_call("get_weather", {"city": "Paris"})],
            ),
            reply("Sunny and 21 C in Paris."),
            [Chunk(thinking="A long thought "), Stall()],  # until cancelled
        )
        yield server.url


def show(span: ReadableSpan, spans: list[ReadableSpan], depth: int = 0) -> None:
    """Print a span, its attributes and events, then its children in order."""
    start, end = span.start_time or 0, span.end_time or 0
    attrs = span.attributes or {}
    facts = ", ".join(f"{k}={attrs[k]!s}" for k in SHOWN if k in attrs)
    pad, status = "  " * depth, span.status.status_code.name
    print(f"{pad}{span.name}  {(end - start) / 1e6:.1f} ms  {status}")
    if facts:
        print(f"{pad}  {facts}")
    for event in span.events:
        detail = ", ".join(f"{k}={v!s}" for k, v in (event.attributes or {}).items())
        print(
            f"{pad}  @{(event.timestamp - start) / 1e6:6.1f} ms {event.name} {detail}"
        )
    context = span.get_span_context()
    parent_id = context.span_id if context else None
    children = [s for s in spans if s.parent and s.parent.span_id == parent_id]
    for child in sorted(children, key=lambda s: s.start_time or 0):
        show(child, spans, depth + 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host")
    parser.add_argument("--model", default="qwen3")
    args = parser.parse_args()

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # what your application does once
    tracer = trace.get_tracer("telemetry-example")

    with ollama_host(args.host) as host, StreamingClient(host) as client:
        with tracer.start_as_current_span("weather question"):
            conv = Conversation(client, args.model, tools=[get_weather], think=True)
            print("Answer:", conv.send("Weather in Paris?").content)
        with tracer.start_as_current_span("cancelled question"):
            handle = client.start_chat(
                args.model,
                [{"role": "user", "content": "Think about it for a long time."}],
                think=True,
            )
            handle.wait_for(lambda r: bool(r.thinking or r.content), timeout=60)
            handle.cancel()  # a Stop button
            print("Cancelled:", handle.result().cancelled)

    spans = list(exporter.get_finished_spans())
    print()
    for root in sorted(
        (s for s in spans if s.parent is None), key=lambda s: s.start_time or 0
    ):
        show(root, spans)
    provider.shutdown()


if __name__ == "__main__":
    main()
