"""OpenTelemetry traces and metrics of every call, through the observer seam.

Imported only when ``opentelemetry-api`` is installed, and used through the
API alone: the application installs and configures the SDK and its exporters
(without one, the API's no-op providers make all of this nearly free). Names
follow the OpenTelemetry semantic conventions for generative AI as released in
semantic-conventions v1.41.0 (``SCHEMA_URL``), the last release that holds them
before they moved to their own repository: one CLIENT span per request to a
model, ``execute_tool`` spans for the tools a ``Conversation`` runs, and the
``gen_ai.client.*`` histograms. Message content is recorded only when
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``; headers never are.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from . import Content, Phase, Progress, Reset, Retry, Thinking, ToolCall
from ._observe import CallInfo, ToolRun

log = logging.getLogger("ollama_stream_sync")

SCHEMA_URL = "https://opentelemetry.io/schemas/1.41.0"
SCOPE = "ollama_stream_sync"
"""The tracer's and the meter's name."""
CAPTURE_CONTENT = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"

_SECONDS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24]
_SECONDS += [20.48, 40.96, 81.92]
_TOKENS = [float(4**i) for i in range(14)]  # 1, 4, 16 ... 67108864
"""The conventions' bucket advice for durations and for token counts."""

_GEN_AI_OPERATION = {
    "chat": "chat",
    "generate": "text_completion",
    "embed": "embeddings",
}
"""Our calls that are GenAI operations, by the conventions' names; the others
(pull, push, create, preload, unload) get a span but no gen_ai metrics."""
_IMAGE_KEYS = ("images", "width", "height", "steps")
"""A generate with any of these is multimodal: ``generate_content``."""
_OPTIONS = {
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "top_k": "gen_ai.request.top_k",
    "num_predict": "gen_ai.request.max_tokens",
    "seed": "gen_ai.request.seed",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "presence_penalty": "gen_ai.request.presence_penalty",
}
_TIMINGS = ("load_duration", "prompt_eval_duration", "eval_duration")
"""Ollama's own timings (nanoseconds), recorded as ``ollama.*`` in seconds."""
_OUTPUT = (Thinking, Content, ToolCall)
_USERINFO = re.compile(r"://[^/\s@]*@")

T = TypeVar("T")


def _guarded(default: Any) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Telemetry must never break a stream: a bug here is logged, not raised."""

    def wrap(method: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(method)
        def guarded(*args: Any) -> T:
            try:
                return method(*args)
            except Exception:
                log.debug("telemetry failed in %s", method.__name__, exc_info=True)
                return default  # type: ignore[no-any-return]

        return guarded

    return wrap


class _Meters:
    """The conventions' client histograms, from one meter."""

    def __init__(self, meter: metrics.Meter) -> None:
        def histogram(name: str, unit: str, what: str) -> metrics.Histogram:
            buckets = _TOKENS if unit == "{token}" else _SECONDS
            return meter.create_histogram(
                name, unit, what, explicit_bucket_boundaries_advisory=buckets
            )

        self.duration = histogram(
            "gen_ai.client.operation.duration", "s", "GenAI operation duration."
        )
        self.tokens = histogram(
            "gen_ai.client.token.usage",
            "{token}",
            "Number of input and output tokens used.",
        )
        self.first_chunk = histogram(
            "gen_ai.client.operation.time_to_first_chunk",
            "s",
            "Time to receive the first chunk, from issuing the request.",
        )
        self.per_chunk = histogram(
            "gen_ai.client.operation.time_per_output_chunk",
            "s",
            "Time between the output chunks after the first.",
        )


class Telemetry:
    """The ``ObserverFactory`` that traces and measures each call.

    With no providers given it uses the global ones, looked up at each call (an
    SDK configured after the client was built still takes effect); tests hand
    in private providers instead.
    """

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        try:
            self._version: str | None = importlib.metadata.version("ollama-stream-sync")
        except importlib.metadata.PackageNotFoundError:
            self._version = None
        # Per provider, so that a provider set later (or swapped in a test) is
        # used; replaced whole, so threads racing here at worst build one twice.
        self._tracer: tuple[object, trace.Tracer] | None = None
        self._meters: tuple[object, _Meters] | None = None

    def _tools(self) -> tuple[trace.Tracer, _Meters]:
        tp = self.tracer_provider or trace.get_tracer_provider()
        if self._tracer is None or self._tracer[0] is not tp:
            self._tracer = (tp, tp.get_tracer(SCOPE, self._version, SCHEMA_URL))
        mp = self.meter_provider or metrics.get_meter_provider()
        if self._meters is None or self._meters[0] is not mp:
            meter = mp.get_meter(SCOPE, self._version, SCHEMA_URL)
            self._meters = (mp, _Meters(meter))
        return self._tracer[1], self._meters[1]

    @_guarded(None)
    def __call__(self, call: CallInfo) -> _Call:
        tracer, meters = self._tools()
        capture = os.environ.get(CAPTURE_CONTENT, "").strip().lower() == "true"
        # The caller's context, taken on the caller's thread: the span's parent.
        return _Call(tracer, meters, call, otel_context.get_current(), capture)


