"""The immutable result of one stream, partial or whole."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ChatResult:
    """What one chat or generate stream produced, as of one moment.

    Frozen, so it can cross threads freely. ``to_message()`` turns it into the
    assistant turn to append to the history for the next request.

    Example::

        result = client.chat("qwen3", messages)
        messages.append(result.to_message())
        print(result.content, result.tokens_per_second)
    """

    model: str = ""
    thinking: str = ""
    content: str = ""
    tool_calls: tuple[dict[str, Any], ...] = ()
    done: bool = False
    """True once the server's ``done: true`` line arrived."""
    done_reason: str | None = None
    cancelled: bool = False
    prompt_eval_count: int | None = None
    eval_count: int | None = None
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_duration: int | None = None
    eval_duration: int | None = None
    time_to_first_token: float | None = None
    """Seconds from sending the request to the first chunk with output."""
    tokens_per_second: float | None = None
    """Output tokens per second as seen by this client (see README)."""
    context: tuple[int, ...] | None = None
    """``/api/generate`` only: the token context the server returned."""
    logprobs: tuple[dict[str, Any], ...] = ()
    chunk_count: int = 0
    """How many NDJSON lines were processed."""
    remote_model: str | None = None
    """The upstream model that answered, for Ollama cloud models."""
    remote_host: str | None = None
    """The upstream Ollama host that answered, for Ollama cloud models."""
    prompt_truncated: bool = False
    """The server read far fewer prompt tokens than were sent (see README)."""
    parsed: Any = field(default=None, compare=False)
    """With ``format=``: the parsed answer (a model instance for a model class)."""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    """Fields of the final chunk this library does not model (forward compatible)."""

    @property
    def stopped_by_length(self) -> bool:
        """True when the answer was cut at ``num_predict`` (done_reason "length")."""
        return self.done_reason == "length"

    def to_message(self) -> dict[str, Any]:
        """Return the assistant message for the history.

        Returns:
            ``{"role": "assistant", "content": ...}`` plus ``thinking`` and
            ``tool_calls`` only when present, as Ollama expects them back.
        """
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.thinking:
            message["thinking"] = self.thinking
        if self.tool_calls:
            message["tool_calls"] = copy.deepcopy(list(self.tool_calls))
        return message
