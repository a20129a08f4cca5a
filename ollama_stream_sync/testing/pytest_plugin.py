"""The ``fake_ollama`` pytest fixture (registered automatically as a pytest plugin)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ._server import FakeOllama


@pytest.fixture
def fake_ollama() -> Iterator[FakeOllama]:
    """A ``FakeOllama`` on loopback, closed after the test: ``fake_ollama.url``."""
    with FakeOllama() as server:
        yield server
