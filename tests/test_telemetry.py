"""OpenTelemetry: the spans and metrics of every call, read from the SDK's in-memory
exporters, against FakeOllama on both transports.

Each test hands private providers to the instrumentation (the global ones can be
set once per process); the global no-op path is tested too, and the absence of
the API in a fresh interpreter.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode

from ollama_stream_sync import (
    Conversation,
    ModelNotFound,
    RetryPolicy,
    StreamingClient,
    StreamTimeout,
)
from ollama_stream_sync._observe import CallInfo
from ollama_stream_sync._telemetry import CAPTURE_CONTENT, Telemetry, _Call, _PassOn
from ollama_stream_sync.testing import (
    Chunk,
    FakeOllama,
    Stall,
    http_error,
    pull_script,
    reply,
    tool_call,
)

from .support import USER, WAIT
from .support.clients import MakeClient, new_client

FAST = RetryPolicy(initial_delay=0.01, jitter=False)


class Recorder:
    """Private SDK providers, and clients whose calls they record."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.tracer = self.tracer_provider.get_tracer("app")

    def traced(self, client: StreamingClient) -> StreamingClient:
        client._engine.observers[:] = [
            Telemetry(self.tracer_provider, self.meter_provider)
        ]
        return client

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        spans = self.exporter.get_finished_spans()
        return [s for s in spans if name is None or s.name == name]

    def points(self, metric: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        return [
            point
            for resource in (data.resource_metrics if data else ())
            for scope in resource.scope_metrics
            for m in scope.metrics
            if m.name == metric
            for point in m.data.data_points
        ]

    def close(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


@pytest.fixture
def rec() -> Iterator[Recorder]:
    recorder = Recorder()
    yield recorder
    recorder.close()


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def events(span: ReadableSpan) -> list[tuple[str, dict[str, Any]]]:
    return [(e.name, dict(e.attributes or {})) for e in span.events]


def phases(span: ReadableSpan) -> list[str]:
    return [a["phase"] for name, a in events(span) if name.endswith(".phase")]


def traceparent(span: ReadableSpan) -> str:
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-"


def get_weather(city: str) -> str:
    """Get the current weather for a city.

    Args:
        city: The city's name.
    """
    return f"Sunny in {city}"


def broken(x: int) -> int:
    """A tool that fails.

    Args:
        x: Anything.
    """
    raise RuntimeError("database offline")


# -- a Conversation: thinking, tools, and the caller's span --------------------------


def test_a_conversation_round_is_one_span_per_model_call_under_the_callers(
    server: FakeOllama, make_client: MakeClient, rec: Recorder
) -> None:
    calls = [tool_call("get_weather", {"city": "Paris"}), tool_call("broken", {"x": 1})]
    server.enqueue(reply(thinking="Let me look.", tool_calls=calls))
    server.enqueue(reply("Sunny in Paris.", thinking="Got it."))
    with rec.traced(make_client(server.url)) as client:
        conv = Conversation(
            client, "qwen3", tools=[get_weather, broken], options={"temperature": 0.2}
        )
        with rec.tracer.start_as_current_span("app") as app:
            answer = conv.send("Weather in Paris?")
    assert answer.content == "Sunny in Paris."
    first, second = rec.spans("chat qwen3")
    weather, failed = rec.spans("execute_tool get_weather") + rec.spans(
        "execute_tool broken"
    )
    parent = app.get_span_context()
    for span in (first, second, weather, failed):
        assert span.parent is not None and span.parent.span_id == parent.span_id
        assert span.context.trace_id == parent.trace_id
    assert first.kind is SpanKind.CLIENT and weather.kind is SpanKind.INTERNAL
    # the tools ran between the two model calls
    assert first.end_time <= weather.start_time <= failed.start_time
    assert failed.end_time <= second.start_time
    address = server.url.split("//")[1]
    for span, reason in ((first, "tool_call"), (second, "stop")):
        a = attrs(span)
        assert a["gen_ai.operation.name"] == "chat"
        assert a["gen_ai.provider.name"] == "ollama"
        assert a["gen_ai.request.model"] == a["gen_ai.response.model"] == "qwen3"
        assert f"{a['server.address']}:{a['server.port']}" == address
        assert a["gen_ai.request.temperature"] == 0.2
        assert a["gen_ai.conversation.id"] == conv.id
        assert a["gen_ai.usage.input_tokens"] > 0
        assert a["gen_ai.usage.output_tokens"] > 0
        assert a["gen_ai.response.finish_reasons"] == (reason,)
        assert a["ollama.eval_duration"] > 0
        assert span.status.status_code is StatusCode.UNSET
    assert phases(first) == ["connecting", "waiting", "thinking", "tool_call"]
    names = [name for name, _ in events(first)]
    assert names.index("ollama_stream_sync.first_token") == 3  # right after thinking
    tool_events = [a for name, a in events(first) if name.endswith(".tool_call")]
    assert [e["gen_ai.tool.name"] for e in tool_events] == ["get_weather", "broken"]
    assert phases(second) == ["connecting", "waiting", "thinking", "answering"]
    assert attrs(weather)["gen_ai.tool.call.id"] == calls[0]["id"]
    assert weather.status.status_code is StatusCode.UNSET
    assert failed.status.status_code is StatusCode.ERROR
    assert attrs(failed)["error.type"] == "RuntimeError"
    (duration,) = rec.points("gen_ai.client.operation.duration")
    assert duration.count == 2 and "error.type" not in duration.attributes
    tokens = {
        p.attributes["gen_ai.token.type"]: p.sum
        for p in rec.points("gen_ai.client.token.usage")
    }
    assert tokens == {
        kind: sum(attrs(s)[f"gen_ai.usage.{kind}_tokens"] for s in (first, second))
        for kind in ("input", "output")
    }
    assert attrs(second)["gen_ai.usage.output_tokens"] == answer.eval_count
    (first_chunk,) = rec.points("gen_ai.client.operation.time_to_first_chunk")
    assert first_chunk.count == 2
    (per_chunk,) = rec.points("gen_ai.client.operation.time_per_output_chunk")
    assert per_chunk.count >= 4  # the chunks after each first one
    assert per_chunk.attributes["gen_ai.operation.name"] == "chat"


# -- the span ends with the stream, whichever way -------------------------------------


def test_cancel_while_thinking_is_not_an_error(
    server: FakeOllama, make_client: MakeClient, rec: Recorder
) -> None:
    server.enqueue([Chunk(thinking="Hmm, "), Stall()])
    thinking = threading.Event()
    with rec.traced(make_client(server.url)) as client:
        handle = client.start_chat("qwen3", USER, on_thinking=lambda t: thinking.set())
        assert thinking.wait(WAIT)
        assert rec.spans() == []  # a returned handle is no end
        handle.cancel()
        assert handle.result(WAIT).cancelled
    (span,) = rec.spans("chat qwen3")
    assert span.status.status_code is StatusCode.UNSET
    assert attrs(span)["ollama_stream_sync.cancelled"] is True
    assert "error.type" not in attrs(span)
    assert phases(span)[-1] == "thinking"
    (duration,) = rec.points("gen_ai.client.operation.duration")
    assert duration.count == 1 and "error.type" not in duration.attributes


def test_the_span_of_an_iterator_ends_when_the_iteration_does(
    server: FakeOllama, make_client: MakeClient, rec: Recorder
) -> None:
    server.enqueue([Chunk(content="One "), Chunk(content="two "), Stall()])
    with rec.traced(make_client(server.url)) as client:
        with client.stream_chat("qwen3", USER) as stream:
            text = stream.text()
            assert next(text) == "One "
            assert rec.spans() == []
        (span,) = rec.spans()  # leaving the block cancelled it
    assert attrs(span)["ollama_stream_sync.cancelled"] is True


def test_a_retry_after_a_503_and_the_trace_context_of_each_attempt(
    server: FakeOllama, make_client: MakeClient, rec: Recorder
) -> None:
    server.enqueue(http_error(503, "busy"), reply("Hello."))
    with rec.traced(make_client(server.url, retry=FAST)) as client:
        assert client.chat("qwen3", USER).content == "Hello."
    (span,) = rec.spans()
    retries = [a for name, a in events(span) if name == "ollama_stream_sync.retry"]
    assert retries == [{"attempt": 1, "error.type": "ServerError", "delay": 0.01}]
    assert "retrying" in phases(span)
    assert span.status.status_code is StatusCode.UNSET
    sent = [r.headers.get("traceparent", "") for r in server.stream_requests()]
    assert len(sent) == 2
    assert all(t.startswith(traceparent(span)) for t in sent), (sent, span.context)


def test_a_failover_reports_the_host_that_served(
    server: FakeOllama, make_client: MakeClient, rec: Recorder
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{probe.getsockname()[1]}"
    live = server.url.split("//")[1]
    client = rec.traced(make_client(hosts=[f"http://{dead}", server.url], retry=FAST))
    with client:
        client.chat("qwen3", USER)
    (span,) = rec.spans()
    a = attrs(span)
    assert f"{a['server.address']}:{a['server.port']}" == live
    switches = [e for name, e in events(span) if name.endswith(".host_switch")]
    assert switches == [{"from": dead, "to": live}]
    (retry,) = [e for name, e in events(span) if name.endswith(".retry")]
    assert retry["error.type"] == "ConnectionFailed"
    (duration,) = rec.points("gen_ai.client.operation.duration")
    assert duration.attributes["server.port"] == int(live.rsplit(":", 1)[1])


@pytest.mark.parametrize("failure", ["first_token", "deadline", "not_found"])
def test_failures_set_error_status_and_type(
    server: FakeOllama, make_client: MakeClient, rec: Recorder, failure: str
) -> None:
    expected: type[Exception] = StreamTimeout
    if failure == "first_token":
        server.enqueue([Stall()])
    elif failure == "deadline":
        server.enqueue([Chunk(content="Part"), Stall()])
    else:
        server.enqueue(http_error(404, "model 'qwen3' not found"))
        expected = ModelNotFound
    timeouts = {"first_token_timeout": 0.2} if failure != "deadline" else {}
    client = rec.traced(make_client(server.url, **timeouts))
    with client, pytest.raises(expected):
        client.chat("qwen3", USER, deadline=0.3 if failure == "deadline" else None)
    (span,) = rec.spans()
    a = attrs(span)
    assert span.status.status_code is StatusCode.ERROR
    assert a["error.type"] == expected.__name__
    if expected is StreamTimeout:
        assert a["ollama_stream_sync.timeout"] == failure
    else:
        assert a["http.response.status_code"] == 404
    if failure == "deadline":  # the partial answer's first token was seen
        assert "ollama_stream_sync.first_token" in [name for name, _ in events(span)]
    (duration,) = rec.points("gen_ai.client.operation.duration")
    assert duration.attributes["error.type"] == expected.__name__


# -- message content: only when asked for, and never a secret -----------------------


def _everything(rec: Recorder) -> str:
    """Every attribute, event and status text of every span, as one string."""
    parts = []
    for span in rec.spans():
        parts += [json.dumps(attrs(span)), str(span.status.description)]
        parts += [json.dumps(a) for _, a in events(span)]
    return "\n".join(parts)


@pytest.mark.parametrize("capture", [False, True])
def test_content_is_recorded_only_when_asked_and_never_a_secret(
    server: FakeOllama,
    make_client: MakeClient,
    rec: Recorder,
    monkeypatch: pytest.MonkeyPatch,
    capture: bool,
) -> None:
    if capture:
        monkeypatch.setenv(CAPTURE_CONTENT, "true")
    monkeypatch.setenv("OLLAMA_API_KEY", "sk-secret-key")
    calls = [tool_call("get_weather", {"city": "Paris"})]
    server.enqueue(reply(thinking="Weather tool.", tool_calls=calls))
    server.enqueue(reply("Sunny in Paris."))
    server.enqueue(http_error(404, "model 'nope' not found"))
    host = server.url.replace("http://", "http://user:hunter2@")
    headers = {"Authorization": "Bearer sk-secret-token"}
    with rec.traced(make_client(host, headers=headers)) as client:
        conv = Conversation(client, "qwen3", tools=[get_weather], system="Be brief.")
        conv.send("Weather in Paris?")
        with pytest.raises(ModelNotFound):
            client.chat("nope", USER)
    assert server.stream_requests()[0].headers.get("authorization")  # it was sent
    text = _everything(rec)
    for secret in ("sk-secret", "hunter2", "Bearer"):
        assert secret not in text
    first, second = rec.spans("chat qwen3")
    (tool,) = rec.spans("execute_tool get_weather")
    content_keys = {
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.tool.call.arguments",
        "gen_ai.tool.call.result",
    }
    if not capture:
        for key in content_keys:
            assert key not in text
        assert "Paris" not in text and "Be brief" not in text
        return
    sent = json.loads(attrs(second)["gen_ai.input.messages"])
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool"]
    assert sent[1]["parts"] == [{"type": "text", "content": "Weather in Paris?"}]
    assert sent[2]["parts"][0] == {"type": "reasoning", "content": "Weather tool."}
    assert sent[2]["parts"][1]["type"] == "tool_call"
    assert sent[2]["parts"][1]["arguments"] == {"city": "Paris"}
    assert sent[3]["parts"] == [
        {"type": "tool_call_response", "id": calls[0]["id"], "result": "Sunny in Paris"}
    ]
    (said,) = json.loads(attrs(second)["gen_ai.output.messages"])
    assert said == {
        "role": "assistant",
        "parts": [{"type": "text", "content": "Sunny in Paris."}],
        "finish_reason": "stop",
    }
    (asked,) = json.loads(attrs(first)["gen_ai.output.messages"])
    assert asked["finish_reason"] == "tool_call"
    assert json.loads(attrs(tool)["gen_ai.tool.call.arguments"]) == {"city": "Paris"}
    assert attrs(tool)["gen_ai.tool.call.result"] == "Sunny in Paris"


# -- generate, pull, and switching it off ----------------------------------------------


def test_generate_names_its_operation_and_request_settings(
    server: FakeOllama, make_client: MakeClient, rec: Recorder
) -> None:
    server.enqueue(reply('{"a": 1}', done_reason="length"))
    options = {"top_p": 0.9, "top_k": 40, "num_predict": 5, "seed": 7, "stop": ["\n"]}
    with rec.traced(make_client(server.url)) as client:
        client.generate("qwen3", "Hi", format="json", options=options)
    (span,) = rec.spans("generate qwen3")
    a = attrs(span)
    assert a["gen_ai.operation.name"] == "text_completion"
    assert a["gen_ai.request.top_p"] == 0.9 and a["gen_ai.request.top_k"] == 40
    assert a["gen_ai.request.max_tokens"] == 5 and a["gen_ai.request.seed"] == 7
    assert a["gen_ai.request.stop_sequences"] == ("\n",)
    assert a["gen_ai.output.type"] == "json"
    assert a["gen_ai.response.finish_reasons"] == ("length",)


def test_a_pull_gets_a_span_with_its_stages_and_bytes(
    server: FakeOllama, make_client: MakeClient, rec: Recorder
) -> None:
    server.enqueue(pull_script("qwen3", layers=(1000, 500)), endpoint="pull")
    with rec.traced(make_client(server.url)) as client:
        result = client.pull("qwen3")
    assert not result.cancelled
    (span,) = rec.spans("pull qwen3")
    a = attrs(span)
    assert a["ollama.operation"] == "pull" and "gen_ai.operation.name" not in a
    assert a["ollama.progress.status"] == "success"
    assert a["ollama.progress.completed"] == a["ollama.progress.total"] == 1500
    stages = [e["stage"] for name, e in events(span) if name.endswith(".progress")]
    assert stages[0] == "manifest" and stages[-1] == "success"
    assert "downloading" in stages
    assert rec.points("gen_ai.client.operation.duration") == []  # not a GenAI call


def test_telemetry_is_on_by_default_and_off_when_asked(server: FakeOllama) -> None:
    with (
        StreamingClient(server.url) as on,
        StreamingClient(server.url, telemetry=False) as off,
    ):
        assert [type(o) for o in on._engine.observers] == [Telemetry]
        assert off._engine.observers == []
    with pytest.raises(TypeError, match="telemetry"):
        StreamingClient(server.url, telemetry="yes")  # type: ignore[arg-type]


def test_with_no_sdk_an_incoming_trace_context_still_passes_through(
    server: FakeOllama, make_client: MakeClient
) -> None:
    """The global providers are the API's no-op ones here: nothing is recorded,
    but a gateway still joins the trace the application is part of."""
    incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with make_client(server.url) as client:
        client.chat("qwen3", USER)
        token = otel_context.attach(propagate.extract({"traceparent": incoming}))
        try:
            client.chat("qwen3", USER)
        finally:
            otel_context.detach(token)
    alone, joined = (r.headers.get("traceparent") for r in server.stream_requests())
    assert alone is None and joined == incoming


def test_with_no_sdk_a_call_only_passes_the_trace_on(rec: Recorder) -> None:
    """With the API's own providers nothing records, so a call costs next to nothing
    (this pins how the API's providers are told from an SDK's, on this version);
    an SDK for either signal gets the whole instrumentation."""
    call = CallInfo("chat", "qwen3", {})
    assert type(Telemetry()(call)) is _PassOn
    assert type(Telemetry(tracer_provider=rec.tracer_provider)(call)) is _Call
    assert type(Telemetry(meter_provider=rec.meter_provider)(call)) is _Call


def test_an_sdk_for_one_signal_records_it_alone(
    server: FakeOllama, rec: Recorder
) -> None:
    """Metrics without traces (and traces without metrics) still record."""
    with new_client(server.url, telemetry=False) as client:
        client._engine.observers[:] = [Telemetry(meter_provider=rec.meter_provider)]
        client.chat("qwen3", USER)
        client._engine.observers[:] = [Telemetry(tracer_provider=rec.tracer_provider)]
        client.chat("qwen3", USER)
    (duration,) = rec.points("gen_ai.client.operation.duration")
    assert duration.count == 1
    assert [s.name for s in rec.spans()] == ["chat qwen3"]


def test_hundreds_of_streams_each_get_their_own_span(
    server: FakeOllama, make_client: MakeClient, rec: Recorder
) -> None:
    server.default_reply = reply("Hi there.", thinking="Short.")
    with rec.traced(make_client(server.url)) as client:
        with rec.tracer.start_as_current_span("batch") as batch:
            handles = [client.start_chat("qwen3", USER) for _ in range(200)]
        for handle in handles:
            assert handle.result(WAIT * 4).content == "Hi there."
    spans = rec.spans("chat qwen3")
    assert len(spans) == 200 and len({s.context.span_id for s in spans}) == 200
    assert {s.parent.span_id for s in spans if s.parent} == {
        batch.get_span_context().span_id
    }
    assert all(phases(s)[-1] == "answering" for s in spans)
    (duration,) = rec.points("gen_ai.client.operation.duration")
    assert duration.count == 200


# -- without the API -----------------------------------------------------------------

_BLOCKED = """
import sys

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None

sys.meta_path.insert(0, Blocker())
from ollama_stream_sync import Conversation, StreamingClient

with StreamingClient(sys.argv[1]) as client:
    assert client._engine.observers == []
    print(client.chat("qwen3", [{"role": "user", "content": "Hi"}]).content)
    Conversation(client, "qwen3").send("Hi")
print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
"""


def test_without_the_api_nothing_of_opentelemetry_is_imported(
    server: FakeOllama,
) -> None:
    server.default_reply = reply("Hello.")
    run = subprocess.run(
        [sys.executable, "-c", _BLOCKED, server.url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["Hello.", "[]"]
    assert len(server.stream_requests()) == 2


def test_importing_the_library_imports_no_opentelemetry() -> None:
    """Even with the API installed, only building a client loads it."""
    code = (
        "import sys, ollama_stream_sync; "
        "print(any(m.startswith('opentelemetry') for m in sys.modules))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.stdout.strip() == "False", run.stderr
