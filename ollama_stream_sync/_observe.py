"""The observer seam: where telemetry sees every stream from start to end.

An ``ObserverFactory`` is asked, on the caller's thread when a call starts,
for an ``Observer`` of that call (or ``None`` to stay out of it). The observer
then sees each attempt (which host, and may add request headers, such as a
trace context), every event as it is delivered (phases, output, retries,
tool results), and the outcome. It runs on the stream's threads and must be
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


class Observer(Protocol):
    """Sees one call's life, from its worker thread (and the timer thread)."""

    def attempt(self, number: int, url: str) -> Mapping[str, str]:
        """Attempt ``number`` (from 1) goes to the host at ``url``; returns
        headers to send with it."""
        ...

    def event(self, event: Any) -> None:
        """An event was delivered (``Phase``, ``Content``, ``Retry``...)."""
        ...

    def end(self, result: Any, error: BaseException | None) -> None:
        """The call ended: its result (``cancelled`` set on a cancel), or its error."""
        ...


class ObserverFactory(Protocol):
    """Called on the caller's thread as each call starts."""

    def __call__(self, call: CallInfo) -> Observer | None: ...
