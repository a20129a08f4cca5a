"""Shared fixtures: a scripted loopback Ollama, a client on it, and a leak check."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from ollama_stream_sync import StreamingClient
from ollama_stream_sync.testing import FakeOllama

USER = [{"role": "user", "content": "Hello?"}]
WAIT = 5.0  # every wait in the suite is bounded by this; none is a timing assertion


def _stream_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("ollama-stream-")]


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Every test must leave no worker thread behind once its streams ended."""
    before = set(_stream_threads())
    yield
    deadline = time.monotonic() + WAIT
    for thread in set(_stream_threads()) - before:
        thread.join(max(0.0, deadline - time.monotonic()))
    leaked = [t.name for t in set(_stream_threads()) - before if t.is_alive()]
    assert not leaked, f"worker threads left running: {leaked}"


@pytest.fixture
def server() -> Iterator[FakeOllama]:
    with FakeOllama() as srv:
        yield srv


@pytest.fixture
def client(server: FakeOllama) -> Iterator[StreamingClient]:
    with StreamingClient(server.url) as c:
        yield c
