"""Script steps and the builders that make realistic scripts out of them.

A script is a list of steps that one response plays in order. Output steps write
to the body; control steps (``Delay``, ``Stall``, ``Cut``) shape its timing and
end; whole-response steps (``Status``, ``Body``) answer instead of a stream and
must come before any output. Nothing here does I/O: the server plays the steps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._models import DEFAULT_LAYER_SIZES, digest_of, layer_digests

# -- output steps ------------------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    """One streamed chunk, rendered as a chat or generate line by the endpoint.

    Example::

        server.enqueue([Chunk(thinking="Hm."), Chunk(content="Hi"), Done()])

    ``extra`` keys are merged into the line as they are (say ``logprobs``).
    """

    content: str = ""
    thinking: str = ""
    tool_calls: Sequence[Mapping[str, Any]] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Done:
    """The final ``done: true`` chunk: counters, and optionally text and tool calls.

    With ``counters=None`` the server fills in plausible ones (``eval_count`` is
    the number of chunks that carried text). ``done_reason=None`` leaves the key
    out, as some servers do.

    Example::

        server.enqueue([Chunk(content="Cut sh"), Done(done_reason="length")])
    """

    done_reason: str | None = "stop"
    content: str = ""
    thinking: str = ""
    tool_calls: Sequence[Mapping[str, Any]] = ()
    counters: Mapping[str, int] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Progress:
    """One progress line of a pull, push or create, as Ollama's ``ProgressResponse``.

    Empty fields are left out, like Go's ``omitempty`` (so ``completed=0`` is not
    sent, as Ollama does before a download starts).

    Example::

        server.enqueue(
            [Progress("pulling manifest"), Progress("success")], endpoint="pull"
        )
    """

    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None


@dataclass(frozen=True)
class Raw:
    """Bytes written as one line as they are, newline added (say, not JSON).

    Example::

        server.enqueue([Chunk(content="ok"), Raw(b"<html>oops</html>"), Done()])
    """

    data: bytes


@dataclass(frozen=True)
class Bytes:
    """Bytes written into the body as one HTTP chunk, with no newline added.

    For partial lines (a line split over two chunks), blank lines, or bytes
    before the first line. Empty data is refused: an empty HTTP chunk would end
    the body.

    Example::

        server.enqueue([Bytes(b'{"model":"m","mess'), Bytes(b'age":...}\\n'), ...])
    """

    data: bytes

    def __post_init__(self) -> None:
        if not self.data:
            raise ValueError("Bytes needs data: an empty HTTP chunk ends the body")


@dataclass(frozen=True)
class ErrorLine:
    """Ollama's in-band ``{"error": ...}`` line; the server then ends the stream.

    It is always sent in-band after a 200, even as the first step. (Ollama
    itself answers an error that comes before any output with a status and a
    JSON body: script that with ``http_error(500, ...)``.) In a non-streaming
    answer (``"stream": false``) it becomes HTTP 500 ``{"error": ...}``, as
    Ollama does.

    Example::

        server.enqueue([Chunk(content="Half"), ErrorLine("runner crashed")])
    """

    message: str


# -- whole-response steps -------------------------------------------------------------


@dataclass(frozen=True)
class Status:
    """Answer with this status and body instead of a stream (before any output).

    A mapping body is sent as JSON. See also ``http_error()``.

    Example::

        server.enqueue([Status(503, {"error": "busy"}, headers={"Retry-After": "1"})])
    """

    code: int
    body: bytes | Mapping[str, Any] = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str = "application/json; charset=utf-8"


@dataclass(frozen=True)
class Body:
    """Answer this exact body with these headers and status (before any output).

    Nothing is added but ``Content-Length`` (unless ``headers`` has it, or
    ``Transfer-Encoding``: then the server closes the connection after the body,
    since the framing is yours) and the server's ``Server``/``Date`` lines. The
    server's ``content_encoding`` does not apply: encode ``data`` yourself.

    Example::

        bomb = gzip.compress(b"\\n" * 50_000_000)
        server.enqueue([Body(bomb, headers={"Content-Encoding": "gzip"})])
        server.enqueue([Body(b"<h1>Bad gateway</h1>", status=502,
                             headers={"Content-Type": "text/html"})])
    """

    data: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    status: int = 200


@dataclass(frozen=True)
class ContentEncoding:
    """Encode this response's body (``"gzip"``, ``"deflate"``, or ``None``: plain).

    Overrides ``FakeOllama(content_encoding=...)`` for one response; must come
    before any output. Each line is flushed with ``Z_SYNC_FLUSH``, so a client
    can decode every line as it arrives.

    Example::

        server.enqueue([ContentEncoding("gzip"), *reply("Squeezed.")])
    """

    encoding: str | None

    def __post_init__(self) -> None:
        if self.encoding not in (None, "identity", "gzip", "deflate"):
            raise ValueError(f"unknown content encoding {self.encoding!r}")


# -- control steps ------------------------------------------------------------------


@dataclass(frozen=True)
class Delay:
    """Pause this response for this many seconds (pacing, never synchronisation).

    ``FakeOllama.close()`` cuts a delay short.

    Example::

        server.enqueue([Delay(0.05), *reply("Slow.")])
    """

    seconds: float


@dataclass(frozen=True)
class Stall:
    """Go silent until the client disconnects or ``FakeOllama.release()`` is called.

    Before any output it stalls before the response headers (a model loading).
    A client hang-up is counted in ``disconnects_seen``; ``close()`` ends it.

    Example::

        server.enqueue([Chunk(content="x"), Stall()])
        ...
        assert server.wait_stalled()  # the server wrote "x" and went silent
    """


@dataclass(frozen=True)
class Cut:
    """Close the connection abruptly (mid-body, or before any answer).

    Example::

        server.enqueue([Chunk(content="Par"), Cut()])
    """


Step = (
    Chunk
    | Done
    | Progress
    | Raw
    | Bytes
    | ErrorLine
    | Status
    | Body
    | ContentEncoding
    | Delay
    | Stall
    | Cut
)
"""Any one script step."""

Script = list[Step]
"""The steps one response plays, in order."""

OUTPUT_STEPS = (Chunk, Done, Progress, Raw, Bytes, ErrorLine)
_BEFORE_OUTPUT = (Status, Body, ContentEncoding)


def check_script(script: Sequence[Step]) -> Script:
    """A copy of ``script``, or ValueError if a step can never play where it is."""
    steps = list(script)
    output_seen = False
    for step in steps:
        if not isinstance(step, (*OUTPUT_STEPS, *_BEFORE_OUTPUT, Delay, Stall, Cut)):
            raise TypeError(f"not a script step: {step!r}")
        if isinstance(step, OUTPUT_STEPS):
            output_seen = True
        elif isinstance(step, _BEFORE_OUTPUT) and output_seen:
            raise ValueError(f"{type(step).__name__} must come before any output")
    return steps


# -- chat and generate builders ------------------------------------------------


def _pieces(text: str) -> list[str]:
    """Split text into token-like pieces that keep their spaces."""
    out: list[str] = []
    for word in text.split(" "):
        out.append(word if not out else " " + word)
    return [p for p in out if p]


def tool_call(
    name: str,
    arguments: Mapping[str, Any] | None = None,
    *,
    index: int = 0,
    id: str = "",
) -> dict[str, Any]:
    """A tool call as Ollama streams it (``id`` and ``function.index`` included).

    Example::

        tool_call("get_weather", {"city": "Paris"}, id="call_ab12cd34")
    """
    return {
        "id": id or f"call_{name[:8]}{index:02d}",
        "function": {"index": index, "name": name, "arguments": dict(arguments or {})},
    }


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

    Example::

        server.enqueue(reply("Paris.", thinking="The capital of France."))
    """
    steps: Script = []
    think_parts, content_parts = _pieces(thinking), _pieces(content)
    if mixed_switch and think_parts and content_parts:
        last_think, first_content = think_parts.pop(), content_parts.pop(0)
        steps += [Chunk(thinking=t) for t in think_parts]
        steps.append(Chunk(thinking=last_think, content=first_content))
    else:
        steps += [Chunk(thinking=t) for t in think_parts]
    steps += [Chunk(content=c) for c in content_parts]
    if tool_calls and not tools_on_done:
        steps.append(Chunk(tool_calls=tuple(tool_calls)))
    steps.append(
        Done(
            done_reason=done_reason,
            tool_calls=tuple(tool_calls) if tools_on_done else (),
        )
    )
    return steps


