"""The public contract around a stream: arguments, retry policies, history, hosts,
error bodies, logging and dependencies."""

from __future__ import annotations

import importlib.metadata
import pathlib
import sys
import threading
from typing import Any

import ollama
import pytest
import requests
from packaging.requirements import Requirement

import ollama_stream_sync
from ollama_stream_sync import (
    CallbackError,
    Conversation,
    ServerError,
    StreamError,
    StreamingClient,
    ToolRoundsExceeded,
)
from ollama_stream_sync.testing import (
    Chunk,
    Cut,
    FakeOllama,
    Raw,
    Stall,
    http_error,
    reply,
    tool_call,
)

from .conftest import USER, WAIT, MakeClient


def stream_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("ollama-stream-")}


# -- 6. urllib3 1.x: urllib3>=2.6 is declared --


def declared_requirements() -> list[Requirement]:
    """The dependencies of the package under test, from its own tree if there is
    one (a checkout), else from the installed metadata."""
    root = pathlib.Path(ollama_stream_sync.__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and sys.version_info >= (3, 11):
        import tomllib

        project = tomllib.loads(pyproject.read_text())["project"]
        return [Requirement(r) for r in project["dependencies"]]
    requires = importlib.metadata.requires("ollama-stream-sync") or []
    return [Requirement(r) for r in requires if "extra ==" not in r]


def test_urllib3_2_6_or_later_is_declared() -> None:
    found = [r for r in declared_requirements() if r.name.lower() == "urllib3"]
    assert len(found) == 1, "urllib3 must be a declared dependency"
    spec = found[0].specifier
    assert not spec.contains("1.26.20")
    assert not spec.contains("2.5.0")
    assert spec.contains("2.6.0") and spec.contains("2.8.0")


def test_the_installed_metadata_declares_it_too() -> None:
    requires = importlib.metadata.requires("ollama-stream-sync") or []
    found = [Requirement(r) for r in requires if r.lower().startswith("urllib3")]
    assert found and not found[0].specifier.contains("1.26.20")


# -- 12. programming errors are not network errors --

BAD_CLIENT_ARGS: list[tuple[str, Any]] = [
    ("connect_timeout", -1),
    ("connect_timeout", "10"),
    ("connect_timeout", 0),
    ("connect_timeout", float("nan")),
    ("first_token_timeout", -5),
    ("read_timeout", True),
    ("deadline", -1),
    ("close_timeout", -1),
    ("coalesce_interval", -1),
    ("host_cooldown", -1),
    ("max_line_bytes", 0),
    ("max_line_bytes", "8M"),
    ("dispatcher", object()),
    ("dispatcher", print),
    ("retry", 3),
    ("probe_loading", "yes"),
]


@pytest.mark.parametrize(("name", "value"), BAD_CLIENT_ARGS)
def test_a_bad_client_argument_raises_at_once_naming_it(
    server: FakeOllama, name: str, value: Any
) -> None:
    with pytest.raises((TypeError, ValueError), match=name):
        StreamingClient(server.url, **{name: value})


BAD_CALL_ARGS: list[tuple[str, Any]] = [
    ("options", "x"),
    ("options", 42),
    ("on_content", "print"),
    ("on_done", 5),
    ("on_error", object()),
    ("connect_timeout", -1),
    ("connect_timeout", "10"),
    ("first_token_timeout", -5),
    ("read_timeout", 0),
    ("deadline", "soon"),
    ("coalesce_interval", -1),
    ("dispatcher", object()),
    ("retry", "3"),
    ("on_contnet", print),  # a typo of on_content
    ("timeout", 5),  # not a per-call setting
    ("keep_alive", object()),
    ("think", 5),
]


@pytest.mark.parametrize(("name", "value"), BAD_CALL_ARGS)
@pytest.mark.parametrize("call", ["chat", "start_chat", "generate", "start_generate"])
def test_a_bad_call_argument_raises_at_once_naming_it(
    server: FakeOllama, call: str, name: str, value: Any
) -> None:
    before = stream_threads()
    with StreamingClient(server.url) as client:
        method = getattr(client, call)
        first = USER if "chat" in call else "prompt"
        with pytest.raises((TypeError, ValueError), match=name):
            method("m", first, **{name: value})
        assert client.active_streams() == []
    assert stream_threads() == before  # no worker thread was started
    assert server.stream_requests() == []  # nothing was sent


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("options", "x"),
        ("options", 42),
        ("keep_alive", object()),
        ("think", 5),
        ("format", 3),
    ],
)
def test_a_bad_conversation_setting_raises_at_construction(
    server: FakeOllama, name: str, value: Any
) -> None:
    with StreamingClient(server.url) as client:
        with pytest.raises((TypeError, ValueError), match=name):
            Conversation(client, "m", **{name: value})
    assert server.stream_requests() == []


@pytest.mark.parametrize(
    ("name", "value"), [("on_content", 5), ("on_tool_result", "x"), ("on_contnet", 1)]
)
def test_a_bad_send_argument_raises_at_once_and_keeps_the_history(
    server: FakeOllama, name: str, value: Any
) -> None:
    with StreamingClient(server.url) as client:
        conv = Conversation(client, "m", system="Be brief.")
        with pytest.raises((TypeError, ValueError), match=name):
            conv.send("hi", **{name: value})
        assert conv.messages == [{"role": "system", "content": "Be brief."}]
    assert server.stream_requests() == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"messages": [{"role": "user", "content": b"bytes"}]},
        {"messages": USER, "options": {"temperature": object()}},
    ],
    ids=["bytes-content", "object-in-options"],
)
def test_a_value_json_cannot_encode_raises_at_once(
    server: FakeOllama, kwargs: dict[str, Any]
) -> None:
    with StreamingClient(server.url) as client:
        with pytest.raises(TypeError, match="JSON"):
            client.start_chat("m", **kwargs)
        assert client.active_streams() == []
        conv = Conversation(client, "m")
        with pytest.raises(TypeError, match="JSON"):
            conv.send({"role": "user", "content": b"bytes"})
        assert conv.messages == []
    assert server.stream_requests() == []


