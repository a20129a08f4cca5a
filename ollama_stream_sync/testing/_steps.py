"""Script steps: what one response plays, in order. Pure data, no I/O.

Output steps write to the body; ``Delay``, ``Stall`` and ``Cut`` shape its timing
and end; ``Status``, ``Body`` and ``ContentEncoding`` must come before output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Chunk:
    """One streamed chunk, rendered as a chat or generate line by the endpoint.

    ``extra`` keys are merged into the line as they are (say ``logprobs``).

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

    With ``counters=None`` the server fills them in: ``prompt_eval_count`` is
    the prompt's tokens as the server kept them, ``eval_count`` the chunks that
    carried text. ``done_reason=None`` leaves the key out. Also named ``Done``.

    Example::

        server.enqueue([Chunk(content="Cut sh"), DoneLine(done_reason="length")])
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

    Empty fields are left out as Go's ``omitempty`` does (so ``completed=0`` is
    not sent, as before a download starts). Also named ``Progress``.

    Example: ``server.enqueue([ProgressLine("pulling manifest")], endpoint="pull")``.
    """

    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None


Done = DoneLine  # the old name, kept for code that imports it
Progress = ProgressLine  # the old name, kept for code that imports it


@dataclass(frozen=True)
class Raw:
    """Bytes written as one line as they are, newline added (say, not JSON).

    Example: ``server.enqueue([Chunk(content="ok"), Raw(b"<html>"), DoneLine()])``.
    """

    data: bytes


@dataclass(frozen=True)
class Bytes:
    """Bytes written as one HTTP chunk, no newline added: split or blank lines.

    Example: ``server.enqueue([Bytes(b'{"model":"m","mess'), Bytes(b'age"...')])``.
    """

    data: bytes

    def __post_init__(self) -> None:
        if not self.data:
            raise ValueError("Bytes needs data: an empty HTTP chunk ends the body")


@dataclass(frozen=True)
class ErrorLine:
    """Ollama's in-band ``{"error": ...}`` line; the server then ends the stream.

    Always in-band after a 200, even first (Ollama answers an error before any
    output with a status: script that with ``http_error``). Without streaming
    it becomes HTTP 500 ``{"error": ...}``, as in Ollama.

    Example: ``server.enqueue([Chunk(content="Half"), ErrorLine("runner crashed")])``.
    """

    message: str


@dataclass(frozen=True)
class Status:
    """Answer with this status and body instead of a stream (a mapping is JSON).

    Example: ``server.enqueue([Status(503, {"error": "busy"}, {"Retry-After": "1"})])``.
    """

    code: int
    body: bytes | Mapping[str, Any] = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str = "application/json; charset=utf-8"


@dataclass(frozen=True)
class Body:
    """Answer this exact body with these headers and status.

    Only ``Content-Length`` is added, unless ``headers`` frame the body
    themselves (then the connection closes after it). ``content_encoding``
    does not apply: encode ``data`` yourself.

    Example: ``server.enqueue([Body(b"<h1>Bad gateway</h1>", html, status=502)])``.
    """

    data: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    status: int = 200


@dataclass(frozen=True)
class ContentEncoding:
    """Encode this response's body: ``"gzip"``, ``"deflate"`` or ``None`` (plain).

    Each line is sync-flushed, so a client can decode it as it arrives.

    Example: ``server.enqueue([ContentEncoding("gzip"), *reply("Squeezed.")])``.
    """

    encoding: str | None

    def __post_init__(self) -> None:
        if self.encoding not in (None, "identity", "gzip", "deflate"):
            raise ValueError(f"unknown content encoding {self.encoding!r}")


@dataclass(frozen=True)
class Delay:
    """Pause this response (pacing, never synchronisation); ``close()`` ends it.

    Example: ``server.enqueue([Delay(0.05), *reply("Slow.")])``.
    """

    seconds: float


@dataclass(frozen=True)
class Stall:
    """Go silent until the client hangs up (counted), ``release()`` or ``close()``.

    Before any output it stalls before the response headers (a model loading).

    Example::

        server.enqueue([Chunk(content="x"), Stall()])
        assert server.wait_stalled()  # the server wrote "x" and went silent
    """


@dataclass(frozen=True)
class Cut:
    """Close the connection abruptly, mid-body or before any answer.

    Example: ``server.enqueue([Chunk(content="Par"), Cut()])``.
    """


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
