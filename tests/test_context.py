"""Context windows: model_info, capability errors, context=, history_limit= and the
warning of a prompt the server cut, against a FakeOllama that truncates as the
server does (server/prompt.go, llm/llama_server.go)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest

from ollama_stream_sync import (
    CapabilityError,
    ContextLengthExceeded,
    ContextTruncatedWarning,
    Conversation,
    ModelInfo,
    ModelNotFound,
    StreamingClient,
    Trim,
    Warn,
)
from ollama_stream_sync.testing import (
    FakeOllama,
    RecordedRequest,
    chat_prompt,
    count_tokens,
    http_error,
    reply,
    tool_call,
)

from .support import USER
from .support.clients import MakeClient

SMALL = {
    "name": "small",
    "capabilities": ["completion", "tools"],
    "details": {"family": "qwen2", "parameter_size": "0.5B"},
    "context_length": 8192,
    "parameters": {"num_ctx": 256},
}
THINKER = {"name": "thinker", "capabilities": ["completion", "tools", "thinking"]}
OLD = {"name": "old", "capabilities": None}  # /api/show without capabilities
PLAIN = {"name": "plain", "capabilities": ["completion"]}
IMAGE = "iVBORw0KGgo="


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama(models=[SMALL, THINKER, OLD, PLAIN]) as server:
        yield server


def words(count: int, start: int = 0) -> str:
    """Words of four characters at most: one token to FakeOllama and to us."""
    return " ".join(f"w{i % 1000}" for i in range(start, start + count))


def history(tokens: int) -> list[dict[str, Any]]:
    """A system prompt, user/assistant turns, a question: ``tokens`` in all,
    counted as FakeOllama counts them."""
    out: list[dict[str, Any]] = [{"role": "system", "content": "Be brief."}]
    turn = 0
    while count_tokens(chat_prompt(out)) + 60 < tokens:
        out += [
            {"role": "user", "content": f"q{turn} " + words(20)},
            {"role": "assistant", "content": f"a{turn} " + words(20)},
        ]
        turn += 1
    rest = tokens - count_tokens(chat_prompt(out)) - 1  # the question's <|user|>
    out.append({"role": "user", "content": words(rest)})
    assert count_tokens(chat_prompt(out)) == tokens
    return out


def chats(fake: FakeOllama) -> list[RecordedRequest]:
    return [r for r in fake.requests if r.path == "/api/chat"]


def shows(fake: FakeOllama) -> int:
    return sum(r.path == "/api/show" for r in fake.requests)


def prompt_of(request: RecordedRequest) -> int:
    """What FakeOllama counts in a request's whole prompt."""
    return count_tokens(
        chat_prompt(request.body["messages"], request.body.get("tools"))
    )


# -- model_info -------------------------------------------------------------------


def test_model_info_reads_show_once_per_host_and_model(
    fake: FakeOllama, make_client: MakeClient
) -> None:
    with make_client(fake.url) as client:
        info = client.model_info("small")
        assert info == ModelInfo(
            name="small",
            context_length=8192,
            num_ctx=256,
            capabilities=("completion", "tools"),
            family="qwen2",
            parameter_size="0.5B",
            quantization="Q4_K_M",
        )
        assert client.model_info("small:latest") is info and shows(fake) == 1
        assert client.model_info("thinker").capabilities == (
            "completion",
            "tools",
            "thinking",
        )
        assert client.model_info("old").capabilities is None
        client.create("small2", from_="small")  # a create forgets what was shown
        assert client.model_info("small") == info and shows(fake) == 4
        with pytest.raises(ModelNotFound):
            client.model_info("missing")


# -- capabilities -----------------------------------------------------------------


def test_the_servers_capability_refusals_are_capability_errors(
    fake: FakeOllama, make_client: MakeClient
) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {}}}
    with make_client(fake.url) as client:
        with pytest.raises(CapabilityError) as think:
            client.chat("small", USER, think=True)
        with pytest.raises(CapabilityError) as tools:
            client.chat("plain", USER, tools=[tool], think=False)
        assert client.chat("small", [{**USER[0], "images": [IMAGE]}]).done
    assert (think.value.capability, think.value.status_code) == ("thinking", 400)
    assert "leave out think=" in str(think.value)
    assert tools.value.capability == "tools" and not tools.value.before_sending
    assert shows(fake) == 0  # nothing asked beforehand by default