# -- 14. a failed Conversation.send leaves no trace in the history --

SYSTEM = {"role": "system", "content": "Be brief."}


def sent_messages(server: FakeOllama) -> list[dict[str, Any]]:
    return list(server.stream_requests()[-1].body["messages"])


@pytest.mark.parametrize(
    "failure",
    [
        http_error(500, "boom"),
        [Chunk(content="half an answer"), Cut()],
        [Chunk(content="half an answer"), Raw(b"not json")],
    ],
    ids=["http-500", "cut-mid-answer", "garbage-mid-answer"],
)
def test_a_failed_send_restores_the_history(
    server: FakeOllama, make_client: MakeClient, failure: list[Any]
) -> None:
    server.enqueue(reply("first answer"), failure, reply("third answer"))
    with make_client(server.url) as client:
        conv = Conversation(client, "m", system="Be brief.")
        conv.send("one")
        before = conv.messages
        with pytest.raises(StreamError) as info:
            conv.send("two")
        assert conv.messages == before
        if "half" in str(failure):
            assert info.value.partial.content == "half an answer"
        conv.send("three")
    assert sent_messages(server) == [
        SYSTEM,
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "three"},  # one user turn, not two
    ]


def test_a_send_that_fails_after_a_tool_round_restores_the_history(
    server: FakeOllama, make_client: MakeClient
) -> None:
    calls: list[str] = []

    def get_time(city: str) -> str:
        """The time in a city.

        Args:
            city: the city
        """
        calls.append(city)
        return "noon"

    server.enqueue(
        reply(tool_calls=[tool_call("get_time", {"city": "Paris"})]),
        http_error(500, "the runner died"),
    )
    with make_client(server.url) as client:
        conv = Conversation(client, "m", tools=[get_time])
        with pytest.raises(ServerError):
            conv.send("time in Paris?")
        assert conv.messages == []
    assert calls == ["Paris"]  # the tool did run; its turn is gone with the send


def test_a_failing_callback_restores_the_history(
    server: FakeOllama, make_client: MakeClient
) -> None:
    def on_content(_: str) -> None:
        raise RuntimeError("the window closed")

    with make_client(server.url) as client:
        conv = Conversation(client, "m")
        with pytest.raises(CallbackError):
            conv.send("hi", on_content=on_content)
        assert conv.messages == []


def test_a_cancelled_send_keeps_what_was_said(
    server: FakeOllama, make_client: MakeClient
) -> None:
    server.enqueue([Chunk(content="partial answer"), Stall()], reply("next"))
    got = threading.Event()
    with make_client(server.url) as client:
        conv = Conversation(client, "m")
        handle = conv.start_send("question", on_content=lambda _: got.set())
        assert got.wait(WAIT)
        handle.cancel()
        assert handle.result(WAIT).cancelled
        assert conv.messages == [
            {"role": "user", "content": "question"},
            {"role": "assistant", "content": "partial answer"},
        ]
        conv.send("go on")
    assert [m["role"] for m in sent_messages(server)] == ["user", "assistant", "user"]


def test_tool_rounds_exceeded_keeps_its_valid_history(
    server: FakeOllama, make_client: MakeClient
) -> None:
    call = tool_call("lookup", {"q": "x"}, id="call_1")
    server.enqueue(*[reply(tool_calls=[call]) for _ in range(3)])
    with make_client(server.url) as client:
        conv = Conversation(
            client,
            "m",
            tools=[({"function": {"name": "lookup"}}, lambda q: q)],
            max_tool_rounds=1,
        )
        with pytest.raises(ToolRoundsExceeded):
            conv.send("look it up")
        history = conv.messages
    assert [m["role"] for m in history] == [
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
    ]
    # Every tool call is answered: the history can be sent as it is.
    for i, message in enumerate(history):
        if message["role"] == "assistant":
            ids = [c["id"] for c in message["tool_calls"]]
            assert history[i + 1]["tool_call_id"] in ids


# -- 15. non-JSON error bodies; a host URL with an API path --


@pytest.mark.parametrize(
    "path", ["/api", "/api/", "/v1", "/v1/", "/api/chat", "/ollama/api", "/openai/v1"]
)
def test_a_host_url_with_an_api_path_is_refused_at_construction(
    server: FakeOllama, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = server.url + path
    with pytest.raises(ValueError, match="path"):
        StreamingClient(url)
    with pytest.raises(ValueError, match="path"):
        StreamingClient(hosts=[server.url, url])
    with pytest.raises(ValueError, match="path"):
        StreamingClient(client=ollama.Client(host=url))
    with pytest.raises(ValueError, match="path"):
        StreamingClient(url, session=requests.Session())
    monkeypatch.setenv("OLLAMA_HOST", url)
    with pytest.raises(ValueError, match="path"):
        StreamingClient()
    assert server.stream_requests() == []
