"""The ``fake_ollama`` pytest fixture (registered automatically as a pytest plugin)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ._server import FakeOllama


@pytest.fixture
def fake_ollama() -> Iterator[FakeOllama]:
    """A started ``FakeOllama`` on loopback, closed after the test.

    Example::

        def test_answer(fake_ollama):
            fake_ollama.enqueue(reply("42"))
            assert StreamingClient(fake_ollama.url).chat("m", msgs).content == "42"
    """
    with FakeOllama() as server:
        yield server