def test_check_capabilities_refuses_before_sending(
    fake: FakeOllama, make_client: MakeClient
) -> None:
    with make_client(fake.url, check_capabilities=True) as client:
        with pytest.raises(CapabilityError) as think:
            client.chat("small", USER, think="high")
        with pytest.raises(CapabilityError) as vision:  # the server takes these
            client.chat("small", [{**USER[0], "images": [IMAGE]}])
        with pytest.raises(CapabilityError) as insert:
            client.generate("small", "def f(", suffix="return 1")
        assert insert.value.capability == "insert"
        assert client.chat("thinker", USER, think=True).done
        assert client.chat("old", USER, think=True).done  # unknown: not blocked
        assert client.chat("unlisted", USER, think=True).done  # no /api/show
        off = client.chat("small", USER, check_capabilities=False)
    assert (think.value.capability, vision.value.capability) == ("thinking", "vision")
    assert think.value.before_sending and think.value.model == "small"
    assert str(think.value).startswith('"small" does not support thinking (found')
    assert [r.body["model"] for r in chats(fake)] == [
        "thinker",
        "old",
        "unlisted",
        "small",
    ]
    assert off.done and shows(fake) == 4  # small, thinker, old and unlisted, once


def test_a_conversation_checks_capabilities_per_send(
    fake: FakeOllama, make_client: MakeClient
) -> None:
    with make_client(fake.url) as client:
        conv = Conversation(client, "small", think=True)
        with pytest.raises(CapabilityError):
            conv.send("Hi", check_capabilities=True)
        assert conv.messages == [] and chats(fake) == []


@pytest.mark.parametrize(
    ("message", "tokens", "context"),
    [
        (
            '{"error":{"code":400,"message":"request (5000 tokens) exceeds the '
            'available context size (4096 tokens), try increasing it",'
            '"type":"exceed_context_size_error"}}',
            5000,
            4096,
        ),
        ("the input length exceeds the context length", None, None),
    ],
)
def test_context_refusals_of_every_server_version_are_typed(
    server: FakeOllama, make_client: MakeClient, message: str, tokens: Any, context: Any
) -> None:
    server.enqueue(http_error(400, message))
    with (
        make_client(server.url) as client,
        pytest.raises(ContextLengthExceeded) as info,
    ):
        client.chat("m", USER)
    assert (info.value.prompt_tokens, info.value.context_length) == (tokens, context)
    assert info.value.status_code == 400


# -- a history just over the context: never cut silently ----------------------------


def test_a_history_two_percent_over_is_resized_by_auto(
    fake: FakeOllama, make_client: MakeClient
) -> None:
    messages = history(261)  # num_ctx 256: the server would drop the oldest
    with make_client(fake.url) as client:
        result = client.chat("small", messages, context="auto")
    (request,) = chats(fake)
    assert request.body["truncate"] is False
    assert request.body["options"]["num_ctx"] == 512
    assert result.prompt_eval_count == 261 and not result.prompt_truncated


def test_a_history_two_percent_over_a_fixed_context_is_an_error(
    fake: FakeOllama, make_client: MakeClient
) -> None:
    with make_client(fake.url) as client, pytest.raises(ContextLengthExceeded) as info:
        client.chat("small", history(261), context=256)
    assert (info.value.prompt_tokens, info.value.context_length) == (261, 256)
    assert len(chats(fake)) == 1  # refused by the server: nothing to resend


def test_a_history_two_percent_over_is_trimmed_and_reported(
    fake: FakeOllama, make_client: MakeClient
) -> None:
    messages = history(261)
    trims: list[list[dict[str, Any]]] = []
    with make_client(fake.url) as client:
        saved = {"version": 1, "model": "small", "messages": messages[:-1]}
        conv = Conversation.from_json(client, saved | {"history_limit": "auto"})
        result = conv.send(messages[-1]["content"], on_trim=trims.append)
    (request,) = chats(fake)
    assert request.body["truncate"] is False
    assert result.prompt_eval_count == prompt_of(request)  # the server kept all
    assert trims and [m for t in trims for m in t] == conv.dropped
    assert conv.dropped == messages[1 : 1 + len(conv.dropped)]  # the oldest
    assert conv.messages[0] == messages[0]  # the system prompt stays


