"""Plays one script onto one response: NDJSON lines, or one JSON answer.

Line shapes follow Ollama's ``ChatResponse``, ``GenerateResponse`` and
``ProgressResponse``; one-object answers follow ``writeChatResponse``, the end of
``GenerateHandler`` and ``waitForStream`` in ``server/routes.go``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._http import Handler, Response
from ._steps import (
    Body,
    Bytes,
    Chunk,
    ContentEncoding,
    Delay,
    DoneLine,
    ErrorLine,
    ProgressLine,
    Raw,
    Stall,
    Status,
    Step,
)
from ._wire import FIXED_CREATED_AT, JSON_PLAIN, JSON_UTF8, go_json, omit_empty


class Renderer:
    """Renders the chunks of one chat or generate response, counting as it goes."""

    def __init__(self, chat: bool, model: str, prompt_tokens: int) -> None:
        self.chat, self.model, self.prompt_tokens = chat, model, prompt_tokens
        self.outputs = 0
        self.t0 = time.monotonic_ns()

    def chunk(self, step: Chunk | DoneLine) -> dict[str, Any]:
        """One streamed line for a ``Chunk`` or the final ``DoneLine``."""
        out: dict[str, Any] = {"model": self.model, "created_at": FIXED_CREATED_AT}
        fields: dict[str, Any] = {"thinking": step.thinking} if step.thinking else {}
        if step.tool_calls:
            fields["tool_calls"] = [dict(c) for c in step.tool_calls]
        if self.chat:
            out["message"] = {"role": "assistant", "content": step.content, **fields}
        else:
            out |= {"response": step.content, **fields}
        self.outputs += bool(step.content or step.thinking)
        out["done"] = isinstance(step, DoneLine)
        if isinstance(step, DoneLine):
            if step.done_reason is not None:
                out["done_reason"] = step.done_reason
            elapsed = max(1, time.monotonic_ns() - self.t0)
            out |= dict(
                step.counters
                if step.counters is not None
                else omit_empty(
                    {
                        "total_duration": elapsed,
                        "load_duration": 1000,
                        "prompt_eval_count": self.prompt_tokens,
                        "prompt_eval_duration": 2000,
                        "eval_count": self.outputs,
                        "eval_duration": elapsed,
                    }
                )
            )
            if not self.chat:
                out["context"] = [1, 2, 3]
        return out | dict(step.extra)

    def collapse(
        self, parts: Sequence[Mapping[str, Any]], tools_requested: bool
    ) -> dict[str, Any]:
        """The one object Ollama answers for ``"stream": false``.

        The last chunk's fields (``done``, ``done_reason``, counters, ``context``)
        with the text and thinking of every chunk joined. On chat, tool calls
        are joined across chunks when the request listed tools, as
        ``writeChatResponse`` does; otherwise (and on generate) only the last
        chunk's tool calls remain.
        """
        if parts:
            last = dict(parts[-1])
        else:  # Go's zero ChatResponse / GenerateResponse
            last = {"model": "", "created_at": "0001-01-01T00:00:00Z"}
            key, zero = (
                ("message", {"role": "", "content": ""})
                if self.chat
                else ("response", "")
            )
            last |= {key: zero, "done": False}
        if not self.chat:
            thinking = "".join(p.get("thinking", "") for p in parts)
            last.pop("thinking", None)
            last["response"] = "".join(p.get("response", "") for p in parts)
            return last | ({"thinking": thinking} if thinking else {})
        messages = [p.get("message", {}) for p in parts]
        base = last.get("message") or {"role": "", "content": ""}
        message: dict[str, Any] = {
            "role": base.get("role", ""),
            "content": "".join(m.get("content", "") for m in messages),
        }
        thinking = "".join(m.get("thinking", "") for m in messages)
        if thinking:
            message["thinking"] = thinking
        calls = base.get("tool_calls")
        if tools_requested:
            calls = [c for m in messages for c in m.get("tool_calls", ())] or calls
        if calls:
            message["tool_calls"] = calls
        skip = ("role", "content", "thinking", "tool_calls")
        last["message"] = message | {k: v for k, v in base.items() if k not in skip}
        return last


def progress_line(step: ProgressLine) -> dict[str, Any]:
    """One ``ProgressResponse``: ``status`` always, the rest only when set."""
    return {"status": step.status} | omit_empty(
        {"digest": step.digest, "total": step.total, "completed": step.completed}
    )


@dataclass
class Outcome:
    """What a played script did, for the server's model state."""

    status: int | None = None
    """The HTTP status answered; None when the connection ended first."""
    succeeded: bool = False
    """A ``ProgressLine("success")`` was sent (a pull or create finished)."""