class _Call:
    """One call's spans and measurements: the ``Observer`` of one handle.

    A request's span stays open after the request ended (its end time kept)
    until the next request opens or the call ends, so that the call's final
    outcome (a cancel that landed, a failed validation, too many tool rounds)
    is the one its last span reports.
    """

    def __init__(
        self,
        tracer: trace.Tracer,
        meters: _Meters,
        call: CallInfo,
        parent: otel_context.Context,
        capture: bool,
    ) -> None:
        self._tracer, self._m, self._info = tracer, meters, call
        self._parent, self._capture = parent, capture
        body = call.body
        self._operation = _GEN_AI_OPERATION.get(call.operation)
        if call.operation == "generate" and any(body.get(k) for k in _IMAGE_KEYS):
            self._operation = "generate_content"
        # Guards _span: phases may come from a probe's thread while it closes.
        self._lock = threading.Lock()
        self._span: Span | None = None
        self._start_ns, self._began = time.time_ns(), time.perf_counter()
        self._attrs: dict[str, Any] = {}
        """The metrics' attributes (replaced whole, never changed in place)."""
        self._url: str | None = None
        self._last: float | None = None
        self._ended: tuple[Any, BaseException | None, int, float] | None = None
        self._status = ""

    # -- the observer ---------------------------------------------------------

    @_guarded(None)
    def request(self, body: Mapping[str, Any] | None) -> None:
        self._close(None)
        info, op = self._info, self._operation
        body = self._info.body if body is None else body
        base: dict[str, Any] = {"gen_ai.provider.name": "ollama"}
        if info.model:
            base["gen_ai.request.model"] = info.model
        attrs = dict(base)
        if op is None:
            attrs["ollama.operation"] = info.operation
        else:
            base["gen_ai.operation.name"] = attrs["gen_ai.operation.name"] = op
            attrs["gen_ai.request.stream"] = True
            attrs |= _request_attributes(body)
        if info.extra.get("conversation"):
            attrs["gen_ai.conversation.id"] = str(info.extra["conversation"])
        name = f"{info.operation} {info.model}" if info.model else info.operation
        if self._start_ns == 0:  # a later round starts now
            self._start_ns, self._began = time.time_ns(), time.perf_counter()
        span = self._tracer.start_span(
            name,
            self._parent,
            SpanKind.CLIENT,
            attrs,
            start_time=self._start_ns,
        )
        if self._capture and op is not None and span.is_recording():
            span.set_attributes(_input_content(body))
        self._attrs, self._url, self._last, self._ended = base, None, None, None
        with self._lock:
            self._span = span

    @_guarded({})
    def attempt(self, number: int, url: str) -> Mapping[str, str]:
        span = self._span
        if span is None:
            return {}
        if url != self._url:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            where: dict[str, Any] = {
                "server.address": parts.hostname or "",
                "server.port": port,
            }
            if self._url is not None:
                before = urlsplit(self._url)
                span.add_event(
                    "ollama_stream_sync.host_switch",
                    {"from": before.netloc.rpartition("@")[2], "to": parts.netloc},
                )
            self._url, self._attrs = url, self._attrs | where
            span.set_attributes(where)
        headers: dict[str, str] = {}
        propagate.inject(headers, trace.set_span_in_context(span, self._parent))
        return headers

    def event(self, event: Any) -> None:
        try:
            kind = type(event)
            if kind in _OUTPUT:  # the per-chunk path: keep it short
                now = time.perf_counter()
                last, self._last = self._last, now
                if last is None:
                    self._first_chunk(now - self._began)
                elif self._operation is not None:
                    self._m.per_chunk.record(now - last, self._attrs)
                if kind is not ToolCall:
                    return
            with self._lock:
                span = self._span
                if span is not None and span.is_recording():
                    self._span_event(span, event)
        except Exception:
            log.debug("telemetry failed on %r", type(event), exc_info=True)

    @_guarded(None)
    def request_end(self, result: Any, error: BaseException | None) -> None:
        self._ended = (result, error, time.time_ns(), time.perf_counter())

    @_guarded(None)
    def tool(self, run: ToolRun) -> None:
        function = run.call.get("function") or {}
        name = str(function.get("name", ""))
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": name,
            "gen_ai.tool.type": "function",
        }
        if run.call.get("id"):
            attrs["gen_ai.tool.call.id"] = str(run.call["id"])
        if self._capture:
            attrs["gen_ai.tool.call.arguments"] = _json(function.get("arguments"))
            attrs["gen_ai.tool.call.result"] = run.result
        start = int(run.start * 1e9)
        span = self._tracer.start_span(
            f"execute_tool {name}",
            self._parent,
            SpanKind.INTERNAL,
            attrs,
            start_time=start,
        )
        if run.error is not None:
            _fail(span, run.error)
        span.end(start + int(run.seconds * 1e9))

    @_guarded(None)
    def end(self, result: Any, error: BaseException | None) -> None:
        self._close((result, error))

    # -- inside -----------------------------------------------------------------

    def _first_chunk(self, seconds: float) -> None:
        if self._operation is not None:
            self._m.first_chunk.record(seconds, self._attrs)
        with self._lock:
            span = self._span
            if span is not None and span.is_recording():
                span.set_attribute("gen_ai.response.time_to_first_chunk", seconds)
                span.add_event("ollama_stream_sync.first_token")

    def _span_event(self, span: Span, event: Any) -> None:
        kind = type(event)
        if kind is Phase:
            span.add_event("ollama_stream_sync.phase", {"phase": event.name})
        elif kind is ToolCall:
            function = event.call.get("function") or {}
            attrs = {"gen_ai.tool.name": str(function.get("name", ""))}
            if event.call.get("id"):
                attrs["gen_ai.tool.call.id"] = str(event.call["id"])
            if self._capture:
                attrs["gen_ai.tool.call.arguments"] = _json(function.get("arguments"))
            span.add_event("ollama_stream_sync.tool_call", attrs)
        elif kind is Retry or kind is Reset:
            attrs = {"attempt": event.attempt, "error.type": type(event.error).__name__}
            if kind is Retry:
                attrs["delay"] = event.delay
            span.add_event(f"ollama_stream_sync.{kind.__name__.lower()}", attrs)
        elif kind is Progress and event.status != self._status:
            self._status = event.status
            span.add_event(
                "ollama_stream_sync.progress",
                {"stage": event.stage, "status": event.status},
            )

    def _close(self, final: tuple[Any, BaseException | None] | None) -> None:
        """End the open request's span, with the call's outcome when it ended."""
        if self._span is None:
            if final is None:
                return
            self.request(None)  # the call failed before any request: still a span
        with self._lock:
            span, self._span = self._span, None
        if span is None:
            return
        result, error, end_ns, end_at = self._ended or (None, None, None, None)
        if final is not None:
            result = result if final[0] is None else final[0]
            error = final[1] or error
        data = result if result is not None else getattr(error, "partial", None)
        cancelled = error is None and bool(getattr(data, "cancelled", False))
        attrs = self._attrs
        if span.is_recording():
            span.set_attributes(_response_attributes(data, self._capture))
            if cancelled:
                span.set_attribute("ollama_stream_sync.cancelled", True)
        if error is not None:
            _fail(span, error)
            attrs = attrs | {"error.type": type(error).__name__}
        if end_ns is None or end_at is None:
            end_ns, end_at = time.time_ns(), time.perf_counter()
        if self._operation is not None:
            self._m.duration.record(end_at - self._began, attrs)
            model = getattr(data, "model", None)
            usage = self._attrs | ({"gen_ai.response.model": model} if model else {})
            for kind, field in (
                ("input", "prompt_eval_count"),
                ("output", "eval_count"),
            ):
                count = getattr(data, field, None)
                if isinstance(count, int):
                    self._m.tokens.record(count, usage | {"gen_ai.token.type": kind})
        self._start_ns = 0
        span.end(end_ns)