def http_error(status: int, message: str, **headers: str) -> Script:
    """An error answered before any output, as Ollama does (``{"error": ...}``).

    Keyword arguments become headers, underscores turned into dashes.

    Example::

        server.enqueue(http_error(404, "model 'nope' not found"))
        server.enqueue(http_error(503, "busy", Retry_After="2"))
    """
    return [Status(status, {"error": message}, headers=headers)]


# -- pull, push and create builders --------------------------------------------


def _short(digest: str) -> str:
    """The 12 hex digits Ollama shows for a layer (``digest[7:19]`` in Go)."""
    return digest[7:19]


def _transfer(
    verb: str, digest: str, size: int, steps: int, cached: bool
) -> list[Progress]:
    """One layer's progress lines, as ``blobDownload.Wait`` ticks (or uploads)."""
    status = f"{verb} {_short(digest)}"
    if cached or steps <= 0:
        return [Progress(status, digest, size, size)]
    return [Progress(status, digest, size, size * i // steps) for i in range(steps + 1)]


def pull_script(
    model: str,
    layers: Sequence[int] = DEFAULT_LAYER_SIZES,
    *,
    steps: int = 3,
    cached: bool = False,
    replaced: bool = False,
) -> Script:
    """The progress lines of a successful ``/api/pull``, with Ollama's statuses.

    Layers download one after another, so a client that sums ``total`` over the
    digests it has seen watches the overall total grow. Digests are stable per
    model name.

    Args:
        model: the model pulled (it picks the digests).
        layers: each layer's size in bytes; the last is the config blob.
        steps: progress lines per layer after the first (``completed`` grows
            from 0, which Go leaves out, to the size).
        cached: every layer is already on disk: one line each, complete.
        replaced: the pull updated an existing model, so Ollama also prunes
            the old layers ("removing unused layers").

    Example::

        server.enqueue(pull_script("llama3.2", layers=[1000, 20]), endpoint="pull")
        for p in ollama.Client(server.url).pull("llama3.2", stream=True):
            print(p.status, p.completed, p.total)
    """
    script: Script = [Progress("pulling manifest")]
    for digest, size in zip(layer_digests(model, len(layers)), layers, strict=True):
        script += _transfer("pulling", digest, size, steps, cached)
    script += [Progress("verifying sha256 digest"), Progress("writing manifest")]
    if replaced:
        script.append(Progress("removing unused layers"))
    script.append(Progress("success"))
    return script


def pull_not_found_script() -> Script:
    """A pull of a name the registry does not have: Ollama's in-band error.

    Example::

        server.enqueue(pull_not_found_script(), endpoint="pull")
    """
    return [
        Progress("pulling manifest"),
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

    Args:
        model: the model pushed (it picks the digests, the same as a pull's).
        layers: each layer's size in bytes; the last is the config blob.
        steps: progress lines per layer after the first.
        cached: the registry has every layer already: one line each, complete.

    Example::

        server.enqueue(push_script("me/mario"), endpoint="push")
    """
    script: Script = [Progress("retrieving manifest")]
    for digest, size in zip(layer_digests(model, len(layers)), layers, strict=True):
        script += _transfer("pushing", digest, size, steps, cached)
    script += [Progress("pushing manifest"), Progress("success")]
    return script


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
        new: layers written for this model (system, template, parameters...),
            as a count or as digests.
        parsing_gguf: start with "parsing GGUF", as a create from ``files`` does.

    Example::

        server.enqueue(create_script("mario", new=1), endpoint="create")
        ollama.Client(server.url).create("mario", from_="llama3.2", system="Mario")
    """
    if isinstance(existing, int):
        existing = layer_digests(model, existing)
    if isinstance(new, int):
        new = [digest_of("new layer", model, i) for i in range(new)]
    script: Script = [Progress("parsing GGUF")] if parsing_gguf else []
    script += [Progress(f"using existing layer {d}") for d in existing]
    script += [Progress(f"creating new layer {d}") for d in new]
    script += [Progress("writing manifest"), Progress("success")]
    return script
