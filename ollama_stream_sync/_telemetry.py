"""OpenTelemetry traces and metrics of every call, through the observer seam.

Imported only with ``opentelemetry-api`` installed, and through the API alone (the
application configures the SDK). What is recorded, under the GenAI conventions of
semantic-conventions v1.41.0, is in docs/guides/telemetry.md.
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
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from ._events import Content, Phase, Reset, Retry, Thinking, ToolCall
from ._observe import CallInfo, ToolRun
from ._result import Progress

log = logging.getLogger("ollama_stream_sync")

SCHEMA_URL = "https://opentelemetry.io/schemas/1.41.0"
SCOPE = "ollama_stream_sync"
"""The tracer's and the meter's name."""
CAPTURE_CONTENT = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"

_SECONDS = [0.01 * 2**i for i in range(14)]  # 0.01, 0.02 ... 81.92
_TOKENS = [float(4**i) for i in range(14)]  # 1, 4, 16 ... 67108864
_HISTOGRAMS = (  # name, unit, description, the conventions' bucket advice
    ("gen_ai.client.operation.duration", "s", "GenAI operation duration.", _SECONDS),
    ("gen_ai.client.token.usage", "{token}", "Tokens used.", _TOKENS),
    ("gen_ai.client.operation.time_to_first_chunk", "s", "To 1st chunk.", _SECONDS),
    ("gen_ai.client.operation.time_per_output_chunk", "s", "Per chunk.", _SECONDS),
)
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
}
_USAGE = (("prompt_eval_count", "input"), ("eval_count", "output"))
_TIMINGS = ("load_duration", "prompt_eval_duration", "eval_duration")
"""Ollama's own timings (nanoseconds), recorded as ``ollama.*`` in seconds."""
_OUTPUT = (Thinking, Content, ToolCall)
_USERINFO = re.compile(r"://[^/\s@]*@")


def _safe(method: Callable[..., None]) -> Callable[..., None]:
    """Telemetry must never break a stream: a bug here is logged, not raised."""

    @functools.wraps(method)
    def safe(*args: Any) -> None:
        try:
            method(*args)
        except Exception:
            log.debug("telemetry failed in %s", method.__name__, exc_info=True)

    return safe


class _Meters(NamedTuple):
    duration: metrics.Histogram
    tokens: metrics.Histogram
    first_chunk: metrics.Histogram
    per_chunk: metrics.Histogram

    @classmethod
    def of(cls, meter: metrics.Meter) -> _Meters:
        return cls(
            *(
                meter.create_histogram(n, u, d, explicit_bucket_boundaries_advisory=b)
                for n, u, d, b in _HISTOGRAMS
            )
        )


class Telemetry:
    """The ``ObserverFactory`` that traces and measures each call, through the global
    providers looked up at each call (an SDK configured later still takes effect)
    unless it is given its own (tests)."""

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
        # used, and the API's proxy meter provider (which keeps every meter it
        # hands out) is asked once. Replaced whole: a race builds one twice.
        self._tracer: tuple[object, trace.Tracer] | None = None
        self._meters: tuple[object, _Meters] | None = None

    def __call__(self, call: CallInfo) -> _Call | _PassOn | None:
        try:
            tp = self.tracer_provider or trace.get_tracer_provider()
            mp = self.meter_provider or metrics.get_meter_provider()
            if _from_api(tp) and _from_api(mp):  # no SDK: nothing would record
                return _PassOn(otel_context.get_current())
            if self._tracer is None or self._tracer[0] is not tp:
                self._tracer = (tp, tp.get_tracer(SCOPE, self._version, SCHEMA_URL))
            if self._meters is None or self._meters[0] is not mp:
                meter = mp.get_meter(SCOPE, self._version, SCHEMA_URL)
                self._meters = (mp, _Meters.of(meter))
            capture = os.environ.get(CAPTURE_CONTENT, "").strip().lower() == "true"
            # The caller's context, taken on the caller's thread: the parent.
            parent = otel_context.get_current()
            return _Call(self._tracer[1], self._meters[1], call, parent, capture)
        except Exception:
            log.debug("telemetry failed for %r", call.operation, exc_info=True)
            return None


def _from_api(provider: object) -> bool:
    """Whether ``provider`` is the API's own (its proxy until an SDK is set, or a
    no-op), whose spans and instruments record nothing. The API offers no public
    test for the meter provider's proxy: where the class lives is the sign
    (``test_telemetry`` pins it on the installed version)."""
    module = type(provider).__module__
    return module.startswith(("opentelemetry.trace", "opentelemetry.metrics"))