def test_exactly_at_the_limit_nothing_happens(
    fake: FakeOllama, make_client: MakeClient
) -> None:
    messages = history(255)  # the most that fits num_ctx 256: one slot to answer
    warned: list[Warning] = []
    with make_client(fake.url) as client:
        fixed = client.chat("small", messages, context=256, on_warning=warned.append)
        server = client.chat("small", messages, on_warning=warned.append)
    assert fixed.prompt_eval_count == server.prompt_eval_count == 255
    assert not fixed.prompt_truncated and not server.prompt_truncated
    assert warned == [] and len(chats(fake)) == 2


def test_a_code_heavy_prompt_over_the_limit_is_caught(make_client: MakeClient) -> None:
    code = "x[0] = f(y, z[1]); " * 12  # 168 tokens in 228 characters
    messages = [{"role": "user", "content": code}]
    warned: list[Warning] = []
    with FakeOllama(context_shift=True) as fake, make_client(fake.url) as client:
        shifted = client.chat(
            "m", messages, options={"num_ctx": 128}, on_warning=warned.append
        )
        with pytest.raises(ContextLengthExceeded):
            client.chat("m", messages, context=128)
    assert shifted.prompt_eval_count == 128 - (128 - 4) // 2
    assert shifted.prompt_truncated
    assert [type(w) for w in warned] == [ContextTruncatedWarning]
    assert "kept the last 66 tokens" in str(warned[0])


def test_a_cut_prompt_warns_through_warnings_and_the_stream(
    make_client: MakeClient,
) -> None:
    messages = [{"role": "user", "content": words(300)}]
    with FakeOllama(context_shift=True) as fake, make_client(fake.url) as client:
        with pytest.warns(ContextTruncatedWarning):
            events = list(client.stream_chat("m", messages, options={"num_ctx": 64}))
    (warn,) = [e for e in events if isinstance(e, Warn)]
    assert isinstance(warn.warning, ContextTruncatedWarning)


# -- refusals: learn, trim or resize, resend ------------------------------------------


def test_a_refusal_teaches_the_window_and_the_send_is_resent(
    fake: FakeOllama, make_client: MakeClient
) -> None:
    messages = history(400)
    shown: list[str] = []
    with make_client(fake.url) as client:
        saved = {"version": 1, "model": "small", "messages": messages[:-1]}
        conv = Conversation.from_json(client, saved | {"history_limit": 10_000})
        answer = conv.send(messages[-1]["content"], on_content=shown.append)
    refused, sent = chats(fake)
    assert prompt_of(refused) == 400 and prompt_of(sent) < 256
    assert answer.content == "".join(shown) == "Hello from the fake Ollama server."
    assert conv.dropped and conv.messages[-1]["content"] == answer.content


def test_an_older_servers_refusal_without_counts_is_resent_trimmed(
    fake: FakeOllama, make_client: MakeClient
) -> None:
    fake.enqueue(http_error(400, "the input length exceeds the context length"))
    messages = history(200)
    with make_client(fake.url) as client:
        saved = {"version": 1, "model": "small", "messages": messages[:-1]}
        conv = Conversation.from_json(client, saved | {"history_limit": 190})
        conv.send(messages[-1]["content"])
    first, second = chats(fake)
    assert len(second.body["messages"]) < len(first.body["messages"])


