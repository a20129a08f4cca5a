"""The scripted fake Ollama that both GUI examples talk to without --host."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ollama_stream_sync.testing import Chunk, Delay, DoneLine, FakeOllama, Script

PACE = 0.15
"""Seconds between words: slow enough to read along and press Stop halfway."""


def demo_script(thinking: str, answer: str, delay: float = PACE) -> Script:
    """A word-by-word answer, ``delay`` seconds a word."""
    steps: Script = []
    for word in thinking.split(" "):
        steps += [Delay(delay), Chunk(thinking=word + " ")]
    for word in answer.split(" "):
        steps += [Delay(delay), Chunk(content=word + " ")]
    return [*steps, DoneLine()]


def demo_turns(delay: float = PACE) -> list[Script]:
    """The two answers the windows get, in turn."""
    return [
        demo_script(
            "The user greets me. I should answer kindly and offer help.",
            "Hello! I am a fake Ollama model streaming this answer word by word, "
            "so that you can press Stop halfway through and see the partial text "
            "kept.",
            delay,
        ),
        demo_script(
            "They asked a second question. The history holds the first turn.",
            "This is the second turn: the conversation history was kept.",
            delay,
        ),
    ]


@contextlib.contextmanager
def ollama_host(host: str | None, delay: float = PACE) -> Iterator[str]:
    """``host``, or the URL of a fake Ollama whose answers come at ``delay``."""
    if host:
        yield host
        return
    with FakeOllama() as server:
        server.enqueue(*demo_turns(delay))
        yield server.url
