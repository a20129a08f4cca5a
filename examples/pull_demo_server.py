"""The scripted fake Ollama that both pull examples talk to without --host."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ollama_stream_sync.testing import (
    Delay,
    FakeOllama,
    ProgressLine,
    Script,
    pull_script,
)

PULLS = 20
"""How many paced pulls the fake server has queued: one per press of Pull."""


def paced_pull(model: str, delay: float = 0.05, steps: int = 120) -> Script:
    """A 2 GB pull in Ollama's own words, about six seconds long.

    Only the big layer's lines are paced (a line every ``delay`` seconds), so
    the bar moves steadily, the speed and ETA settle, and Cancel can be
    pressed halfway; the small blobs and the last stages pass at once.
    """
    steps_: Script = []
    for step in pull_script(model, steps=steps):
        if isinstance(step, ProgressLine) and (step.total or 0) > 1_000_000:
            steps_.append(Delay(delay))
        steps_.append(step)
    return steps_


@contextlib.contextmanager
def ollama_host(host: str | None, model: str) -> Iterator[str]:
    """``host``, or the URL of a fake Ollama whose pulls are paced.

    The fake registry serves every name it is asked for: with ``--host``, a
    real Ollama answers, and an unknown name shows its error.
    """
    if host:
        yield host
        return
    with FakeOllama() as server:
        server.enqueue(*(paced_pull(model) for _ in range(PULLS)), endpoint="pull")
        yield server.url