class Player:
    """Plays one script for one request; ``play()`` returns what happened.

    ``inference``: chat or generate, whose chunks collapse into one answer for
    ``"stream": false``; ``answer`` makes the one object an endpoint such as
    embed answers after its script; ``on_output`` runs before the first chunk.
    """

    def __init__(
        self,
        handler: Handler,
        encoding: str | None,
        renderer: Renderer,
        *,
        stream: bool,
        inference: bool = False,
        tools_requested: bool = False,
        answer: Callable[[], Any] | None = None,
        on_output: Callable[[], None] | None = None,
    ) -> None:
        self.h, self.renderer, self.stream = handler, renderer, stream
        self.inference, self.tools_requested = inference, tools_requested
        self.answer, self._on_output = answer, on_output
        self.response = Response(handler, encoding)
        self.outcome = Outcome()

    def play(self, script: Iterable[Step]) -> Outcome:
        """Play ``script``; a client that goes away just ends it."""
        try:
            (self._stream if self.stream else self._single)(script)
        except OSError:
            self.h.close_connection = True  # the client went away
        self.outcome.status = self.response.status
        return self.outcome

    def _control(self, step: Step) -> bool:
        """Play a step that writes nothing; True when the response must end now."""
        if isinstance(step, ContentEncoding):
            encoding = step.encoding
            self.response.encoding = None if encoding == "identity" else encoding
            return False
        server = self.h.server
        if isinstance(step, Delay):
            ended = server.pause(step.seconds)
        elif isinstance(step, Stall):
            ended = server.stall(self.h.connection)
        else:  # Cut
            self.response.hang_up()
            return True
        if ended:
            self.h.close_connection = True
        return ended

    def _whole(self, step: Step) -> bool:
        """Answer a ``Status`` or ``Body`` step; False for any other step."""
        if isinstance(step, Status):
            body = step.body
            data = body if isinstance(body, bytes) else go_json(dict(body))
            self.response.whole(step.code, data, step.content_type, step.headers)
        elif isinstance(step, Body):
            self.response.verbatim(step)
        return isinstance(step, (Status, Body))

    def _stream(self, script: Iterable[Step]) -> None:
        response = self.response
        for step in script:
            if self._whole(step):
                return
            if isinstance(step, (Chunk, DoneLine)):
                if self._on_output is not None:
                    self._on_output()  # once: the model is answering
                    self._on_output = None
                response.chunk(go_json(self.renderer.chunk(step)) + b"\n")
            elif isinstance(step, ProgressLine):
                response.chunk(go_json(progress_line(step)) + b"\n")
                self.outcome.succeeded |= step.status == "success"
            elif isinstance(step, (Raw, Bytes)):
                response.chunk(step.data + b"\n" * isinstance(step, Raw))
            elif isinstance(step, ErrorLine):
                response.chunk(go_json({"error": step.message}) + b"\n")
                break
            elif self._control(step):
                return
        response.end()

    def _single(self, script: Iterable[Step]) -> None:
        """Collapse the script into one JSON answer, as for ``"stream": false``."""
        response = self.response
        progress = not self.inference and self.answer is None  # pull, push, create
        content_type = JSON_PLAIN if progress else JSON_UTF8
        parts: list[dict[str, Any]] = []
        latest: dict[str, Any] = {"status": ""}  # Go's zero ProgressResponse
        for step in script:
            if self._whole(step):
                return
            if isinstance(step, ErrorLine):
                response.json(500, {"error": step.message}, content_type)
                return
            if isinstance(step, (Chunk, DoneLine)) and self.inference:
                parts.append(self.renderer.chunk(step))
            elif isinstance(step, ProgressLine) and progress:
                latest = progress_line(step)
                self.outcome.succeeded |= step.status == "success"
            elif isinstance(step, (Chunk, DoneLine, ProgressLine, Raw, Bytes)):
                misuse = (
                    f"FakeOllama: {type(step).__name__} has no meaning in a "
                    "non-streaming answer here; use Body(...) for any body"
                )
                response.json(500, {"error": misuse}, content_type)
                return
            elif self._control(step):
                return
        if self.inference:
            response.json(200, self.renderer.collapse(parts, self.tools_requested))
        else:
            response.json(200, self.answer() if self.answer else latest, content_type)