def _fail(span: Span, error: BaseException) -> None:
    """ERROR status and ``error.type``; the message without a URL's password."""
    span.set_status(Status(StatusCode.ERROR, _USERINFO.sub("://", str(error))))
    span.set_attribute("error.type", type(error).__name__)
    status, which = getattr(error, "status_code", None), getattr(error, "which", None)
    if isinstance(status, int):
        span.set_attribute("http.response.status_code", status)
    if isinstance(which, str):
        span.set_attribute("ollama_stream_sync.timeout", which)


def _request_attributes(body: Mapping[str, Any]) -> dict[str, Any]:
    """The sampling settings the request gives, and its output type."""
    attrs: dict[str, Any] = {}
    options = body.get("options")
    if isinstance(options, Mapping):
        for key, name in _OPTIONS.items():
            value = options.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                attrs[name] = value
        stop = options.get("stop")
        if isinstance(stop, str) or (
            isinstance(stop, list) and all(isinstance(s, str) for s in stop)
        ):
            attrs["gen_ai.request.stop_sequences"] = (
                [stop] if isinstance(stop, str) else stop
            )
    if body.get("format"):
        attrs["gen_ai.output.type"] = "json"
    return attrs


def _response_attributes(data: Any, capture: bool) -> dict[str, Any]:
    """What the answer (or the progress) says about itself."""
    progress = getattr(data, "progress", data)
    if isinstance(progress, Progress):
        attrs: dict[str, Any] = {
            "ollama.progress.status": progress.status,
            "ollama.progress.completed": progress.completed,
        }
        if progress.total is not None:
            attrs["ollama.progress.total"] = progress.total
        return attrs
    attrs = {}
    if getattr(data, "model", None):
        attrs["gen_ai.response.model"] = data.model
    for field, name in (("prompt_eval_count", "input"), ("eval_count", "output")):
        if isinstance(getattr(data, field, None), int):
            attrs[f"gen_ai.usage.{name}_tokens"] = getattr(data, field)
    for field in _TIMINGS:
        if isinstance(getattr(data, field, None), int):
            attrs[f"ollama.{field}"] = getattr(data, field) / 1e9
    reason = _finish_reason(data)
    if reason:
        attrs["gen_ai.response.finish_reasons"] = [reason]
    if capture and data is not None and hasattr(data, "content"):
        message = {"role": "assistant", "parts": _parts(data.to_message())}
        if reason:
            message["finish_reason"] = reason
        attrs["gen_ai.output.messages"] = _json([message])
    return attrs


