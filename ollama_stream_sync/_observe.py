"""The observer seam: where telemetry sees every call from start to end.

An ``ObserverFactory``, asked on the caller's thread as a call starts, returns an
``Observer`` (or ``None``), which then runs on the stream's threads: it must be
quick and never raise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class CallInfo:
    """What a call is, for an observer: known when it starts."""

    operation: str
    """"chat", "generate", "pull", "push", "create", "preload", "unload"..."""
    model: str | None
    body: Mapping[str, Any]
    """The request body as sent (without the message history's bytes)."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """What the caller adds (a conversation's id...)."""


@dataclass(frozen=True)
class ToolRun:
    """A ``Conversation`` ran one of the model's tool calls."""

    call: Mapping[str, Any]
    result: str
    """What the model is sent back (the error's text if the tool raised)."""
    start: float
    """When it started, in ``time.time()`` seconds."""
    seconds: float
    error: Exception | None
    """What the tool raised, if it did."""


class Observer(Protocol):
    """Sees one call's life, from its worker thread (and the timer thread)."""

    def request(self, body: Mapping[str, Any] | None) -> None:
        """A request to the model begins, with this body (when its caller gave it)."""

    def attempt(self, number: int, url: str) -> Mapping[str, str]:
        """Attempt ``number`` (from 1, per request) goes to the host at ``url``;
        returns headers to send with it."""

    def event(self, event: Any) -> None:
        """An event was delivered (``Phase``, ``Content``, ``Retry``...)."""

    def request_end(self, result: Any, error: BaseException | None) -> None:
        """That request ended: its result (``cancelled`` set on a cancel), or its
        error (with ``.partial``)."""

    def tool(self, run: ToolRun) -> None:
        """A ``Conversation`` ran a tool call, between two requests."""

    def end(self, result: Any, error: BaseException | None) -> None:
        """The call ended: its result (``cancelled`` set on a cancel), or its error."""


class ObserverFactory(Protocol):
    """Called on the caller's thread as each call starts."""

    def __call__(self, call: CallInfo) -> Observer | None: ...
