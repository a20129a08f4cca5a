"""What Ollama's runner would compute for the fake: tokens, fitted prompts, vectors.

Deterministic and pure: tests can compute every number the server answers."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ._wire import JSON_UTF8

_TOKEN = re.compile(r"<\|[a-z_]+\|>|\w+|[^\w\s]")

PROMPT_TOO_LONG = (
    "the prompt is longer than the context length currently available to the "
    "model; shorten the prompt, adjust the context length in settings, or use a "
    "model with a longer context length"
)  # llm/llama_server.go's, when a prompt does not fit and may not shift


class Refused(Exception):
    """The server answers ``status`` with ``{"error": message}`` instead."""

    def __init__(self, status: int, message: str, kind: str = JSON_UTF8) -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


def count_tokens(text: str) -> int:
    """How many tokens ``FakeOllama`` counts in ``text``.

    One per word (letters, digits, underscores), one per punctuation mark or
    symbol, one per special tag such as ``<|user|>``: code costs more tokens per
    character than prose (``f(x) = y[0];`` is 10, ``The cat sat.`` is 4).
    """
    return len(_TOKEN.findall(text))


def chat_prompt(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> str:
    """The prompt ``FakeOllama`` renders a chat to, as a model's template would.

    ``<|tools|>`` and the tools' JSON (if any), then per message ``<|role|>``,
    its content and its tool calls' JSON, each on a line, then ``<|assistant|>``.
    ``count_tokens(chat_prompt(messages, tools))`` is a chat's
    ``prompt_eval_count`` when all its messages fit.
    """
    parts = [f"<|tools|>{json.dumps(list(tools))}\n"] if tools else []
    for message in messages:
        text = str(message.get("content") or "")
        if message.get("tool_calls"):
            text += json.dumps(message["tool_calls"])
        parts.append(f"<|{message.get('role')}|>{text}\n")
    return "".join(parts) + "<|assistant|>"


def fit_messages(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None,
    num_ctx: int,
    truncate: bool,
    image_tokens: int = 0,
) -> int:
    """Tokens of the prompt once old messages are dropped to fit ``num_ctx``.

    As server/prompt.go's ``chatPrompt``: with ``truncate``, drop whole messages
    from the front until it fits, always keeping system messages and the last.
    """

    def tokens(start: int) -> int:
        system = [m for m in messages[:start] if m.get("role") == "system"]
        kept = [*system, *messages[start:]]
        images = sum(len(m.get("images") or ()) for m in kept)
        return count_tokens(chat_prompt(kept, tools)) + image_tokens * images

    start = 0
    for start in range(len(messages) if truncate else 0):
        if tokens(start) <= num_ctx:
            break
    return tokens(start)


def fit_tokens(
    tokens: int, num_ctx: int, truncate: bool, shift: bool | None, num_keep: int
) -> int:
    """The prompt tokens the runner evaluates, or ``Refused``.

    A prompt fits below ``num_ctx`` (one slot left to generate). Otherwise
    llama-server refuses (``shift`` None: its own chat template, v0.30+; or no
    ``truncate``), Ollama refuses (``shift`` False), or it keeps ``num_keep``
    tokens and the tail (``completionPromptForRequest``).
    """
    if tokens < num_ctx:
        return tokens
    if shift is None or not truncate:
        raise Refused(400, llama_context_error(tokens, num_ctx))
    if not shift:
        raise Refused(400, PROMPT_TOO_LONG)
    keep = min(tokens if num_keep < 0 else num_keep, num_ctx - 1)
    return num_ctx - max((num_ctx - keep) // 2, 1)  # contextShiftPromptLimit


def llama_context_error(tokens: int, num_ctx: int) -> str:
    """llama-server's whole error body, which Ollama passes on as its message."""
    message = (
        f"request ({tokens} tokens) exceeds the available context size "
        f"({num_ctx} tokens), try increasing it"
    )
    error = {"code": 400, "message": message, "type": "exceed_context_size_error"}
    error |= {"n_prompt_tokens": tokens, "n_ctx": num_ctx}
    return json.dumps({"error": error}, separators=(",", ":"))


def fit_input(text: str, num_ctx: int, truncate: bool) -> tuple[str, int]:
    """One ``/api/embed`` input as embedded, and its tokens, or ``Refused``.

    The model adds a BOS and an EOS token: n tokens count n + 2, and at most
    ``num_ctx - 2`` fit; the rest is cut silently unless not ``truncate``.
    """
    spans = [m.end() for m in _TOKEN.finditer(text)]
    limit = num_ctx - 2 if spans else num_ctx
    if limit <= 0:
        raise Refused(400, "input after truncation exceeds maximum context length")
    if len(spans) > limit:
        if not truncate:
            raise Refused(400, "the input length exceeds the context length")
        return text[: spans[limit - 1]], limit + 2
    return text, len(spans) + 2


def embedding(text: str, size: int) -> list[float]:
    """The unit vector ``FakeOllama`` answers for ``text``: ``size`` values.

    Stable across runs; unrelated texts are nearly orthogonal. With
    ``dimensions=d`` the answer is ``embedding(text, d)`` (Ollama cuts and
    re-normalises); a cut input is embedded as what was kept.

    Example::

        vector = ollama.Client(server.url).embed("m", "Hi").embeddings[0]
        assert list(vector) == embedding("Hi", len(vector))
    """
    raw = [byte / 128 - 1 for byte in hashlib.shake_256(text.encode()).digest(size)]
    norm = max(math.sqrt(sum(v * v for v in raw)), 1e-12)
    return [v / norm for v in raw]