class _PassOn:
    """The observer while no SDK is configured: it only passes the caller's trace
    context on to Ollama (a gateway may join it), at almost no cost."""

    def __init__(self, parent: otel_context.Context) -> None:
        self._parent = parent

    def attempt(self, number: int, url: str) -> Mapping[str, str]:
        headers: dict[str, str] = {}
        try:
            propagate.inject(headers, self._parent)
        except Exception:
            log.debug("telemetry failed on attempt %d", number, exc_info=True)
        return headers

    def _ignore(self, *_: Any) -> None:
        """Nothing records."""

    request = event = request_end = tool = end = _ignore


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
        self._op = _GEN_AI_OPERATION.get(call.operation)
        if self._op == "text_completion" and any(call.body.get(k) for k in _IMAGE_KEYS):
            self._op = "generate_content"
        # Guards _span: a phase may come from a probe's thread while it closes.
        self._lock = threading.Lock()
        self._span: Span | None = None
        self._start_ns, self._began = time.time_ns(), time.perf_counter()
        self._attrs: dict[str, Any] = {}
        """The metrics' attributes (replaced whole, never changed in place)."""
        self._url: str | None = None
        self._last: float | None = None
        self._ended: tuple[Any, BaseException | None, int, float] | None = None
        self._status = ""

    @_safe
    def request(self, body: Mapping[str, Any] | None) -> None:
        self._close(None)
        info, op = self._info, self._op
        body = info.body if body is None else body
        base: dict[str, Any] = {"gen_ai.provider.name": "ollama"}
        if info.model:
            base["gen_ai.request.model"] = info.model
        if op is not None:
            base["gen_ai.operation.name"] = op
        attrs = base | (
            {"ollama.operation": info.operation}
            if op is None
            else {"gen_ai.request.stream": True, **_request_attributes(body)}
        )
        if info.extra.get("conversation"):
            attrs["gen_ai.conversation.id"] = str(info.extra["conversation"])
        if self._start_ns == 0:  # a later round starts now
            self._start_ns, self._began = time.time_ns(), time.perf_counter()
        name = f"{info.operation} {info.model}" if info.model else info.operation
        span = self._tracer.start_span(
            name, self._parent, SpanKind.CLIENT, attrs, start_time=self._start_ns
        )
        if self._capture and op is not None and span.is_recording():
            span.set_attributes(_input_content(body))
        self._attrs, self._url, self._last, self._ended = base, None, None, None
        with self._lock:
            self._span = span

    def attempt(self, number: int, url: str) -> Mapping[str, str]:
        headers: dict[str, str] = {}
        span = self._span
        try:
            if span is not None and url != self._url:
                where = _server(url)
                if self._url is not None:
                    span.add_event(
                        "ollama_stream_sync.host_switch",
                        {"from": _hostport(_server(self._url)), "to": _hostport(where)},
                    )
                self._url, self._attrs = url, self._attrs | where
                span.set_attributes(where)
            if span is not None:
                propagate.inject(headers, trace.set_span_in_context(span, self._parent))
        except Exception:
            log.debug("telemetry failed on attempt %d", number, exc_info=True)
        return headers

    def event(self, event: Any) -> None:
        try:
            kind = type(event)
            if kind in _OUTPUT:  # the per-chunk path: keep it short
                now = time.perf_counter()
                last, self._last = self._last, now
                if last is None:
                    self._first_chunk(now - self._began)
                elif self._op is not None:
                    self._m.per_chunk.record(now - last, self._attrs)
                if kind is not ToolCall:
                    return
            with self._lock:
                if self._span is not None and self._span.is_recording():
                    self._span_event(self._span, event)
        except Exception:
            log.debug("telemetry failed on %r", type(event), exc_info=True)

    @_safe
    def request_end(self, result: Any, error: BaseException | None) -> None:
        self._ended = (result, error, time.time_ns(), time.perf_counter())

    @_safe
    def tool(self, run: ToolRun) -> None:
        attrs = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.type": "function",
        }
        attrs |= _tool_attributes(run.call, self._capture)
        if self._capture:
            attrs["gen_ai.tool.call.result"] = run.result
        start = int(run.start * 1e9)
        name = f"execute_tool {attrs['gen_ai.tool.name']}"
        span = self._tracer.start_span(
            name, self._parent, SpanKind.INTERNAL, attrs, start_time=start
        )
        if run.error is not None:
            _fail(span, run.error)
        span.end(start + int(run.seconds * 1e9))

    @_safe
    def end(self, result: Any, error: BaseException | None) -> None:
        self._close((result, error))

    def _first_chunk(self, seconds: float) -> None:
        if self._op is not None:
            self._m.first_chunk.record(seconds, self._attrs)
        with self._lock:
            if self._span is not None and self._span.is_recording():
                self._span.set_attribute("gen_ai.response.time_to_first_chunk", seconds)
                self._span.add_event("ollama_stream_sync.first_token")

    def _span_event(self, span: Span, event: Any) -> None:
        kind = type(event)
        if kind is Phase:
            span.add_event("ollama_stream_sync.phase", {"phase": event.name})
        elif kind is ToolCall:
            attrs = _tool_attributes(event.call, self._capture)
            span.add_event("ollama_stream_sync.tool_call", attrs)
        elif kind is Retry or kind is Reset:
            attrs = {"attempt": event.attempt, "error.type": type(event.error).__name__}
            if kind is Retry:
                attrs["delay"] = event.delay
            span.add_event(f"ollama_stream_sync.{kind.__name__.lower()}", attrs)
        elif kind is Progress and event.status != self._status:
            self._status = event.status
            attrs = {"stage": event.stage, "status": event.status}
            span.add_event("ollama_stream_sync.progress", attrs)

    def _close(self, final: tuple[Any, BaseException | None] | None) -> None:
        """End the open request's span, with the call's outcome when it ended."""
        if self._span is None and final is not None:
            self.request(None)  # the call failed before any request: still a span
        with self._lock:
            span, self._span = self._span, None
        if span is None:
            return
        result, error, end_ns, end_at = self._ended or (None, None, None, None)
        if final is not None:
            result, error = final[0] or result, final[1] or error
        data = result if result is not None else getattr(error, "partial", None)
        attrs = self._attrs
        if span.is_recording():
            span.set_attributes(_response_attributes(data, self._capture))
        if error is not None:
            _fail(span, error)
            attrs = attrs | {"error.type": type(error).__name__}
        elif getattr(data, "cancelled", False):
            span.set_attribute("ollama_stream_sync.cancelled", True)
        if end_ns is None or end_at is None:
            end_ns, end_at = time.time_ns(), time.perf_counter()
        if self._op is not None:
            self._m.duration.record(end_at - self._began, attrs)
            model = getattr(data, "model", None)
            usage = self._attrs | ({"gen_ai.response.model": model} if model else {})
            for field, kind in _USAGE:
                count = getattr(data, field, None)
                if isinstance(count, int):
                    self._m.tokens.record(count, usage | {"gen_ai.token.type": kind})
        self._start_ns = 0
        span.end(end_ns)


