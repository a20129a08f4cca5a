"""map_chat() and max_in_flight: bounded concurrency, order, errors, cancel."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from ollama_stream_sync import (
    BatchHandle,
    BatchProgress,
    ChatResult,
    ServerError,
    StreamError,
    StreamHandle,
    StreamingClient,
    StreamTimeout,
)
from ollama_stream_sync.testing import FakeOllama, Script, Stall, http_error, reply

from .support import WAIT
from .support.clients import MakeClient

pytestmark = pytest.mark.transport


class EchoOllama(FakeOllama):
    """Answers each chat with its question, stalls those in ``stalls`` and
    fails those in ``failures`` (requests arrive in an order no test controls)."""

    def __init__(self) -> None:
        super().__init__()
        self.stalls: set[str] = set()
        self.failures: set[str] = set()

    def _next_script(
        self, path: str, body: Mapping[str, Any] | None = None
    ) -> Script | None:
        messages = (body or {}).get("messages") or [{}]
        prompt = str(messages[-1].get("content") or (body or {}).get("prompt"))
        if prompt in self.failures:
            return http_error(500, f"failed {prompt}")
        stall = [Stall()] if prompt in self.stalls else []
        return [*stall, *reply(f"echo {prompt}")]


@pytest.fixture
def server() -> Iterator[EchoOllama]:
    srv = EchoOllama()
    try:
        yield srv
    finally:
        srv.close()


def sent_or_queued(handle: StreamHandle, _: ChatResult) -> bool:
    return handle.phase in ("waiting", "queued")


def chats(count: int) -> list[dict[str, Any]]:
    return [
        {"model": "m", "messages": [{"role": "user", "content": f"q{i}"}]}
        for i in range(count)
    ]


def test_map_chat_keeps_order_bounds_concurrency_and_keeps_errors(
    server: EchoOllama, make_client: MakeClient
) -> None:
    server.stalls = {f"q{i}" for i in range(8)}  # the first eight wait together
    server.failures = {"q13", "q77"}
    results: list[int] = []
    errors: list[tuple[int, StreamError]] = []
    with make_client(server.url) as client:
        handle = client.start_map_chat(
            chats(100),
            max_concurrency=8,
            on_result=lambda i, r: results.append(i),
            on_error=lambda i, e: errors.append((i, e)),
        )
        assert isinstance(handle, BatchHandle)
        assert server.wait_stalled(8)
        assert server.in_flight("chat") == 8 and handle.snapshot().done == 0
        server.release()
        outcome = handle.result(WAIT)
    assert server.peak_in_flight("chat") == 8
    assert len(outcome) == 100
    for i, item in enumerate(outcome):
        if i in (13, 77):
            assert isinstance(item, ServerError) and f"failed q{i}" in str(item)
        else:
            assert isinstance(item, ChatResult) and item.content == f"echo q{i}"
    assert sorted(i for i, _ in errors) == [13, 77]
    assert sorted(results) == [i for i in range(100) if i not in (13, 77)]
    assert handle.snapshot() == BatchProgress(100, 100)


def test_each_request_keeps_its_own_callbacks_and_arguments(
    server: EchoOllama, client: StreamingClient
) -> None:
    seen: list[str] = []
    requests = chats(3)
    requests[1]["on_content"] = seen.append
    requests[2]["options"] = {"temperature": 0}
    generated = client.map_generate([{"model": "m", "prompt": "p"}])
    assert isinstance(generated[0], ChatResult)
    assert generated[0].content == "echo p"
    outcome = client.map_chat(requests, max_concurrency=1)
    assert [r.content for r in outcome if isinstance(r, ChatResult)] == [
        "echo q0",
        "echo q1",
        "echo q2",
    ]
    assert "".join(seen) == "echo q1"
    assert server.stream_requests()[-1].body["options"] == {"temperature": 0}


def test_stop_on_error_raises_the_first_error_and_stops_the_rest(
    server: EchoOllama, client: StreamingClient
) -> None:
    server.stalls = {"q0"}
    handle = client.start_map_chat(chats(50), max_concurrency=2, stop_on_error=True)
    assert server.wait_stalled()
    server.failures = {f"q{i}" for i in range(50)}  # the next one fails
    with pytest.raises(ServerError, match=r"failed q\d+") as caught:
        handle.result(WAIT)
    assert server.wait_for(lambda s: s.disconnects_seen == 1)  # q0 was cut
    failed = int(caught.value.server_message.split("q")[-1])
    sent = {r.body["messages"][0]["content"] for r in server.stream_requests()}
    assert sent == {f"q{i}" for i in range(failed + 1)}  # none after the failure


def test_one_cancel_stops_every_chat_and_starts_no_more(
    server: EchoOllama, client: StreamingClient
) -> None:
    server.stalls = {"q2", "q3"}
    handle = client.start_map_chat(chats(10), max_concurrency=2)
    assert server.wait_stalled(2)
    assert handle.cancel() is True
    outcome = handle.result(WAIT)
    assert handle.cancelled()
    assert [r.content for r in outcome[:2] if isinstance(r, ChatResult)] == [
        "echo q0",
        "echo q1",
    ]
    assert all(isinstance(r, ChatResult) and r.cancelled for r in outcome[2:])
    assert server.wait_for(lambda s: s.disconnects_seen == 2)
    assert len(server.stream_requests()) == 4


def test_map_chat_checks_every_request_before_any_starts(
    server: EchoOllama, client: StreamingClient
) -> None:
    bad = [*chats(2), {"model": "m", "mesages": []}]
    with pytest.raises(TypeError, match="mesages"):
        client.map_chat(bad)
    with pytest.raises(TypeError, match="on_contnet"):
        client.map_chat([{"model": "m", "on_contnet": print}])
    with pytest.raises(ValueError, match="model"):
        client.map_chat([{"model": ""}])
    with pytest.raises(ValueError, match="max_concurrency"):
        client.map_chat(chats(1), max_concurrency=0)
    with pytest.raises(ValueError, match="truncate=True"):  # start_chat's own check
        client.map_chat([{"model": "m", "context": 4096, "truncate": True}])
    assert server.stream_requests() == []


def test_max_in_flight_holds_a_third_stream_and_every_waiter_can_be_cancelled(
    server: EchoOllama, make_client: MakeClient
) -> None:
    server.stalls = {f"q{i}" for i in range(10)}
    handles: list[StreamHandle] = []
    lock = threading.Lock()
    with make_client(server.url, max_in_flight=2) as client:

        def start(request: dict[str, Any]) -> None:
            handle = client.start_chat(**request)
            with lock:
                handles.append(handle)

        threads = [threading.Thread(target=start, args=(r,)) for r in chats(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
        assert server.wait_stalled(2)
        for handle in handles:  # sent and stalled, or waiting for a slot
            assert handle.wait_for(functools.partial(sent_or_queued, handle), WAIT)
        waiting = [h for h in handles if h.phase == "queued"]
        assert len(waiting) == 8 and server.in_flight("chat") == 2
        for handle in waiting:
            assert handle.cancel() is True
            result = handle.result(WAIT)
            assert result.cancelled and result.content == ""
        server.release()
        finished = [h.result(WAIT) for h in handles if h not in waiting]
        assert [r.content.startswith("echo q") for r in finished] == [True] * 2
    assert server.peak_in_flight("chat") == 2
    assert len(server.stream_requests()) == 2


def test_a_queued_stream_reports_the_phase_and_waits_in_order(
    server: EchoOllama, make_client: MakeClient
) -> None:
    server.stalls = {"q0"}
    phases: list[str] = []
    with make_client(server.url, max_in_flight=1) as client:
        first = client.start_chat(**chats(1)[0])
        assert server.wait_stalled()
        later: list[StreamHandle] = []
        for i, request in enumerate(chats(4)[1:]):
            watch = phases.append if i == 0 else None
            later.append(client.start_chat(**request, on_phase=watch))
            assert later[-1].wait_for(lambda _: later[-1].phase == "queued", WAIT)
        server.release()
        assert first.result(WAIT).content == "echo q0"
        assert [h.result(WAIT).content for h in later] == [
            "echo q1",
            "echo q2",
            "echo q3",
        ]
    order = [r.body["messages"][0]["content"] for r in server.stream_requests()]
    assert order == ["q0", "q1", "q2", "q3"]
    assert phases[:2] == ["queued", "connecting"] and phases[-1] == "done"


def test_the_deadline_counts_the_wait_for_a_slot(
    server: EchoOllama, make_client: MakeClient
) -> None:
    server.stalls = {"q0"}
    with make_client(server.url, max_in_flight=1) as client:
        holder = client.start_chat(**chats(1)[0])
        assert server.wait_stalled()
        with pytest.raises(StreamTimeout) as caught:
            client.chat(**chats(2)[1], deadline=0.05)
        assert caught.value.which == "deadline"
        holder.cancel()
        assert holder.result(WAIT).cancelled
        assert client.chat(**chats(3)[2]).content == "echo q2"  # the slot came back
    assert len(server.stream_requests()) == 2
