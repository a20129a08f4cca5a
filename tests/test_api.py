"""The public face: names, signatures kept in step with the SDK, help(), types,
the error tree and the declared dependencies.

Usage errors, typos and warnings of the first hour: test_usage_errors.py.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import os
import pathlib
import pickle
import pydoc
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import ollama
import pytest
from packaging.requirements import Requirement

import ollama_stream_sync
import ollama_stream_sync as oss
from ollama_stream_sync import (
    ConnectionFailed,
    ModelNotFound,
    StreamError,
    StreamingClient,
    StreamTimeout,
)
from ollama_stream_sync.testing import FakeOllama, Stall, reply

from .support import USER
from .support.clients import new_client

ROOT = Path(__file__).resolve().parent.parent

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
        (StreamingClient.embed, ollama.Client.embed),
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
    embed = inspect.signature(StreamingClient.embed)
    sdk = inspect.signature(ollama.Client.embed)
    assert list(embed.parameters)[:7] == list(sdk.parameters)  # positional order


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
    sdk.close()  # type: ignore[no-untyped-call]  # the SDK's own annotation gap


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


# -- help() and types --------------------------------------------------------------


def test_help_shows_chat_itself() -> None:
    text = pydoc.render_doc(StreamingClient.chat, renderer=pydoc.plaintext)  # type: ignore[attr-defined]
    assert "chat(self, model: 'str'" in text or "chat(" in text.splitlines()[2]
    assert "-> 'ChatResult'" in text
    assert "start_chat" not in text.splitlines()[2]
    assert inspect.signature(StreamingClient.chat).return_annotation == "ChatResult"
    assert "block until it ends" in (StreamingClient.chat.__doc__ or "")


def test_help_lists_every_callback_and_setting() -> None:
    text = pydoc.render_doc(StreamingClient.chat, renderer=pydoc.plaintext)  # type: ignore[attr-defined]
    for name in oss.CallOptions.__annotations__:
        assert f"{name}: " in text, name
    pull = pydoc.render_doc(StreamingClient.pull, renderer=pydoc.plaintext)  # type: ignore[attr-defined]
    assert "on_progress: each progress line" in pull


TYPO = textwrap.dedent(
    """
    from ollama_stream_sync import Conversation, StreamingClient

    client = StreamingClient()
    conv = Conversation(client, "qwen3")
    conv.send("x", on_contnet=print)
    client.chat("qwen3", [], on_content=42)
    """
)
PYRIGHT = Path(sys.executable).parent / "pyright"


@pytest.fixture(scope="module")
def type_checkers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, subprocess.Popen[str]]]:
    """mypy and pyright on ``TYPO``, started together: each takes seconds, and
    each in a process of its own (mypy in this one would leave a million
    objects behind, and every later garbage collection would walk them)."""
    path = tmp_path_factory.mktemp("typo") / "typo.py"
    path.write_text(TYPO)
    checkers = {
        "mypy": [sys.executable, "-m", "mypy", "--strict", "--no-incremental"],
    }
    pyright = PYRIGHT if PYRIGHT.exists() else shutil.which("pyright")
    if pyright is not None:
        checkers["pyright"] = [str(pyright)]
    running = {
        name: subprocess.Popen(
            [*argv, str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        for name, argv in checkers.items()
    }
    yield running
    for process in running.values():
        if process.poll() is None:
            process.kill()
        process.communicate()


def checked(checker: subprocess.Popen[str]) -> tuple[int, str]:
    """Its exit status and output, once it ended (bounded: it measures nothing)."""
    out, err = checker.communicate(timeout=300)
    return checker.returncode, out + err


@pytest.mark.xdist_group("type-checkers")  # one run of the checkers
def test_a_callback_typo_is_a_type_error_under_mypy(
    type_checkers: dict[str, subprocess.Popen[str]],
) -> None:
    status, out = checked(type_checkers["mypy"])
    assert status == 1, out
    assert "on_contnet" in out
    assert 'Argument "on_content"' in out or "on_content" in out


@pytest.mark.xdist_group("type-checkers")  # one run of the checkers
def test_a_callback_typo_is_a_type_error_under_pyright(
    type_checkers: dict[str, subprocess.Popen[str]],
) -> None:
    if "pyright" not in type_checkers:
        pytest.skip("pyright is not installed (pip install '.[dev]')")
    status, out = checked(type_checkers["pyright"])
    assert status == 1, out
    assert "on_contnet" in out
    assert "on_content" in out


# -- errors -----------------------------------------------------------------------


def test_timeouts_are_builtin_timeout_errors(server: FakeOllama) -> None:
    server.enqueue([Stall()])
    with new_client(server.url, first_token_timeout=0.2) as client:
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


# -- dependencies -----------------------------------------------------------------


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
