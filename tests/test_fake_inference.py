"""The fake Ollama's embed, show, capability checks and context windows.

Each behaviour is checked through the real SDK (``ollama.Client``) and, where the
SDK hides the wire (status, content type, fields it drops), through raw HTTP.
The expected values come from Ollama's source: server/routes.go (EmbedHandler,
ChatHandler, ShowHandler), server/prompt.go (chatPrompt), llm/llama_server.go.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from typing import Any

import ollama
import pytest

from ollama_stream_sync.testing import (
    FakeOllama,
    Stall,
    chat_prompt,
    count_tokens,
    embedding,
    http_error,
    reply,
)

from .support import USER, WAIT
from .support.sockets import raw_exchange

EMBEDDER = {
    "name": "nomic-embed-text",
    "capabilities": ["embedding"],
    "details": {"family": "nomic-bert", "parameter_size": "137M"},
    "context_length": 2048,
    "embedding_length": 8,
}
QWEN2 = {"name": "qwen2", "capabilities": ["completion"]}
QWEN3 = {
    "name": "qwen3",
    "capabilities": ["completion", "tools", "thinking"],
    "details": {"family": "qwen3", "parameter_size": "8.2B"},
    "context_length": 40960,
    "parameters": {"num_ctx": 8192, "stop": ["<|im_start|>", "<|im_end|>"]},
}
TOOL = {"type": "function", "function": {"name": "f", "parameters": {}}}
TOO_LONG = "exceeds the available context size"


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama(models=["fake-model", EMBEDDER, QWEN2, QWEN3]) as server:
        yield server


@pytest.fixture
def client(fake: FakeOllama) -> Iterator[ollama.Client]:
    with ollama.Client(fake.url) as sdk:
        yield sdk


def post(fake: FakeOllama, path: str, body: dict[str, Any]) -> tuple[int, Any, str]:
    """Status, JSON body and content type of one raw request."""
    wire = raw_exchange(fake.url, "POST", path, body)
    return wire.status, json.loads(wire.body), wire.headers["content-type"]


def words(count: int) -> str:
    return " ".join(f"w{i}" for i in range(count))


# -- the tokenizer ---------------------------------------------------------------


def test_code_costs_more_tokens_per_character_than_prose() -> None:
    prose = "The weather in Paris is mild today."
    code = "if (x[0] != y) { f(x); }"
    assert count_tokens(prose) == 8
    assert count_tokens(code) == 17  # != is two marks
    assert count_tokens(code) / len(code) > count_tokens(prose) / len(prose)
    assert count_tokens("<|user|>") == 1 and count_tokens("  ") == 0


def test_chat_prompt_is_documented_text() -> None:
    calls = [{"function": {"name": "f", "arguments": {}}}]
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "", "tool_calls": calls},
    ]
    assert chat_prompt(messages, [TOOL]) == (
        f"<|tools|>{json.dumps([TOOL])}\n<|user|>Hi\n"
        f"<|assistant|>{json.dumps(calls)}\n<|assistant|>"
    )


# -- /api/embed ------------------------------------------------------------------


def test_embed_answers_stable_unit_vectors(client: ollama.Client) -> None:
    answer = client.embed("nomic-embed-text", ["Hello world", "Bonjour"])
    first, second = answer.embeddings
    assert list(first) == embedding("Hello world", 8)
    assert list(second) == embedding("Bonjour", 8) != list(first)
    assert math.isclose(sum(v * v for v in first), 1.0)
    assert answer.model == "nomic-embed-text"
    # Each input counts its tokens plus the BOS and EOS the model adds.
    assert answer.prompt_eval_count == (2 + 2) + (1 + 2)
    assert answer.total_duration and answer.load_duration
    again = client.embed("nomic-embed-text", "Hello world").embeddings[0]
    assert list(again) == list(first)


def test_embed_dimensions_cut_and_renormalise(client: ollama.Client) -> None:
    (vector,) = client.embed("nomic-embed-text", "Hi", dimensions=3).embeddings
    assert list(vector) == embedding("Hi", 3) and len(vector) == 3
    assert math.isclose(sum(v * v for v in vector), 1.0)
    (whole,) = client.embed("nomic-embed-text", "Hi", dimensions=99).embeddings
    assert list(whole) == embedding("Hi", 8)  # larger than the model's: ignored


def test_embed_of_an_empty_string_is_no_embedding(fake: FakeOllama) -> None:
    body = {"model": "nomic-embed-text", "input": ""}
    assert post(fake, "/api/embed", body)[:2] == (
        200,
        {"model": "nomic-embed-text", "embeddings": []},
    )
    body["input"] = [""]  # in a list it is embedded: BOS and EOS only
    status, answer, _ = post(fake, "/api/embed", body)
    assert status == 200 and answer["embeddings"] == [embedding("", 8)]
    assert answer["prompt_eval_count"] == 2


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"model": "nomic-embed-text", "input": [1]}, 400, "invalid input type"),
        ({"model": "nomic-embed-text", "input": 7}, 400, "invalid input type"),
        ({"input": "hi"}, 404, "model '' not found"),
    ],
)
def test_embed_refuses_what_the_server_refuses(
    fake: FakeOllama, body: dict[str, Any], status: int, error: str
) -> None:
    assert post(fake, "/api/embed", body)[:2] == (status, {"error": error})


def test_embed_cuts_a_long_input_silently(client: ollama.Client) -> None:
    text = words(10)
    answer = client.embed("nomic-embed-text", text, options={"num_ctx": 8})
    # Six tokens of input fit: the context less the BOS and EOS.
    assert list(answer.embeddings[0]) == embedding(words(6), 8)
    assert answer.prompt_eval_count == 8


def test_embed_without_truncate_fails_the_whole_batch(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        client.embed(
            "nomic-embed-text",
            ["short", words(10), "never embedded"],
            options={"num_ctx": 8},
            truncate=False,
        )
    assert info.value.status_code == 400
    assert info.value.error == "the input length exceeds the context length"
    with pytest.raises(ollama.ResponseError) as tiny:
        client.embed("nomic-embed-text", "a b", options={"num_ctx": 2})
    assert tiny.value.error == "input after truncation exceeds maximum context length"


def test_embed_loads_its_model_for_its_keep_alive(
    fake: FakeOllama, client: ollama.Client
) -> None:
    client.embed("nomic-embed-text", "x", keep_alive="10m")
    (loaded,) = client.ps().models
    assert loaded.model == "nomic-embed-text" and loaded.context_length == 2048
    client.embed("nomic-embed-text", "x", keep_alive=0)
    assert client.ps().models == [] and fake.loaded == []


def test_embed_plays_a_scripted_fault_then_answers(
    fake: FakeOllama, client: ollama.Client
) -> None:
    fake.enqueue(http_error(500, "runner crashed"), endpoint="embed")
    with pytest.raises(ollama.ResponseError) as info:
        client.embed("nomic-embed-text", "x")
    assert (info.value.status_code, info.value.error) == (500, "runner crashed")
    assert client.embed("nomic-embed-text", "x").embeddings  # the queue is empty


# -- requests in flight ----------------------------------------------------------


def test_in_flight_counts_each_endpoint_and_keeps_the_peak(fake: FakeOllama) -> None:
    fake.enqueue([Stall()], [Stall()], endpoint="embed")
    fake.enqueue([Stall()])
    results: list[Any] = []

    def call(method: str, *args: Any) -> None:
        with ollama.Client(fake.url) as sdk:
            results.append(getattr(sdk, method)(*args))

    threads = [
        threading.Thread(target=call, args=("embed", "nomic-embed-text", "a")),
        threading.Thread(target=call, args=("embed", "nomic-embed-text", "b")),
        threading.Thread(target=call, args=("chat", "m", USER)),
    ]
    for thread in threads:
        thread.start()
    assert fake.wait_for(lambda s: s.in_flight("embed") == 2)
    assert fake.wait_for(lambda s: s.in_flight("/api/chat") == 1)
    assert fake.wait_stalled(3)
    fake.release()
    for thread in threads:
        thread.join(WAIT)
    assert len(results) == 3
    assert fake.wait_for(lambda s: s.in_flight("embed") == s.in_flight("chat") == 0)
    assert (fake.peak_in_flight("embed"), fake.peak_in_flight("chat")) == (2, 1)
    assert fake.peak_in_flight("generate") == 0
    with pytest.raises(ValueError, match="unknown endpoint"):
        fake.in_flight("embeddings")


# -- /api/show -------------------------------------------------------------------


def test_show_answers_the_declared_model(client: ollama.Client) -> None:
    shown = client.show("qwen3")
    assert shown.capabilities == ["completion", "tools", "thinking"]
    assert shown.modelinfo is not None
    assert shown.modelinfo["general.architecture"] == "qwen3"
    assert shown.modelinfo["qwen3.context_length"] == 40960
    assert shown.details is not None and shown.details.family == "qwen3"
    assert shown.details.families == ["qwen3"]
    assert shown.details.parameter_size == "8.2B"
    assert shown.details.quantization_level == "Q4_K_M"  # a default kept
    # ShowHandler: "%-30s %#v" per value, a list one value a line.
    assert shown.parameters == (
        f'{"num_ctx":<30} 8192\n{"stop":<30} "<|im_start|>"\n{"stop":<30} "<|im_end|>"'
    )
    assert shown.modelfile and "PARAMETER num_ctx 8192" in shown.modelfile
    embedder = client.show("nomic-embed-text")
    assert embedder.capabilities == ["embedding"]
    assert embedder.modelinfo and embedder.modelinfo["nomic-bert.embedding_length"] == 8


def test_created_parameters_show_and_set_the_context(
    fake: FakeOllama, client: ollama.Client
) -> None:
    client.create("small", from_="fake-model", parameters={"num_ctx": 64})
    assert client.show("small").parameters == f"{'num_ctx':<30} 64"
    client.chat("small", USER)
    assert {m.model: m.context_length for m in client.ps().models} == {"small": 64}
    assert fake.models[-1] == {"name": "small", "parameters": {"num_ctx": 64}}


# -- capabilities ----------------------------------------------------------------


@pytest.mark.parametrize("think", [True, "high"])
def test_think_to_a_model_without_thinking_is_400(
    client: ollama.Client, think: Any
) -> None:
    with pytest.raises(ollama.ResponseError) as chat:
        client.chat("qwen2", USER, think=think)
    with pytest.raises(ollama.ResponseError) as generate:
        client.generate("qwen2", "hi", think=think)
    for info in (chat, generate):
        assert info.value.status_code == 400
        assert info.value.error == '"qwen2" does not support thinking'
    assert client.chat("qwen2", USER, think=False).done
    assert client.chat("qwen3", USER, think=True).done


def test_tools_to_a_model_without_tools_is_400(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        client.chat("qwen2", USER, tools=[TOOL])
    assert info.value.status_code == 400
    assert info.value.error == (
        "registry.ollama.ai/library/qwen2:latest does not support tools"
    )


def test_an_embedding_model_cannot_chat_or_generate(fake: FakeOllama) -> None:
    fake.enqueue(reply("kept for the next request"))
    status, answer, kind = post(
        fake, "/api/chat", {"model": "nomic-embed-text", "messages": USER}
    )
    assert (status, answer) == (
        400,
        {"error": '"nomic-embed-text" does not support chat'},
    )
    assert kind == "application/json; charset=utf-8"
    body = {"model": "nomic-embed-text", "prompt": "hi"}
    assert post(fake, "/api/generate", body)[1] == {
        "error": '"nomic-embed-text" does not support generate'
    }
    with ollama.Client(fake.url) as sdk:
        kept = sdk.chat("qwen2", USER)  # the refusals took no script
    assert kept.message.content == "kept for the next request"


def test_suffix_needs_insert_and_images_need_nothing(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        client.generate("qwen2", "def f(", suffix="return 1")
    assert info.value.error == (
        "registry.ollama.ai/library/qwen2:latest does not support insert"
    )
    image = "iVBORw0KGgo="  # the server never checks for vision
    assert client.generate("qwen2", "what is this?", images=[image]).done
    assert client.chat("qwen2", [{**USER[0], "images": [image]}]).done


def test_a_model_not_declared_accepts_anything(client: ollama.Client) -> None:
    assert client.chat("fake-model", USER, think=True, tools=[TOOL]).done
    assert client.chat("not-listed", USER, think="high").done


# -- context windows ---------------------------------------------------------------


def history(turns: int) -> list[dict[str, str]]:
    """A system message, then ``turns`` user/assistant pairs of 20 words, a question."""
    out = [{"role": "system", "content": "Be brief."}]
    for i in range(turns):
        out += [
            {"role": "user", "content": f"q{i} " + words(20)},
            {"role": "assistant", "content": f"a{i} " + words(20)},
        ]
    return [*out, {"role": "user", "content": "And now?"}]


def test_chat_drops_old_messages_silently_to_fit(client: ollama.Client) -> None:
    messages = history(3)  # about 140 tokens
    answer = client.chat("qwen2", messages, options={"num_ctx": 100}, stream=False)
    # The system message and the latest ones stay; whole messages go from the front.
    kept = [messages[0], *messages[3:]]
    assert count_tokens(chat_prompt(messages[:1] + messages[2:])) > 100
    assert count_tokens(chat_prompt(kept)) <= 100
    assert answer.prompt_eval_count == count_tokens(chat_prompt(kept))
    assert answer.message.content.startswith("Hello")
    whole = client.chat("qwen2", messages, stream=False)  # num_ctx 4096: all fit
    assert whole.prompt_eval_count == count_tokens(chat_prompt(messages))


def test_a_model_default_num_ctx_and_its_context_length_bound_it(
    fake: FakeOllama,
) -> None:
    fake.models.append({"name": "short", "parameters": {"num_ctx": 60}})
    fake.models.append({"name": "tiny", "context_length": 50})
    messages = history(2)
    with ollama.Client(fake.url) as sdk:
        by_default = sdk.chat("short", messages).prompt_eval_count
        capped = sdk.chat("tiny", messages, options={"num_ctx": 4096})
        assert {m.model: m.context_length for m in sdk.ps().models} == {
            "short": 60,
            "tiny": 50,
        }
    assert by_default is not None and 0 < by_default <= 60
    assert capped.prompt_eval_count is not None and capped.prompt_eval_count <= 50


def test_a_prompt_that_cannot_fit_is_refused_as_llama_server_does(
    client: ollama.Client, fake: FakeOllama
) -> None:
    last = [{"role": "user", "content": words(200)}]
    with pytest.raises(ollama.ResponseError) as info:
        client.chat("qwen2", last, options={"num_ctx": 100})
    tokens = count_tokens(chat_prompt(last))
    assert info.value.status_code == 400
    assert json.loads(info.value.error) == {
        "error": {
            "code": 400,
            "message": f"request ({tokens} tokens) exceeds the available context "
            "size (100 tokens), try increasing it",
            "type": "exceed_context_size_error",
            "n_prompt_tokens": tokens,
            "n_ctx": 100,
        }
    }
    # streamResponse keeps "application/json"; the one-object answer adds a charset
    body = {"model": "qwen2", "messages": last, "options": {"num_ctx": 100}}
    assert post(fake, "/api/chat", body)[2] == "application/json"
    assert post(fake, "/api/chat", body | {"stream": False})[2].endswith("utf-8")


def test_truncate_false_refuses_instead_of_dropping(fake: FakeOllama) -> None:
    body = {"model": "qwen2", "messages": history(3), "options": {"num_ctx": 100}}
    status, answer, _ = post(fake, "/api/chat", body | {"truncate": False})
    assert status == 400 and TOO_LONG in answer["error"]
    assert raw_exchange(fake.url, "POST", "/api/chat", body).status == 200


def test_context_shift_keeps_num_keep_and_the_tail() -> None:
    last = [{"role": "user", "content": words(200)}]
    with FakeOllama(context_shift=True) as fake, ollama.Client(fake.url) as sdk:
        shifted = sdk.chat("m", last, options={"num_ctx": 100})
        # contextShiftPromptLimit: num_ctx - (num_ctx - num_keep) / 2
        assert shifted.prompt_eval_count == 100 - (100 - 4) // 2
        kept = sdk.chat("m", last, options={"num_ctx": 100, "num_keep": 40})
        assert kept.prompt_eval_count == 100 - (100 - 40) // 2
        body = {"model": "m", "messages": last, "options": {"num_ctx": 100}}
        status, answer, _ = post(fake, "/api/chat", body | {"shift": False})
        assert status == 400
        assert answer["error"].startswith(
            "the prompt is longer than the context length currently available"
        )
        status, answer, _ = post(fake, "/api/chat", body | {"truncate": False})
        assert status == 400 and TOO_LONG in answer["error"]


def test_generate_shifts_its_prompt_as_the_server_does(client: ollama.Client) -> None:
    answer = client.generate("qwen2", words(300), options={"num_ctx": 64})
    assert answer.prompt_eval_count == 64 - (64 - 4) // 2
    fits = client.generate("qwen2", "Why is the sky blue?", system="Be brief.")
    assert fits.prompt_eval_count == count_tokens(
        chat_prompt(
            [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Why is the sky blue?"},
            ]
        )
    )
    raw = client.generate("qwen2", "Why?", raw=True)
    assert raw.prompt_eval_count == 2


def test_generate_without_truncate_or_shift_is_refused(fake: FakeOllama) -> None:
    body = {"model": "qwen2", "prompt": words(300), "options": {"num_ctx": 64}}
    status, answer, _ = post(fake, "/api/generate", body | {"truncate": False})
    assert status == 400 and TOO_LONG in answer["error"]
    status, answer, _ = post(fake, "/api/generate", body | {"shift": False})
    assert status == 400 and answer["error"].startswith("the prompt is longer")


def test_a_model_system_prompt_counts(fake: FakeOllama) -> None:
    fake.models.append({"name": "mario", "system": "You are Mario."})
    with ollama.Client(fake.url) as sdk:
        answer = sdk.chat("mario", USER)
    system = {"role": "system", "content": "You are Mario."}
    assert answer.prompt_eval_count == count_tokens(chat_prompt([system, *USER]))
