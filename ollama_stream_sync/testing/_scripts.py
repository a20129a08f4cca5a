"""Builders of realistic scripts: answers, errors, and pull/push/create progress."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ._models import DEFAULT_LAYER_SIZES, digest_of, layer_digests
from ._steps import Chunk, DoneLine, ErrorLine, ProgressLine, Script, Status


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


def _pieces(text: str) -> list[str]:
    """Word-sized pieces that keep their spaces."""
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


def _transfer(
    verb: str, digest: str, size: int, steps: int, cached: bool
) -> list[ProgressLine]:
    """One layer's lines, as ``blobDownload.Wait`` ticks (or an upload)."""
    status = f"{verb} {digest[7:19]}"  # the 12 hex digits Ollama shows
    if cached or steps <= 0:
        return [ProgressLine(status, digest, size, size)]
    ticks = range(steps + 1)
    return [ProgressLine(status, digest, size, size * i // steps) for i in ticks]


def pull_script(
    model: str,
    layers: Sequence[int] = DEFAULT_LAYER_SIZES,
    *,
    steps: int = 3,
    cached: bool = False,
    replaced: bool = False,
) -> Script:
    """The progress lines of a successful ``/api/pull``, with Ollama's statuses.

    Layers download one after another (a client summing ``total`` over the
    digests it has seen watches it grow); digests are stable per name.

    Args:
        model: the model pulled (it picks the digests).
        layers: each layer's size in bytes; the last is the config blob.
        steps: lines per layer after the first (``completed`` grows to the size).
        cached: every layer is already on disk: one complete line each.
        replaced: the pull updated a model, so Ollama prunes the old layers.

    Example: ``server.enqueue(pull_script("llama3.2", steps=9), endpoint="pull")``.
    """
    script: Script = [ProgressLine("pulling manifest")]
    for digest, size in zip(layer_digests(model, len(layers)), layers, strict=True):
        script += _transfer("pulling", digest, size, steps, cached)
    script += [
        ProgressLine("verifying sha256 digest"),
        ProgressLine("writing manifest"),
    ]
    if replaced:
        script.append(ProgressLine("removing unused layers"))
    return [*script, ProgressLine("success")]


def pull_not_found_script() -> Script:
    """A pull of a name the registry does not have: Ollama's in-band error."""
    return [
        ProgressLine("pulling manifest"),
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
        steps: lines per layer after the first.
        cached: the registry has every layer already: one complete line each.
    """
    script: Script = [ProgressLine("retrieving manifest")]
    for digest, size in zip(layer_digests(model, len(layers)), layers, strict=True):
        script += _transfer("pushing", digest, size, steps, cached)
    return [*script, ProgressLine("pushing manifest"), ProgressLine("success")]


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
    script: Script = [ProgressLine("parsing GGUF")] if parsing_gguf else []
    script += [ProgressLine(f"using existing layer {d}") for d in existing]
    script += [ProgressLine(f"creating new layer {d}") for d in new]
    return [*script, ProgressLine("writing manifest"), ProgressLine("success")]
