"""Plays one script onto one response: NDJSON lines, or one JSON answer.

Shapes follow Ollama's ``ChatResponse``, ``GenerateResponse`` and ``ProgressResponse``;
one-object answers follow ``writeChatResponse`` and ``waitForStream`` (routes.go).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from . import _scripts as steps
from ._http import Response
from ._wire import FIXED_CREATED_AT, JSON_PLAIN, JSON_UTF8, go_json, omit_empty


class Renderer:
    """Renders the chunks of one chat or generate response, counting as it goes."""

    def __init__(self, chat: bool, model: str, prompt_tokens: int) -> None:
        self.chat, self.model, self.prompt_tokens = chat, model, prompt_tokens
        self.outputs = 0
        self.t0 = time.monotonic_ns()

    def chunk(self, step: steps.Chunk | steps.DoneLine) -> dict[str, Any]:
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
        out["done"] = isinstance(step, steps.DoneLine)
        if isinstance(step, steps.DoneLine):
            if step.done_reason is not None:
                out["done_reason"] = step.done_reason
            took = max(1, time.monotonic_ns() - self.t0)
            counters = {"total_duration": took, "load_duration": 1000}
            counters |= {"prompt_eval_count": self.prompt_tokens}
            counters |= {"prompt_eval_duration": 2000, "eval_count": self.outputs}
            counters |= {"eval_duration": took}
            out |= omit_empty(counters) if step.counters is None else step.counters
            out |= {} if self.chat else {"context": [1, 2, 3]}
        return out | dict(step.extra)

    def collapse(
        self, parts: Sequence[Mapping[str, Any]], tools_requested: bool
    ) -> dict[str, Any]:
        """The one object Ollama answers for ``"stream": false``: the last chunk
        with all text and thinking joined (and tool calls, if tools were asked)."""
        zero: dict[str, Any] = {"model": "", "created_at": "0001-01-01T00:00:00Z"}
        last = dict(parts[-1]) if parts else zero | {"done": False}  # Go's zero
        if not self.chat:
            thinking = "".join(p.get("thinking", "") for p in parts)
            last.pop("thinking", None)
            last["response"] = "".join(p.get("response", "") for p in parts)
            return last | ({"thinking": thinking} if thinking else {})
        messages = [p.get("message", {}) for p in parts]
        base: dict[str, Any] = last.get("message") or {"role": "", "content": ""}
        message = {k: v for k, v in base.items() if k not in ("thinking", "tool_calls")}
        message["content"] = "".join(m.get("content", "") for m in messages)
        thinking = "".join(m.get("thinking", "") for m in messages)
        calls = base.get("tool_calls")
        if tools_requested:
            calls = [c for m in messages for c in m.get("tool_calls", ())] or calls
        message |= {"thinking": thinking} if thinking else {}
        last["message"] = message | ({"tool_calls": calls} if calls else {})
        return last


def progress_line(step: steps.ProgressLine) -> dict[str, Any]:
    """One ``ProgressResponse``: ``status`` always, the rest only when set."""
    return {"status": step.status} | omit_empty(
        {"digest": step.digest, "total": step.total, "completed": step.completed}
    )


class Player(Response):
    """A response that can play a script: NDJSON lines, or one JSON answer."""

    def play(
        self,
        script: Iterable[steps.Step],
        *,
        stream: bool,
        renderer: Renderer | None = None,
        tools_requested: bool = False,
        answer: Callable[[], Any] | None = None,
        on_output: Callable[[], None] | None = None,
    ) -> bool:
        """Play ``script``; True if a ``ProgressLine("success")`` went out.

        ``renderer``: chat or generate chunks; ``answer``: the object an endpoint
        such as embed answers last; ``on_output`` runs before the first chunk.
        """
        self.stream, self.inference = stream, renderer is not None
        self.renderer = renderer or Renderer(chat=False, model="", prompt_tokens=0)
        self.tools_requested, self.answer = tools_requested, answer
        self._on_output = on_output
        self.succeeded = False
        self.parts: list[dict[str, Any]] = []
        self.latest: dict[str, Any] = {"status": ""}  # Go's zero ProgressResponse
        progress = not self.inference and answer is None  # pull, push, create
        self.kind = JSON_PLAIN if progress else JSON_UTF8
        try:
            self._play(script)
        except OSError:
            self.h.close_connection = True  # the client went away
        return self.succeeded

    def _play(self, script: Iterable[steps.Step]) -> None:
        for step in script:
            if isinstance(step, steps.Status):
                body = step.body
                data = body if isinstance(body, bytes) else go_json(dict(body))
                self.whole(step.code, data, step.content_type, step.headers)
                return
            if isinstance(step, steps.Body):
                self.verbatim(step.status, step.headers, step.data)
                return
            if isinstance(step, steps.ErrorLine) and not self.stream:
                self.json(500, {"error": step.message}, self.kind)
                return
            if isinstance(step, steps.ErrorLine):
                self.chunk(go_json({"error": step.message}) + b"\n")
                break
            if isinstance(step, steps.OutputStep):
                if not self._output(step):
                    return
            elif self._control(step):
                return
        if self.stream:
            self.chunk(b"", last=True)
        elif self.inference:
            self.json(200, self.renderer.collapse(self.parts, self.tools_requested))
        else:
            answer = self.answer() if self.answer else self.latest
            self.json(200, answer, self.kind)

    def _output(self, step: steps.Step) -> bool:
        """Write or keep an output step; False when it has no meaning here."""
        if isinstance(step, steps.ProgressLine):
            self.succeeded |= step.status == "success"
        if isinstance(step, (steps.Chunk, steps.DoneLine)) and self.stream:
            if self._on_output is not None:
                self._on_output()  # once: the model is answering
                self._on_output = None
            self.chunk(go_json(self.renderer.chunk(step)) + b"\n")
        elif isinstance(step, steps.ProgressLine) and self.stream:
            self.chunk(go_json(progress_line(step)) + b"\n")
        elif isinstance(step, (steps.Raw, steps.Bytes)) and self.stream:
            newline = b"\n" if isinstance(step, steps.Raw) else b""
            self.chunk(step.data + newline)
        elif isinstance(step, (steps.Chunk, steps.DoneLine)) and self.inference:
            self.parts.append(self.renderer.chunk(step))
        elif isinstance(step, steps.ProgressLine) and self.kind == JSON_PLAIN:
            self.latest = progress_line(step)
        else:
            name = type(step).__name__
            misuse = f"FakeOllama: {name} has no meaning here without streaming"
            self.json(
                500, {"error": misuse + "; use Body(...) for any body"}, self.kind
            )
            return False
        return True

    def _control(self, step: steps.Step) -> bool:
        """Play a step that writes nothing; True when the response must end now."""
        if isinstance(step, steps.ContentEncoding):
            self.encoding = step.encoding
            return False
        if isinstance(step, steps.Cut):
            self.hang_up()
            return True
        server = self.h.server
        if isinstance(step, steps.Delay):
            ended = server.pause(step.seconds)
        else:
            ended = server.stall(self.h.connection)
        if ended:
            self.h.close_connection = True
        return ended
