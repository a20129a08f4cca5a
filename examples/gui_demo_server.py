"""The scripted fake Ollama that both GUI examples talk to without --host."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ollama_stream_sync.testing import Chunk, Delay, DoneLine, FakeOllama, Script


def demo_script(thinking: str, answer: str, delay: float = 0.04) -> Script:
    """A slow, word-by-word answer, so Stop can be pressed mid-stream."""
    steps: Script = []
    for word in thinking.split(" "):
        steps += [Delay(delay), Chunk(thinking=word + " ")]
    for word in answer.split(" "):
        steps += [Delay(delay), Chunk(content=word + " ")]
    return [*steps, DoneLine()]


DEMO_TURNS = [
    demo_script(
        "The user greets me. I should answer kindly and offer help.",
        "Hello! I am a fake Ollama model streaming this answer word by word, "
        "so that you can press Stop halfway through and see the partial text kept.",
    ),
    demo_script(
        "They asked a second question. The history holds the first turn.",
        "This is the second turn: the conversation history was kept.",
    ),
]


@contextlib.contextmanager
def ollama_host(host: str | None) -> Iterator[str]:
    if host:
        yield host
        return
    with FakeOllama() as server:
        server.enqueue(*DEMO_TURNS)
        yield server.url
