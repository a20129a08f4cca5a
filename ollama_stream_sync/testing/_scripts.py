"""Scripts: the steps one response plays in order, and builders of realistic ones.

``Status``, ``Body`` and ``ContentEncoding`` must come before output. Pure data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._models import DEFAULT_LAYER_SIZES, digest_of, layer_digests


@dataclass(frozen=True)
class Chunk:
    """One streamed chunk, a chat or generate line (``extra`` keys merged in).

    Example::

        server.enqueue([Chunk(thinking="Hm."), Chunk(content="Hi"), DoneLine()])
    """

    content: str = ""
    thinking: str = ""
    tool_calls: Sequence[Mapping[str, Any]] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DoneLine:
    """The final ``done: true`` chunk: counters, and optionally text and tool calls.

    ``counters=None``: the prompt's kept tokens and the chunks with text are
    counted; ``done_reason=None`` leaves the key out.

    Example: ``server.enqueue([Chunk(content="Cut sh"), DoneLine("length")])``.
    """

    done_reason: str | None = "stop"
    content: str = ""
    thinking: str = ""
    tool_calls: Sequence[Mapping[str, Any]] = ()
    counters: Mapping[str, int] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProgressLine:
    """One line of a pull, push or create, as Ollama's ``ProgressResponse``.

    Empty fields are left out as Go's ``omitempty`` does (``completed=0`` too).

    Example: ``server.enqueue([ProgressLine("pulling manifest")], endpoint="pull")``.
    """

    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None


Done = DoneLine  # the old names, kept for code that imports them
Progress = ProgressLine


@dataclass(frozen=True)
class Raw:
    """Bytes written as one line as they are, newline added (say, not JSON)."""

    data: bytes


@dataclass(frozen=True)
class Bytes:
    """Bytes written as one HTTP chunk, no newline added: split or blank lines."""

    data: bytes

    def __post_init__(self) -> None:
        if not self.data:
            raise ValueError("Bytes needs data: an empty HTTP chunk ends the body")


@dataclass(frozen=True)
class ErrorLine:
    """Ollama's in-band ``{"error": ...}`` line; the server then ends the stream.

    In-band after a 200 even first (``http_error`` answers with a status);
    without streaming it becomes HTTP 500 ``{"error": ...}``, as in Ollama.

    Example: ``server.enqueue([Chunk(content="Half"), ErrorLine("runner crashed")])``.
    """

    message: str


@dataclass(frozen=True)
class Status:
    """Answer with this status and body instead of a stream (a mapping is JSON)."""

    code: int
    body: bytes | Mapping[str, Any] = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str = "application/json; charset=utf-8"


@dataclass(frozen=True)
class Body:
    """Answer this exact body with these headers and status (encode it yourself).

    Only ``Content-Length`` is added, unless ``headers`` frame the body
    themselves (then the connection closes after it).

    Example: ``server.enqueue([Body(b"<h1>Bad gateway</h1>", html, status=502)])``.
    """

    data: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    status: int = 200


@dataclass(frozen=True)
class ContentEncoding:
    """Encode this response's body: ``"gzip"``, ``"deflate"`` or ``None`` (plain).

    Each line is sync-flushed, so a client can decode it as it arrives.
    """

    encoding: str | None

    def __post_init__(self) -> None:
        if self.encoding not in (None, "identity", "gzip", "deflate"):
            raise ValueError(f"unknown content encoding {self.encoding!r}")


@dataclass(frozen=True)
class Delay:
    """Pause this response (pacing, never synchronisation); ``close()`` ends it."""

    seconds: float


@dataclass(frozen=True)
class Stall:
    """Go silent until the client hangs up (counted), ``release()`` or ``close()``.

    Before any output it stalls before the headers (a model loading). Example:
    ``server.enqueue([Chunk(content="x"), Stall()]); assert server.wait_stalled()``.
    """


@dataclass(frozen=True)
class Cut:
    """Close the connection abruptly, mid-body or before any answer."""


OutputStep = Chunk | DoneLine | ProgressLine | Raw | Bytes | ErrorLine
FirstStep = Status | Body | ContentEncoding  # before any output
Step = OutputStep | FirstStep | Delay | Stall | Cut
"""Any one script step."""

Script = list[Step]
"""The steps one response plays, in order."""


def check_script(script: Sequence[Step]) -> Script:
    """A copy of ``script``, or ValueError if a step can never play where it is."""
    steps, output_seen = list(script), False
    for step in steps:
        if not isinstance(step, Step):
            raise TypeError(f"not a script step: {step!r}")
        output_seen |= isinstance(step, OutputStep)
        if isinstance(step, FirstStep) and output_seen:
            raise ValueError(f"{type(step).__name__} must come before any output")
    return steps


def tool_call(
    name: str,
    arguments: Mapping[str, Any] | None = None,
    *,
    index: int = 0,
    id: str = "",
) -> dict[str, Any]:
    """A tool call as Ollama streams it (``id`` and ``function.index`` included).

    Example: ``tool_call("get_weather", {"city": "Paris"}, id="call_ab12cd34")``.
    """
    return {
        "id": id or f"call_{name[:8]}{index:02d}",
        "function": {"index": index, "name": name, "arguments": dict(arguments or {})},
    }


def _pieces(text: str) -> list[str]:  # words that keep their spaces
    words = text.split(" ")
    return [p for p in [words[0], *(" " + w for w in words[1:])] if p]


def reply(
    content: str = "",
    *,
    thinking: str = "",
    tool_calls: Sequence[Mapping[str, Any]] = (),
    tools_on_done: bool = False,
    done_reason: str | None = "stop",
    mixed_switch: bool = False,
) -> Script:
    """A normal streamed answer: thinking pieces, content pieces, tool calls, done.

    Args:
        content: the answer, streamed word by word.
        thinking: the reasoning, streamed before the answer.
        tool_calls: whole tool calls (see ``tool_call``).
        tools_on_done: put the tool calls on the final chunk (as newer servers do).
        done_reason: the final ``done_reason``; ``None`` leaves the key out.
        mixed_switch: send the last thinking piece and the first content piece in
            one chunk, as Ollama does at the switch from reasoning to answer.

    Example: ``server.enqueue(reply("Paris.", thinking="The capital of France."))``.
    """
    think_parts, content_parts = _pieces(thinking), _pieces(content)
    steps: Script = [Chunk(thinking=t) for t in think_parts]
    if mixed_switch and think_parts and content_parts:
        steps[-1] = Chunk(thinking=think_parts[-1], content=content_parts.pop(0))
    steps += [Chunk(content=c) for c in content_parts]
    calls = tuple(tool_calls)
    if calls and not tools_on_done:
        steps.append(Chunk(tool_calls=calls))
    steps.append(DoneLine(done_reason, tool_calls=calls if tools_on_done else ()))
    return steps


def http_error(status: int, message: str, **headers: str) -> Script:
    """An error answered before any output, as Ollama does (``{"error": ...}``).

    Keyword arguments become headers, underscores turned into dashes:
    ``server.enqueue(http_error(503, "busy", Retry_After="2"))``.
    """
    return [Status(status, {"error": message}, headers=headers)]


def _lines(*statuses: str) -> Script:
    return [ProgressLine(status) for status in statuses]


def _layers(
    verb: str, model: str, layers: Sequence[int], steps: int, cached: bool
) -> Script:
    """Each layer's lines in turn, as ``blobDownload.Wait`` ticks."""
    script: Script = []
    steps = 0 if cached else steps  # cached: one complete line per layer
    for digest, size in zip(layer_digests(model, len(layers)), layers, strict=True):
        status = f"{verb} {digest[7:19]}"  # the 12 hex digits Ollama shows
        done = [size * i // steps for i in range(steps + 1)] if steps > 0 else [size]
        script += [ProgressLine(status, digest, size, d) for d in done]
    return script


def pull_script(
    model: str,
    layers: Sequence[int] = DEFAULT_LAYER_SIZES,
    *,
    steps: int = 3,
    cached: bool = False,
    replaced: bool = False,
) -> Script:
    """The progress lines of a successful ``/api/pull``, with Ollama's statuses.

    Layers download one after another; digests are stable per name.

    Args:
        model: the model pulled (it picks the digests).
        layers: each layer's size in bytes; the last is the config blob.
        steps: lines per layer after the first (``completed`` grows to the size).
        cached: every layer is already on disk: one complete line each.
        replaced: the pull updated a model, so Ollama prunes the old layers.

    Example: ``server.enqueue(pull_script("llama3.2", steps=9), endpoint="pull")``.
    """
    script = _lines("pulling manifest")
    script += _layers("pulling", model, layers, steps, cached)
    script += _lines("verifying sha256 digest", "writing manifest")
    return script + _lines(*["removing unused layers"] * replaced, "success")


def pull_not_found_script() -> Script:
    """A pull of a name the registry does not have: Ollama's in-band error."""
    return [
        *_lines("pulling manifest"),
        ErrorLine("pull model manifest: file does not exist"),
    ]


def push_script(
    model: str,
    layers: Sequence[int] = DEFAULT_LAYER_SIZES,
    *,
    steps: int = 3,
    cached: bool = False,
) -> Script:
    """The progress lines of a successful ``/api/push``, with Ollama's statuses.

    The arguments are ``pull_script``'s, except that ``cached`` means the
    registry has every layer already (one complete line each).
    """
    script = _lines("retrieving manifest")
    script += _layers("pushing", model, layers, steps, cached)
    return script + _lines("pushing manifest", "success")


def create_script(
    model: str,
    *,
    existing: int | Sequence[str] = 4,
    new: int | Sequence[str] = 1,
    parsing_gguf: bool = False,
) -> Script:
    """The progress lines of a successful ``/api/create``, with Ollama's statuses.

    Args:
        model: the model created (it picks the invented digests).
        existing: layers reused from the base model or uploaded blobs, as a
            count or as their ``sha256:...`` digests.
        new: layers written for this model (system, template...), likewise.
        parsing_gguf: start with "parsing GGUF", as a create from ``files`` does.

    Example: ``server.enqueue(create_script("mario"), endpoint="create")``.
    """
    if isinstance(existing, int):
        existing = layer_digests(model, existing)
    if isinstance(new, int):
        new = [digest_of("new layer", model, i) for i in range(new)]
    script = _lines(*["parsing GGUF"] * parsing_gguf)
    script += _lines(*(f"using existing layer {d}" for d in existing))
    script += _lines(*(f"creating new layer {d}" for d in new))
    return script + _lines("writing manifest", "success")