def _finish_reason(data: Any) -> str | None:
    """Ollama's ``done_reason``; "tool_call" when the model asked for tools."""
    if not getattr(data, "done", False):
        return None
    reason = getattr(data, "done_reason", None)
    if getattr(data, "tool_calls", ()) and reason in (None, "stop"):
        return "tool_call"
    return reason if isinstance(reason, str) else None


def _input_content(body: Mapping[str, Any]) -> dict[str, Any]:
    """The conventions' input message shapes (images left out: never blobs)."""
    attrs: dict[str, Any] = {}
    messages = body.get("messages")
    if isinstance(messages, list):
        parts = [
            {"role": m.get("role"), "parts": _parts(m)}
            for m in messages
            if isinstance(m, Mapping)
        ]
        attrs["gen_ai.input.messages"] = _json(parts)
    elif isinstance(body.get("prompt"), str):
        text = [{"type": "text", "content": body["prompt"]}]
        attrs["gen_ai.input.messages"] = _json([{"role": "user", "parts": text}])
    if isinstance(body.get("system"), str):
        text = [{"type": "text", "content": body["system"]}]
        attrs["gen_ai.system_instructions"] = _json(text)
    return attrs


def _parts(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One message's parts: reasoning, text or tool result, tool calls."""
    parts: list[dict[str, Any]] = []
    if message.get("thinking"):
        parts.append({"type": "reasoning", "content": message["thinking"]})
    if message.get("role") == "tool":
        parts.append(
            {
                "type": "tool_call_response",
                "id": message.get("tool_call_id"),
                "result": message.get("content"),
            }
        )
    elif message.get("content"):
        parts.append({"type": "text", "content": message["content"]})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        parts.append(
            {
                "type": "tool_call",
                "id": call.get("id"),
                "name": function.get("name"),
                "arguments": function.get("arguments"),
            }
        )
    return parts


def _json(value: Any) -> str:
    """Structured content as a JSON string (span attributes take no nesting yet)."""
    return json.dumps(value, ensure_ascii=False, default=str)
