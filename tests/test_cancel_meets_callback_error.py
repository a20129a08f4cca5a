"""A cancel and a callback's failure at once: every dispatcher tells the same story."""

from __future__ import annotations

from typing import Any

import pytest

from ollama_stream_sync import CallbackError, InlineDispatcher, QueueDispatcher

from .conftest import USER, WAIT
from .support.memory import MemoryTransport, answer, memory_client


@pytest.mark.parametrize("queued", [False, True], ids=["inline", "queued"])
def test_a_callback_that_cancels_then_raises_fails_the_stream(queued: bool) -> None:
    """The cancel lands first, then the callback raises: the user's exception is
    not swallowed. ``on_error`` gets the ``CallbackError`` and ``result()``
    raises it, under the inline dispatcher as under a queued one (inline used to
    fire ``on_done`` with a cancelled result, then raise from ``result()``)."""
    transport = MemoryTransport()
    transport.enqueue(answer("a", "b"))
    dispatcher = QueueDispatcher() if queued else InlineDispatcher()
    seen: list[Any] = []
    with memory_client(transport, dispatcher=dispatcher) as client:

        def on_content(_: str) -> None:
            handle.cancel()
            raise ValueError("a bug in the callback")

        handle = client.start_chat(
            "m",
            USER,
            on_content=on_content,
            on_done=lambda result: seen.append(("done", result)),
            on_error=lambda error: seen.append(("error", error)),
        )
        if queued:
            assert dispatcher.pump_until(handle._delivery.delivered.is_set, WAIT)
        with pytest.raises(CallbackError) as caught:
            handle.result(WAIT)
    assert isinstance(caught.value.__cause__, ValueError)
    assert [kind for kind, _ in seen] == ["error"]
    assert seen[0][1] is caught.value
