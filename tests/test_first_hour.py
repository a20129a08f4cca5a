"""The first hour with the library: errors that say what to do, signatures and types
a Python developer expects, and warnings for silent mistakes."""

from __future__ import annotations

import inspect
import pickle
import pydoc
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest

import ollama_stream_sync as oss
from ollama_stream_sync import (
    ConnectionFailed,
    ModelNotFound,
    StreamError,
    StreamingClient,
    StreamTimeout,
    ToolSchemaWarning,
    UnknownOptionWarning,
)
from ollama_stream_sync.testing import FakeOllama, Stall, reply

from .conftest import USER, MakeClient

ROOT = Path(__file__).resolve().parent.parent


# -- errors that tell the user what to do ----------------------------------------


def test_timeouts_are_builtin_timeout_errors(
    server: FakeOllama, make_client: MakeClient
) -> None:
    server.enqueue([Stall()])
    with make_client(server.url, first_token_timeout=0.2) as client:
        with pytest.raises(TimeoutError) as info:
            client.chat("m", USER)
    assert isinstance(info.value, StreamTimeout) and isinstance(info.value, StreamError)
    assert info.value.which == "first_token"
    assert info.value.url == server.url


@pytest.mark.parametrize(
    "error",
    [
        ConnectionFailed("refused", during_connect=True, url="http://h:1", model="m"),
        StreamTimeout("slow", which="read", url="http://h:1"),
        ModelNotFound("model 'x' not found", status_code=404, url="http://h:1"),
    ],
)
def test_errors_pickle_with_their_attributes(error: StreamError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.__dict__ == error.__dict__


def test_public_errors_show_the_package_in_tracebacks() -> None:
    for name in oss.__all__:
        obj = getattr(oss, name)
        if isinstance(obj, type) and issubclass(obj, (Exception, Warning)):
            assert obj.__module__ == "ollama_stream_sync", name
    assert repr(ConnectionFailed("x")).startswith("ConnectionFailed(")


# -- signatures and types ----------------------------------------------------------


def test_help_shows_chat_itself() -> None:
    text = pydoc.render_doc(StreamingClient.chat, renderer=pydoc.plaintext)
    assert "chat(self, model: 'str'" in text or "chat(" in text.splitlines()[2]
    assert "-> 'ChatResult'" in text
    assert "start_chat" not in text.splitlines()[2]
    assert inspect.signature(StreamingClient.chat).return_annotation == "ChatResult"
    assert "block until it ends" in (StreamingClient.chat.__doc__ or "")


TYPO = textwrap.dedent(
    """
    from ollama_stream_sync import Conversation, StreamingClient

    client = StreamingClient()
    conv = Conversation(client, "qwen3")
    conv.send("x", on_contnet=print)
    client.chat("qwen3", [], on_content=42)
    """
)


def test_a_callback_typo_is_a_type_error_under_mypy(tmp_path: Path) -> None:
    # A process of its own: mypy in this one would leave a million objects
    # behind, and every later garbage collection of the suite would walk them.
    path = tmp_path / "typo.py"
    path.write_text(TYPO)
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
    )
    out, status = done.stdout, done.returncode
    assert status == 1, out + done.stderr
    assert "on_contnet" in out
    assert 'Argument "on_content"' in out or "on_content" in out


@pytest.mark.skipif(
    shutil.which("pyright") is None
    and not (Path(sys.executable).parent / "pyright").exists(),
    reason="pyright is not installed (pip install '.[dev]')",
)
def test_a_callback_typo_is_a_type_error_under_pyright(tmp_path: Path) -> None:
    path = tmp_path / "typo.py"
    path.write_text(TYPO)
    pyright = Path(sys.executable).parent / "pyright"
    done = subprocess.run(
        [str(pyright if pyright.exists() else "pyright"), str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert done.returncode == 1, done.stdout
    assert "on_contnet" in done.stdout
    assert "on_content" in done.stdout


def test_typos_are_type_errors_at_run_time_too(client: StreamingClient) -> None:
    kwargs: Any = {"on_contnet": print}
    with pytest.raises(TypeError, match="on_contnet"):
        client.start_chat("m", USER, **kwargs)


# -- warnings for silent mistakes ---------------------------------------------------


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
    server: FakeOllama, client: StreamingClient, transport: str
) -> None:
    typo = f"temprature_{transport}"  # once per key and process: one per run here
    server.enqueue(reply("a"), reply("b"))
    with pytest.warns(UnknownOptionWarning, match=typo):
        client.chat("m", USER, options={typo: 0.2, "min_p": 0.05})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        client.chat("m", USER, options={typo: 0.2, "num_ctx": 4096})
    assert server.stream_requests()[0].body["options"][typo] == 0.2


# -- the rough edges of the first hour ------------------------------------------------


def test_help_lists_every_callback_and_setting() -> None:
    text = pydoc.render_doc(StreamingClient.chat, renderer=pydoc.plaintext)
    for name in oss.CallOptions.__annotations__:
        assert f"{name}: " in text, name
    pull = pydoc.render_doc(StreamingClient.pull, renderer=pydoc.plaintext)
    assert "on_progress: each progress line" in pull


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
    client: StreamingClient,
) -> None:
    with pytest.raises(TypeError, match=r"options=\{'temperature': \.\.\.\}"):
        client.chat("m", USER, temperature=0.2)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="did you mean 'on_content'"):
        client.chat("m", USER, on_contnet=print)  # type: ignore[call-arg]


def test_an_unknown_option_suggests_the_nearest_and_points_at_the_caller(
    server: FakeOllama, client: StreamingClient, transport: str
) -> None:
    server.enqueue(reply("a"))
    typo = f"num_ctxx{transport}"[:8] if transport == "httpx" else "num_predictt"
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
    client: StreamingClient, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        client.start_chat("m", USER, **kwargs)


def test_a_conversation_refuses_a_think_it_cannot_send(client: StreamingClient) -> None:
    with pytest.raises(ValueError, match="think must be"):
        oss.Conversation(client, "m", think="sometimes")


def test_a_closed_client_says_so(server: FakeOllama) -> None:
    client = StreamingClient(server.url)
    client.close()
    for call in (client.health, client.loaded_models):
        with pytest.raises(RuntimeError, match="this StreamingClient is closed"):
            call()
    with pytest.raises(RuntimeError, match="this StreamingClient is closed"):
        client.chat("m", USER)
