"""The first hour: a mistake raises at once, where it was made, naming what to
fix, and sends nothing; a silent mistake warns once.

Checking arguments is the client's, before any thread or socket: these run
once, mostly on the in-memory transport.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

import ollama
import pytest
import requests

import ollama_stream_sync as oss
from ollama_stream_sync import (
    Conversation,
    StreamingClient,
    ToolSchemaWarning,
    UnknownOptionWarning,
)
from ollama_stream_sync.testing import FakeOllama, reply

from .support import USER
from .support.memory import MemoryTransport


def stream_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("ollama-stream-")}


# -- a bad argument raises at once, naming it ------------------------------------------


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
def test_a_bad_client_argument_raises_at_once_naming_it(name: str, value: Any) -> None:
    with pytest.raises((TypeError, ValueError), match=name):
        StreamingClient("http://127.0.0.1:1", **{name: value})


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
def test_a_bad_call_argument_raises_at_once_naming_it(
    memory: MemoryTransport, memory_chat: StreamingClient, name: str, value: Any
) -> None:
    before = stream_threads()
    for call in ("chat", "start_chat", "generate", "start_generate"):
        method = getattr(memory_chat, call)
        first = USER if "chat" in call else "prompt"
        with pytest.raises((TypeError, ValueError), match=name):
            method("m", first, **{name: value})
        assert memory_chat.active_streams() == [], call
    assert stream_threads() == before  # no worker thread was started
    assert memory.requests == []  # nothing was sent


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"model": ""}, ValueError),
        ({"messages": "hi"}, TypeError),
        ({"messages": [{"content": "no role"}]}, ValueError),
        ({"messages": [42]}, TypeError),
        ({"tools": [42]}, TypeError),
    ],
)
def test_bad_arguments_raise_before_any_thread_starts(
    memory: MemoryTransport,
    memory_chat: StreamingClient,
    kwargs: dict[str, Any],
    error: type,
) -> None:
    args: dict[str, Any] = {"model": "m", "messages": USER} | kwargs
    with pytest.raises(error):
        memory_chat.start_chat(**args)
    assert memory.requests == []
    assert memory_chat.active_streams() == []


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
    memory: MemoryTransport, memory_chat: StreamingClient, name: str, value: Any
) -> None:
    with pytest.raises((TypeError, ValueError), match=name):
        Conversation(memory_chat, "m", **{name: value})
    assert memory.requests == []


@pytest.mark.parametrize(
    ("name", "value"), [("on_content", 5), ("on_tool_result", "x"), ("on_contnet", 1)]
)
def test_a_bad_send_argument_raises_at_once_and_keeps_the_history(
    memory: MemoryTransport, memory_chat: StreamingClient, name: str, value: Any
) -> None:
    conv = Conversation(memory_chat, "m", system="Be brief.")
    with pytest.raises((TypeError, ValueError), match=name):
        conv.send("hi", **{name: value})
    assert conv.messages == [{"role": "system", "content": "Be brief."}]
    assert memory.requests == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"messages": [{"role": "user", "content": b"bytes"}]},
        {"messages": USER, "options": {"temperature": object()}},
    ],
    ids=["bytes-content", "object-in-options"],
)
def test_a_value_json_cannot_encode_raises_at_once(
    memory: MemoryTransport, memory_chat: StreamingClient, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(TypeError, match="JSON"):
        memory_chat.start_chat("m", **kwargs)
    assert memory_chat.active_streams() == []
    conv = Conversation(memory_chat, "m")
    with pytest.raises(TypeError, match="JSON"):
        conv.send({"role": "user", "content": b"bytes"})
    assert conv.messages == []
    assert memory.requests == []


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


@pytest.mark.parametrize(
    ("host", "says"),
    [
        ("htp://127.0.0.1:11434", "must start with http:// or https://"),
        ("http://127.0.0.1:115OO", "port that is not a number"),
    ],
)
def test_a_host_typo_is_a_usage_error_naming_host(host: str, says: str) -> None:
    with pytest.raises(ValueError, match=says) as caught:
        StreamingClient(host)
    assert host in str(caught.value)


def test_a_timeout_argument_points_at_the_stream_timeouts() -> None:
    with pytest.raises(TypeError, match="read_timeout=") as caught:
        StreamingClient("http://127.0.0.1:1", timeout=0.5)
    assert "first_token_timeout=" in str(caught.value)


def test_an_unknown_client_argument_names_the_client_not_httpx() -> None:
    with pytest.raises(TypeError, match="StreamingClient got an unexpected") as caught:
        StreamingClient("http://127.0.0.1:1", verbose=True)
    assert "'verbose'" in str(caught.value)


def test_a_model_option_as_a_keyword_says_where_it_goes(
    memory_chat: StreamingClient,
) -> None:
    with pytest.raises(TypeError, match=r"options=\{'temperature': \.\.\.\}"):
        memory_chat.chat("m", USER, temperature=0.2)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="did you mean 'on_content'"):
        memory_chat.chat("m", USER, on_contnet=print)  # type: ignore[call-arg]


def test_an_unknown_option_suggests_the_nearest_and_points_at_the_caller(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue(reply("a"))
    typo = "num_predictt"  # once per key and process: no other test uses it
    with pytest.warns(UnknownOptionWarning, match="did you mean") as caught:
        client.chat("m", USER, options={typo: 1})
    assert caught[0].filename == __file__


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"options": {"temperature": "hot"}}, TypeError),
        ({"options": {"num_ctx": 4096.5}}, TypeError),
        ({"think": "yes"}, ValueError),
    ],
)
def test_wrong_values_fail_at_the_call_not_as_a_400(
    memory_chat: StreamingClient, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        memory_chat.start_chat("m", USER, **kwargs)


def test_a_conversation_refuses_a_think_it_cannot_send(
    memory_chat: StreamingClient,
) -> None:
    with pytest.raises(ValueError, match="think must be"):
        oss.Conversation(memory_chat, "m", think="sometimes")


def test_a_closed_client_says_so(server: FakeOllama) -> None:
    client = StreamingClient(server.url)
    client.close()
    for call in (client.health, client.loaded_models):
        with pytest.raises(RuntimeError, match="this StreamingClient is closed"):
            call()
    with pytest.raises(RuntimeError, match="this StreamingClient is closed"):
        client.chat("m", USER)


def test_typos_are_type_errors_at_run_time_too(memory_chat: StreamingClient) -> None:
    kwargs: Any = {"on_contnet": print}
    with pytest.raises(TypeError, match="on_contnet"):
        memory_chat.start_chat("m", USER, **kwargs)


# -- warnings for silent mistakes --------------------------------------------------


def test_a_tool_without_hints_or_docstring_warns_once(
    server: FakeOllama, client: StreamingClient
) -> None:
    def lookup(city, when):  # type: ignore[no-untyped-def]  # the mistake under test
        return "rain"

    server.enqueue(reply("a"), reply("b"))
    with pytest.warns(ToolSchemaWarning) as record:
        client.chat("m", USER, tools=[lookup])
    (warning,) = record
    text = str(warning.message)
    assert (
        "lookup" in text and "city" in text and "when" in text and "docstring" in text
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        client.chat("m", USER, tools=[lookup])  # once per function: silent now


def test_a_documented_typed_tool_does_not_warn(
    server: FakeOllama, client: StreamingClient
) -> None:
    def weather(city: str) -> str:
        """The weather in a city.

        Args:
            city: where.
        """
        return "rain"

    server.enqueue(reply("a"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        client.chat("m", USER, tools=[weather])


def test_an_unknown_option_key_warns_once_and_is_sent(
    server: FakeOllama, client: StreamingClient
) -> None:
    typo = "temprature_once"  # once per key and process: no other test uses it
    server.enqueue(reply("a"), reply("b"))
    with pytest.warns(UnknownOptionWarning, match=typo):
        client.chat("m", USER, options={typo: 0.2, "min_p": 0.05})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        client.chat("m", USER, options={typo: 0.2, "num_ctx": 4096})
    assert server.stream_requests()[0].body["options"][typo] == 0.2
