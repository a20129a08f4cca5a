"""The public face: names, signatures kept in step with the SDK, packaging, proxies."""

from __future__ import annotations

import inspect
from pathlib import Path

import ollama
import pytest

import ollama_stream_sync
from ollama_stream_sync import StreamingClient
from ollama_stream_sync.testing import FakeOllama, reply

from .conftest import USER

STREAM_ONLY_EXCLUDED = {"self", "stream"}


def test_all_is_sorted_and_importable() -> None:
    names = ollama_stream_sync.__all__
    assert names == sorted(names)
    for name in names:
        assert getattr(ollama_stream_sync, name) is not None


def test_package_ships_py_typed() -> None:
    assert (Path(ollama_stream_sync.__file__).parent / "py.typed").exists()


@pytest.mark.parametrize(
    ("ours", "sdk"),
    [
        (StreamingClient.chat, ollama.Client.chat),
        (StreamingClient.start_chat, ollama.Client.chat),
        (StreamingClient.generate, ollama.Client.generate),
        (StreamingClient.start_generate, ollama.Client.generate),
    ],
)
def test_every_sdk_option_is_passed_through(ours: object, sdk: object) -> None:
    """A new option in ollama.Client shows up here as a failure, not a silent gap."""
    sdk_params = set(inspect.signature(sdk).parameters)  # type: ignore[arg-type]
    our_params = set(inspect.signature(ours).parameters)  # type: ignore[arg-type]
    assert sdk_params - our_params - STREAM_ONLY_EXCLUDED == set()


def test_blocking_and_background_twins_share_a_signature() -> None:
    chat = inspect.signature(StreamingClient.chat)
    start = inspect.signature(StreamingClient.start_chat)
    assert list(chat.parameters) == list(start.parameters)


def test_error_tree() -> None:
    oss = ollama_stream_sync
    for cls in (
        oss.CallbackError,
        oss.ConnectionFailed,
        oss.ProtocolError,
        oss.ServerError,
        oss.StreamTimeout,
    ):
        assert issubclass(cls, oss.StreamError)
    assert issubclass(oss.ModelNotFound, oss.ServerError)


def test_existing_sdk_client_can_be_wrapped(server: FakeOllama) -> None:
    sdk = ollama.Client(server.url)
    server.enqueue(reply("wrapped"))
    with StreamingClient(client=sdk) as client:
        assert client.sdk is sdk
        assert client.chat("m", USER).content == "wrapped"
    assert sdk.list().models  # we did not close the caller's client
    sdk.close()


def test_sdk_calls_work_through_the_wrapped_client(server: FakeOllama) -> None:
    with StreamingClient(server.url) as client:
        assert [m.model for m in client.sdk.list().models] == ["fake-model"]


def test_client_and_options_are_exclusive() -> None:
    with pytest.raises(TypeError):
        StreamingClient("http://127.0.0.1:1", client=ollama.Client())


def test_headers_reach_the_server(server: FakeOllama) -> None:
    with StreamingClient(server.url, headers={"Authorization": "Bearer k"}) as client:
        client.chat("m", USER)
    assert server.stream_requests()[0].headers.get("authorization") == "Bearer k"


def test_fake_ollama_fixture_from_the_plugin(fake_ollama: FakeOllama) -> None:
    fake_ollama.enqueue(reply("from the fixture"))
    with StreamingClient(fake_ollama.url) as client:
        assert client.chat("m", USER).content == "from the fixture"
