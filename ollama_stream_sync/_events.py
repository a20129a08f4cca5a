"""The typed events of a stream, the one vocabulary from the decoder to your code.

The decoder makes ``Thinking``, ``Content`` and ``ToolCall``; the delivery adds the
rest. Each maps to one callback (``Content`` to ``on_content``...), and a
``ChatStream`` yields the events themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ._errors import StreamError
from ._result import ChatResult

PhaseName = Literal[
    "queued",
    "connecting",
    "waiting",
    "loading",
    "thinking",
    "answering",
    "tool_call",
    "retrying",
    "done",
    "cancelled",
    "failed",
]
"""Where a stream is: see the README's "Phases"."""


@dataclass(frozen=True, slots=True)
class Thinking:
    """A delta of the model's reasoning."""

    text: str


@dataclass(frozen=True, slots=True)
class Content:
    """A delta of the answer."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One whole tool call: ``call["function"]["name"]``, ``["arguments"]``, ``id``."""

    call: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What a ``Conversation`` tool returned for ``call`` (sent back to the model)."""

    call: dict[str, Any]
    result: str


@dataclass(frozen=True, slots=True)
class Partial:
    """With ``format=``: the answer parsed so far (dicts and lists as they grow)."""

    value: Any


@dataclass(frozen=True, slots=True)
class Retry:
    """An attempt failed and another follows after ``delay`` seconds."""

    attempt: int
    error: StreamError
    delay: float


@dataclass(frozen=True, slots=True)
class Reset:
    """Output already shown is void: a retry after output starts the answer over."""

    attempt: int
    error: StreamError


@dataclass(frozen=True, slots=True)
class Phase:
    """The stream moved to phase ``name``, ``elapsed`` seconds after it started."""

    name: PhaseName
    elapsed: float


@dataclass(frozen=True, slots=True)
class Trim:
    """A ``Conversation`` dropped its oldest turns to fit ``history_limit``.

    ``dropped``: the messages, oldest first (kept in ``conversation.dropped``).
    """

    dropped: tuple[dict[str, Any], ...]


@dataclass(frozen=True, slots=True)
class Warn:
    """Something the user should know, such as a ``ContextTruncatedWarning``."""

    warning: Warning


@dataclass(frozen=True, slots=True)
class Done:
    """The last event: the final (or cancelled) result."""

    result: ChatResult


_Output = Thinking | Content | ToolCall
StreamEvent = (
    _Output | ToolResult | Partial | Retry | Reset | Phase | Trim | Warn | Done
)
"""Any event a ``ChatStream`` yields."""
