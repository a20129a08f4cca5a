"""An in-memory transport, in the spirit of httpx's ``MockTransport``.

Engine logic (delivery, state, retries, phases, dispatchers) runs on it once,
with no socket: each request plays the next scripted answer, a list of steps
(``bytes`` to hand over, ``GATE`` to block until the test opens it, an
exception to raise). A blocked read is a claimable connection, so a cancel or a
timer wakes it exactly as it wakes a socket; the real transports are exercised
by the files that test them.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ollama_stream_sync import StreamingClient
from ollama_stream_sync._cancel import AbortScope, current_scope
from ollama_stream_sync._hosts import Host, Hosts
from ollama_stream_sync._result import Headers

GATE = object()
"""A step that blocks until ``MemoryTransport.open_gate()`` (or an abort)."""

Step = bytes | BaseException | object


def chat_line(content: str = "", *, thinking: str = "", done: bool = False) -> bytes:
    """One ``/api/chat`` line."""
    message = {"role": "assistant", "content": content}
    if thinking:
        message["thinking"] = thinking
    line: dict[str, Any] = {"model": "m", "message": message, "done": done}
    if done:
        line |= {"done_reason": "stop", "eval_count": 2, "prompt_eval_count": 1}
    return json.dumps(line).encode() + b"\n"


def answer(*contents: str) -> list[Step]:
    """A whole answer: a line per piece, then the done line."""
    return [chat_line(c) for c in contents] + [chat_line(done=True)]


class _Stream:
    """One scripted response; claimable, so an abort wakes a blocked read."""

    headers: Mapping[str, str] = Headers([("content-type", "application/x-ndjson")])

    def __init__(self, steps: Sequence[Step], transport: MemoryTransport) -> None:
        self._steps = deque(steps)
        self._transport = transport
        self._shut = False
        self.owner: AbortScope | None = None

    def shutdown(self) -> None:
        with self._transport.changed:
            self._shut = True
            self._transport.changed.notify_all()

    def __iter__(self) -> Iterator[bytes]:
        scope, changed = current_scope(), self._transport.changed
        while self._steps:
            step = self._steps.popleft()
            if step is GATE:
                with changed:
                    changed.wait_for(lambda: self._transport.opened or self._shut)
            elif isinstance(step, BaseException):
                raise step
            if scope is not None:
                scope.check()
            if self._shut:
                return  # as a socket that was shut down reads: the end
            if isinstance(step, bytes):
                yield step

    def drain(self) -> None:
        self._steps.clear()

    def close(self) -> None:
        self._steps.clear()


class MemoryTransport:
    """A ``Transport`` that plays scripted answers to every request, in order."""

    url = "http://memory.invalid"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scripts: deque[list[Step]] = deque()
        self.changed = threading.Condition(self._lock)
        """Guards ``opened`` and the streams' shut flags; blocked reads wait on it."""
        self.opened = False
        self.requests: list[dict[str, Any]] = []

    def enqueue(self, *scripts: list[Step]) -> None:
        with self._lock:
            self._scripts.extend(scripts)

    def open_gate(self) -> None:
        with self.changed:
            self.opened = True
            self.changed.notify_all()

    def open(
        self,
        path: str,
        payload: bytes,
        *,
        timeout: float | None,
        headers: Mapping[str, str] | None = None,
        model: str | None = None,
    ) -> _Stream:
        scope = current_scope()
        with self._lock:
            self.requests.append({"path": path, **json.loads(payload)})
            steps = self._scripts.popleft() if self._scripts else answer("ok")
        stream = _Stream(steps, self)
        if scope is not None:
            scope.claim(stream)
            scope.on_sent()
        return stream

    def request_json(
        self, method: str, path: str, payload: bytes | None, *, timeout: float | None
    ) -> Any:
        return {"version": "memory", "models": []}


def memory_client(transport: MemoryTransport, **options: Any) -> StreamingClient:
    """A ``StreamingClient`` whose every request goes to ``transport``."""
    client = StreamingClient("http://memory.invalid", **options)
    engine = client._engine
    engine.hosts = Hosts([Host(transport)], cooldown=engine.hosts.cooldown)
    return client
