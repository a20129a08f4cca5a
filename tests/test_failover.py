"""Several hosts: spread the load, fail over from a dead one, report health."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from ollama_stream_sync import ConnectionFailed, RetryPolicy
from ollama_stream_sync.testing import FakeOllama, reply

from .conftest import USER, MakeClient

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