def _server(url: str) -> dict[str, Any]:
    """``server.address`` and ``server.port`` of a host URL (no user, no password)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return {"server.address": parts.hostname or "", "server.port": port}


def _hostport(server: Mapping[str, Any]) -> str:
    return f"{server['server.address']}:{server['server.port']}"


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
    options = body.get("options")
    options = options if isinstance(options, Mapping) else {}
    attrs: dict[str, Any] = {
        name: options[key]
        for key, name in _OPTIONS.items()
        if type(options.get(key)) in (int, float)
    }
    stop = options.get("stop")
    stop = [stop] if isinstance(stop, str) else stop
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        attrs["gen_ai.request.stop_sequences"] = stop
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
    for name, kind in _USAGE:
        if isinstance(count := getattr(data, name, None), int):
            attrs[f"gen_ai.usage.{kind}_tokens"] = count
    for name in _TIMINGS:
        if isinstance(nanoseconds := getattr(data, name, None), int):
            attrs[f"ollama.{name}"] = nanoseconds / 1e9
    if getattr(data, "model", None):
        attrs["gen_ai.response.model"] = data.model
    reason = _finish_reason(data)
    if reason:
        attrs["gen_ai.response.finish_reasons"] = [reason]
    if capture and hasattr(data, "to_message"):
        message = {"role": "assistant", "parts": _parts(data.to_message())}
        attrs["gen_ai.output.messages"] = _json([message | {"finish_reason": reason}])
    return attrs


def _finish_reason(data: Any) -> str | None:
    """Ollama's ``done_reason``; "tool_call" when the model asked for tools."""
    reason = getattr(data, "done_reason", None) if getattr(data, "done", 0) else None
    if getattr(data, "tool_calls", ()) and reason in (None, "stop"):
        return "tool_call"
    return reason if isinstance(reason, str) else None


def _tool_attributes(call: Mapping[str, Any], capture: bool) -> dict[str, Any]:
    """A tool call's name and id, and its arguments when content is captured."""
    function = call.get("function") or {}
    attrs = {"gen_ai.tool.name": str(function.get("name", ""))}
    if call.get("id"):
        attrs["gen_ai.tool.call.id"] = str(call["id"])
    if capture:
        attrs["gen_ai.tool.call.arguments"] = _json(function.get("arguments"))
    return attrs


def _input_content(body: Mapping[str, Any]) -> dict[str, Any]:
    """The conventions' input message shapes (images left out: never blobs)."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        prompt = body.get("prompt")
        messages = [{"role": "user", "content": prompt}] if prompt else []
    parts = [{"role": m.get("role"), "parts": _parts(m)} for m in messages]
    attrs = {"gen_ai.input.messages": _json(parts)}
    if isinstance(body.get("system"), str):
        system = [{"type": "text", "content": body["system"]}]
        attrs["gen_ai.system_instructions"] = _json(system)
    return attrs


def _parts(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One message's parts: reasoning, text or tool result, tool calls."""
    parts: list[dict[str, Any]] = []
    if message.get("thinking"):
        parts.append({"type": "reasoning", "content": message["thinking"]})
    content = message.get("content")
    if message.get("role") == "tool":
        id_ = message.get("tool_call_id")
        parts.append({"type": "tool_call_response", "id": id_, "result": content})
    elif content:
        parts.append({"type": "text", "content": content})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        parts.append(
            {"type": "tool_call", "id": call.get("id")}
            | {"name": function.get("name"), "arguments": function.get("arguments")}
        )
    return parts


def _json(value: Any) -> str:
    """Structured content as a JSON string (span attributes take no nesting yet)."""
    return json.dumps(value, ensure_ascii=False, default=str)
