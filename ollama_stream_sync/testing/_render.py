"""What one response's lines and answers look like; pure, no I/O.

Shapes follow Ollama's ``ChatResponse``, ``GenerateResponse`` and
``ProgressResponse``, and its non-streaming handlers (``writeChatResponse`` and
the end of ``GenerateHandler`` in ``server/routes.go``; ``waitForStream`` for
pull, push and create).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from ._steps import Chunk, Done, Progress
from ._wire import FIXED_CREATED_AT, omit_empty

CHAT = "/api/chat"
GENERATE = "/api/generate"


class Renderer:
    """Renders the chunks of one chat or generate response, counting as it goes."""

    def __init__(self, path: str, model: str) -> None:
        self.chat = path == CHAT
        self.model = model
        self.outputs = 0
        self.t0 = time.monotonic_ns()

    def chunk(self, step: Chunk | Done) -> dict[str, Any]:
        """One streamed line for a ``Chunk`` or the final ``Done``."""
        out: dict[str, Any] = {"model": self.model, "created_at": FIXED_CREATED_AT}
        if self.chat:
            message: dict[str, Any] = {"role": "assistant", "content": step.content}
            if step.thinking:
                message["thinking"] = step.thinking
            if step.tool_calls:
                message["tool_calls"] = [dict(c) for c in step.tool_calls]
            out["message"] = message
        else:
            out["response"] = step.content
            if step.thinking:
                out["thinking"] = step.thinking
            if step.tool_calls:
                out["tool_calls"] = [dict(c) for c in step.tool_calls]
        if step.content or step.thinking:
            self.outputs += 1
        out["done"] = isinstance(step, Done)
        if isinstance(step, Done):
            if step.done_reason is not None:
                out["done_reason"] = step.done_reason
            elapsed = max(1, time.monotonic_ns() - self.t0)
            out |= dict(
                step.counters
                if step.counters is not None
                else {
                    "total_duration": elapsed,
                    "load_duration": 1000,
                    "prompt_eval_count": 12,
                    "prompt_eval_duration": 2000,
                    "eval_count": self.outputs,
                    "eval_duration": elapsed,
                }
            )
            if not self.chat:
                out["context"] = [1, 2, 3]
        out |= dict(step.extra)
        return out

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
        if not parts:  # Go's zero ChatResponse / GenerateResponse
            last: dict[str, Any] = {"model": "", "created_at": "0001-01-01T00:00:00Z"}
            if self.chat:
                last["message"] = {"role": "", "content": ""}
            else:
                last["response"] = ""
            last["done"] = False
        else:
            last = dict(parts[-1])
        if self.chat:
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
            message |= {k: v for k, v in base.items() if k not in skip}
            last["message"] = message
        else:
            last["response"] = "".join(p.get("response", "") for p in parts)
            thinking = "".join(p.get("thinking", "") for p in parts)
            last.pop("thinking", None)
            if thinking:
                last["thinking"] = thinking
        return last


def progress_line(step: Progress) -> dict[str, Any]:
    """One ``ProgressResponse``: ``status`` always, the rest only when set."""
    return {"status": step.status} | omit_empty(
        {"digest": step.digest, "total": step.total, "completed": step.completed}
    )


def load_answer(path: str, model: str, reason: str) -> dict[str, Any]:
    """Ollama's one-object answer to a request that only loads or unloads a model."""
    out: dict[str, Any] = {"model": model, "created_at": FIXED_CREATED_AT}
    if path == CHAT:
        out["message"] = {"role": "assistant", "content": ""}
    else:
        out["response"] = ""
    return out | {"done": True, "done_reason": reason}
