"""Several hosts: spread the load, fail over before output, break circuits, keep
a conversation on its host, report health; over both transports."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from ollama_stream_sync import (
    ConnectionFailed,
    Conversation,
    ModelNotFound,
    RetryPolicy,
    ServerError,
    StreamError,
    StreamingClient,
    StreamTimeout,
)
from ollama_stream_sync.testing import Chunk, Cut, FakeOllama, Stall, http_error, reply

from .support import USER, WAIT
from .support.clients import MakeClient

FAST = RetryPolicy(initial_delay=0.01, jitter=False)


@pytest.fixture
def dead_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


@pytest.fixture
def second_server() -> Iterator[FakeOllama]:
    with FakeOllama(version="0.14.0-fake") as srv:
        yield srv


def test_failover_from_a_dead_host_to_a_live_one(
    server: FakeOllama,
    dead_url: str,
    make_client: MakeClient,
) -> None:
    server.default_reply = reply("from the live host")
    retries: list[Any] = []
    with make_client(hosts=[dead_url, server.url], retry=FAST) as client:
        first = client.chat("m", USER, on_retry=lambda a, e, d: retries.append(e))
        assert first.content == "from the live host"
        assert len(retries) == 1 and isinstance(retries[0], ConnectionFailed)
        assert retries[0].during_connect
        # the dead host now cools down: the next streams go straight to the live one
        for _ in range(3):
            again: list[Any] = []
            client.chat("m", USER, on_retry=lambda a, e, d, seen=again: seen.append(e))
            assert again == []
        health = {h.url.rstrip("/"): h for h in client.health()}
    dead, live = health[dead_url], health[server.url]
    assert not dead.reachable and dead.cooling_down and dead.error
    assert live.reachable and live.version == "0.13.0-fake"
    assert live.latency is not None and live.latency >= 0
    assert not live.cooling_down


def test_streams_are_spread_over_healthy_hosts(
    server: FakeOllama,
    second_server: FakeOllama,
    make_client: MakeClient,
) -> None:
    with make_client(
        hosts=[server.url, second_server.url], routing="round_robin"
    ) as client:
        for _ in range(4):
            client.chat("m", USER)
        assert [h.version for h in client.health()] == ["0.13.0-fake", "0.14.0-fake"]
    assert len(server.stream_requests()) == 2
    assert len(second_server.stream_requests()) == 2


def test_all_hosts_dead(dead_url: str, make_client: MakeClient) -> None:
    with make_client(hosts=[dead_url, dead_url], retry=FAST) as client:
        with pytest.raises(ConnectionFailed):
            client.chat("m", USER)
        assert not any(h.reachable for h in client.health())


def test_host_and_hosts_are_exclusive(dead_url: str, make_client: MakeClient) -> None:
    with pytest.raises(TypeError):
        make_client(dead_url, hosts=[dead_url])


def test_repr_names_every_host(
    server: FakeOllama, second_server: FakeOllama, make_client: MakeClient
) -> None:
    with make_client(hosts=[server.url, second_server.url]) as client:
        text = repr(client)
    assert server.url in text and second_server.url in text


# -- failover before output, policy or not -------------------------------------------

MISSING = http_error(404, "model 'm' not found")


@pytest.mark.parametrize("routing", ["model_aware", "least_busy", "round_robin"])
def test_a_host_lacking_the_model_hands_the_call_to_one_that_has_it(
    routing: str, make_client: MakeClient
) -> None:
    with FakeOllama(models=["other"]) as lacking, FakeOllama(models=["m"]) as has:
        lacking.default_reply = MISSING
        has.default_reply = reply("from the host with m")
        with make_client(hosts=[lacking.url, has.url], routing=routing) as client:
            results = [client.chat("m", USER) for _ in range(4)]
    assert {(r.content, r.host) for r in results} == {("from the host with m", has.url)}
    # model_aware learns at once; the others ask it again, each in its way
    # (least_busy finds it idle and quick to fail: it ignores models).
    asked = {"model_aware": 1, "least_busy": 4, "round_robin": 2}[routing]
    assert len(lacking.stream_requests()) == asked


def test_when_no_host_has_the_model_each_is_asked_once(
    make_client: MakeClient,
) -> None:
    with FakeOllama() as a, FakeOllama() as b:
        a.default_reply = b.default_reply = MISSING
        # round_robin keeps no model lists: each host "may have" the model.
        with make_client(
            hosts=[a.url, b.url], retry=FAST, routing="round_robin"
        ) as client:
            with pytest.raises(ModelNotFound) as caught:
                client.chat("m", USER)
    assert len(a.stream_requests()) == len(b.stream_requests()) == 1
    assert caught.value.url in (a.url, b.url)


def test_a_pull_of_a_model_the_registry_lacks_is_not_repeated_elsewhere(
    make_client: MakeClient,
) -> None:
    with FakeOllama(unknown_models=["nope"]) as a, FakeOllama() as b:
        b.unknown_models = {"nope"}
        with make_client(hosts=[a.url, b.url]) as client:
            with pytest.raises(ModelNotFound):
                client.pull("nope")
    pulls = [r for s in (a, b) for r in s.requests if r.path == "/api/pull"]
    assert len(pulls) == 1


@pytest.mark.parametrize("status", [502, 503, 504])
def test_a_gateway_or_busy_status_moves_to_another_host(
    status: int, server: FakeOllama, second_server: FakeOllama, make_client: MakeClient
) -> None:
    server.enqueue(http_error(status, "upstream trouble"))
    second_server.default_reply = reply("from the other host")
    moves: list[tuple[StreamError, float]] = []
    with make_client(hosts=[server.url, second_server.url], retry=None) as client:
        result = client.chat("m", USER, on_retry=lambda a, e, d: moves.append((e, d)))
    assert result.content == "from the other host"
    ((error, delay),) = moves
    assert delay == 0.0
    assert isinstance(error, StreamTimeout if status == 504 else ServerError)


def test_a_429_with_retry_after_goes_to_another_host_first(
    server: FakeOllama, second_server: FakeOllama, make_client: MakeClient
) -> None:
    server.enqueue(http_error(429, "slow down", Retry_After="30"))
    second_server.default_reply = reply("no wait")
    delays: list[float] = []
    slow = RetryPolicy(initial_delay=30.0)
    with make_client(hosts=[server.url, second_server.url], retry=slow) as client:
        result = client.chat("m", USER, on_retry=lambda a, e, d: delays.append(d))
    assert (result.content, delays) == ("no wait", [0.0])


def test_a_429_without_retry_after_stays_an_error(
    server: FakeOllama, second_server: FakeOllama, make_client: MakeClient
) -> None:
    server.enqueue(http_error(429, "too many requests"))
    with make_client(hosts=[server.url, second_server.url]) as client:
        with pytest.raises(ServerError) as caught:
            client.chat("m", USER)
    assert caught.value.status_code == 429
    assert second_server.stream_requests() == []


def test_nothing_moves_once_output_was_shown(
    server: FakeOllama, second_server: FakeOllama, make_client: MakeClient
) -> None:
    server.enqueue([Chunk(content="Hel"), Cut()])
    with make_client(hosts=[server.url, second_server.url], retry=FAST) as client:
        with pytest.raises(ConnectionFailed) as caught:
            client.chat("m", USER)
    assert caught.value.partial.content == "Hel"
    assert caught.value.partial.host == server.url
    assert second_server.stream_requests() == []


# -- the breaker, end to end -----------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_host_that_dies_is_probed_once_per_cooldown_and_comes_back(
    make_client: MakeClient,
) -> None:
    clock = Clock()
    a, b = FakeOllama().start(), FakeOllama().start()
    port = int(a.url.rsplit(":", 1)[1])
    try:
        with make_client(
            hosts=[a.url, b.url], routing="round_robin", host_cooldown=30
        ) as client:
            client._engine.hosts._clock = clock  # the cool-down, on our clock

            def moves(count: int) -> int:
                seen: list[Any] = []
                for _ in range(count):
                    client.chat("m", USER, on_retry=lambda *_: seen.append(1))
                return len(seen)

            assert moves(4) == 0
            a.close()  # it dies: the next call to it moves, then it is left alone
            assert moves(6) == 1
            assert [h.breaker for h in client.health()] == ["open", "closed"]
            clock.now += 31  # one probe may go; it finds the host still dead
            assert moves(6) == 1
            a = FakeOllama(port=port).start()  # back, on the same address
            assert moves(6) == 0  # still cooling down: b serves all
            assert a.stream_requests() == []
            clock.now += 31
            assert moves(6) == 0
            assert [h.breaker for h in client.health()] == ["closed", "closed"]
            assert len(a.stream_requests()) == 3  # in turn again
    finally:
        a.close()
        b.close()


# -- a conversation stays where its history is cached --------------------------------


def test_a_conversation_stays_on_its_host_and_moves_once_when_it_dies(
    make_client: MakeClient,
) -> None:
    servers = [FakeOllama().start() for _ in range(3)]
    try:
        with make_client(hosts=[s.url for s in servers]) as client:
            conv = Conversation(client, "m")
            hosts = [conv.send(f"turn {i}").host for i in range(5)]
            (first,) = set(hosts)
            dying = next(s for s in servers if s.url == first)
            dying.close()
            later = [conv.send(f"turn {i}").host for i in range(5, 10)]
    finally:
        for s in servers:
            s.close()
    assert len(set(later)) == 1 and first not in later
    assert len(dying.stream_requests()) == 5


def test_health_reports_breakers_streams_models_and_first_tokens(
    server: FakeOllama, second_server: FakeOllama, make_client: MakeClient
) -> None:
    with make_client(hosts=[server.url, second_server.url]) as client:
        client.chat("qwen3", USER)
        after = client.health()
        server.enqueue([Chunk(content="x"), Stall()])
        second_server.enqueue([Chunk(content="x"), Stall()])
        handle = client.start_chat("qwen3", USER)
        assert handle.wait_for(lambda r: r.content == "x", WAIT)
        busy = client.health()
        handle.cancel()
    (host,) = [h for h in after if h.models_loaded]
    assert host.models_loaded == ("qwen3",)  # Ollama would add ":latest"
    assert host.models_available == ("fake-model",)
    assert host.last_ttft is not None
    assert sorted(h.in_flight for h in busy) == [0, 1]
    assert all(h.breaker == "closed" and h.reachable for h in after + busy)


def test_routing_is_checked_at_construction(server: FakeOllama) -> None:
    with pytest.raises(ValueError, match="routing"):
        StreamingClient(hosts=[server.url], routing="fastest")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="routing"):
        StreamingClient(hosts=[server.url], routing=object())  # type: ignore[arg-type]