def test_auto_grows_num_ctx_once_per_doubling_and_never_lets_the_server_drop(
    make_client: MakeClient,
) -> None:
    model = {"name": "long", "context_length": 1 << 14, "parameters": {"num_ctx": 256}}
    with FakeOllama(models=[model]) as fake, make_client(fake.url) as client:
        conv = Conversation(client, "long", context="auto")
        counts = [conv.send(words(60, turn)).prompt_eval_count for turn in range(40)]
    requests = chats(fake)
    assert all(r.body["truncate"] is False for r in requests)
    needs = [prompt_of(r) + 256 // 4 for r in requests]  # with room to answer
    assert counts == [n - 64 for n in needs]  # the server kept every message
    sizes = [r.body["options"]["num_ctx"] for r in requests]
    assert sizes == sorted(sizes) and all(map(int.__ge__, sizes, needs))
    assert sizes[-1] / sizes[0] == 16
    # One change per doubling of the history, give or take the turn it shows in.
    turn = max(b - a for a, b in itertools.pairwise(needs))
    changes = [i for i in range(1, len(sizes)) if sizes[i] != sizes[i - 1]]
    assert len(changes) == 4
    for before, after in itertools.pairwise(changes):
        assert needs[after] >= 2 * needs[before] - 2 * turn


def test_auto_refuses_before_sending_what_the_model_cannot_hold(
    fake: FakeOllama, make_client: MakeClient
) -> None:
    with make_client(fake.url) as client, pytest.raises(ContextLengthExceeded) as info:
        client.chat(
            "small", [{"role": "user", "content": words(20_000)}], context="auto"
        )
    assert info.value.before_sending and info.value.context_length == 8192
    assert chats(fake) == []


# -- long conversations ---------------------------------------------------------------


def clock() -> str:
    """The time."""
    return "12:00"


def test_two_hundred_turns_with_tools_never_overflow(
    make_client: MakeClient,
) -> None:
    model: dict[str, Any] = {"name": "tooly", "capabilities": ["completion", "tools"]}
    model |= {"context_length": 512, "parameters": {"num_ctx": 512}}
    trims: list[list[dict[str, Any]]] = []
    with FakeOllama(models=[model]) as fake, make_client(fake.url) as client:
        conv = Conversation(
            client, "tooly", system="Be brief.", tools=[clock], history_limit="auto"
        )
        for turn in range(200):
            fake.enqueue(
                reply(tool_calls=[tool_call("clock")]), reply(f"Noon, {turn}.")
            )
            conv.send(
                f"What time is it now, {turn}? " + words(30, turn), on_trim=trims.append
            )
    requests = chats(fake)
    assert len(requests) == 400  # no refusal, no resend
    for request in requests:
        messages = request.body["messages"]
        assert messages[0] == {"role": "system", "content": "Be brief."}
        assert messages[1]["role"] == "user"  # whole turns only
        for i, message in enumerate(messages):
            if message["role"] == "tool":
                assert messages[i - 1]["tool_calls"]  # never a result alone
        assert prompt_of(request) < 512
    everything = conv.dropped + conv.messages[1:]
    assert len(everything) == 4 * 200 and [m for t in trims for m in t] == conv.dropped
    assert [m["content"] for m in everything if m["role"] == "assistant"][1::2] == [
        f"Noon, {turn}." for turn in range(200)
    ]


def test_trims_reach_the_stream_and_survive_a_save(
    fake: FakeOllama, make_client: MakeClient
) -> None:
    with make_client(fake.url) as client:
        conv = Conversation(client, "small", history_limit=120)
        for turn in range(3):
            conv.send(words(40, turn))
        events = list(conv.stream_send(words(40, 3)))
        restored = Conversation.from_json(client, conv.to_json())
    trims = [e for e in events if isinstance(e, Trim)]
    assert trims and list(trims[-1].dropped) == conv.dropped[-len(trims[-1].dropped) :]
    assert restored.dropped == conv.dropped and restored.messages == conv.messages
    assert json.loads(conv.to_json())["history_limit"] == 120


def test_a_failed_send_after_a_trim_leaves_only_the_trim(
    fake: FakeOllama, make_client: MakeClient
) -> None:
    with make_client(fake.url) as client:
        conv = Conversation(client, "small", history_limit=120)
        for turn in range(3):
            conv.send(words(40, turn))
        before, dropped = conv.messages, conv.dropped
        fake.enqueue(http_error(500, "runner crashed"))
        with pytest.raises(Exception, match="runner crashed"):
            conv.send(words(40, 3))
    gone = len(conv.dropped) - len(dropped)
    assert gone and conv.messages == before[gone:]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"context": 0}, ValueError),
        ({"context": "big"}, TypeError),
        ({"context": True}, TypeError),
        ({"context": "auto", "truncate": True}, ValueError),
    ],
)
def test_bad_context_arguments_fail_at_the_call(
    kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with StreamingClient("http://127.0.0.1:9") as client, pytest.raises(error):
        client.start_chat("m", USER, **kwargs)
    with StreamingClient("http://127.0.0.1:9") as client, pytest.raises(TypeError):
        Conversation(client, "m", history_limit=1.5)  # type: ignore[arg-type]
