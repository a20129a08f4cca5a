"""The fake Ollama itself, through the real SDK, httpx, requests and plain sockets."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import gzip
import json
import os
import socket
import ssl
import sys
import threading
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import ollama
import pytest
import requests

from ollama_stream_sync import StreamingClient
from ollama_stream_sync.testing import (
    Body,
    Bytes,
    Chunk,
    ContentEncoding,
    Cut,
    Delay,
    DoneLine,
    ErrorLine,
    FakeOllama,
    ProgressLine,
    Raw,
    RecordedRequest,
    Stall,
    Status,
    chat_prompt,
    count_tokens,
    create_script,
    http_error,
    pull_not_found_script,
    pull_script,
    push_script,
    reply,
    serve,
    tool_call,
)

from .support import USER, WAIT
from .support.sockets import Tarpit, raw_exchange

TOOL = {
    "type": "function",
    "function": {"name": "weather", "parameters": {"type": "object"}},
}


_sdk_clients: list[ollama.Client] = []


def sdk(server: FakeOllama, **kwargs: Any) -> ollama.Client:
    """The official client on the server (trusting its CA when it serves TLS).

    Closed after the test, so no pooled socket is left for the collector.
    """
    if server.url.startswith("https"):
        kwargs.setdefault("verify", server.client_ssl_context())
    client = ollama.Client(server.url, **kwargs)
    _sdk_clients.append(client)
    return client


@pytest.fixture(autouse=True)
def close_sdk_clients() -> Iterator[None]:
    yield
    while _sdk_clients:
        _sdk_clients.pop().close()


def fake_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("fake-ollama")}


# -- more than 1024 descriptors ------------------------------------------------


@pytest.fixture
def many_open_files() -> Iterator[int]:
    """Hold ~1,100 open files, so every new socket gets a descriptor above 1024."""
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 1400
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below {need}")
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    fds: list[int] = []
    try:
        fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
        probe = os.dup(fds[0])
        os.close(probe)
        yield probe
    finally:
        for fd in fds:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_stall_and_hang_up_work_above_1024_descriptors(many_open_files: int) -> None:
    assert many_open_files > 1024  # the next socket's number, as select() sees it
    with FakeOllama() as server:
        client = sdk(server)
        server.enqueue(reply("Plain."), [Chunk(content="x"), Stall()])
        parts = [p.message.content for p in client.chat("m", USER, stream=True)]
        assert "".join(parts) == "Plain."
        stream = client.chat("m", USER, stream=True)
        assert next(stream).message.content == "x"
        assert server.wait_stalled()
        stream.close()  # the SDK closes the connection: the server sees a hang-up
        assert server.wait_for(lambda s: s.disconnects_seen == 1)
        server.enqueue([Chunk(content="a"), Stall(), Chunk(content="b"), DoneLine()])
        stream = client.chat("m", USER, stream=True)
        assert next(stream).message.content == "a"
        assert server.wait_stalled()
        server.release()
        assert [p.message.content for p in stream] == ["b", ""]
        assert server.disconnects_seen == 1


# -- "stream": false -----------------------------------------------------------


def test_non_streaming_chat_is_one_object_like_ollama(server: FakeOllama) -> None:
    calls = [tool_call("weather", {"city": "Paris"}, id="call_1")]
    server.enqueue(reply("It rains.", thinking="Check it.", tool_calls=calls))
    result = sdk(server).chat("m", USER, tools=[TOOL], stream=False)
    assert result.message.content == "It rains."
    assert result.message.thinking == "Check it."
    assert result.message.tool_calls is not None
    assert result.message.tool_calls[0].function.name == "weather"
    assert result.done and result.done_reason == "stop"
    assert result.eval_count == 4
    assert result.prompt_eval_count == count_tokens(chat_prompt(USER, [TOOL]))


def test_non_streaming_chat_keeps_only_the_last_chunks_tools_without_tools_asked(
    server: FakeOllama,
) -> None:
    # writeChatResponse joins tool calls only when the request listed tools.
    server.enqueue(reply("ok", tool_calls=[tool_call("weather")]))
    result = sdk(server).chat("m", USER, stream=False)
    assert result.message.content == "ok" and not result.message.tool_calls


def test_non_streaming_wire_shape(server: FakeOllama) -> None:
    server.enqueue([Chunk(thinking="a"), Chunk(content="b<c"), DoneLine("length")])
    wire = raw_exchange(
        server.url, "POST", "/api/chat", {"model": "m", "stream": False}
    )
    assert wire.status == 200
    assert wire.headers["content-type"] == "application/json; charset=utf-8"
    assert "content-length" in wire.headers
    assert b"\n" not in wire.body and b"\\u003c" in wire.body  # Go's escaping
    data = json.loads(wire.body)
    assert data["message"] == {"role": "assistant", "content": "b<c", "thinking": "a"}
    assert data["done"] is True and data["done_reason"] == "length"


def test_non_streaming_generate(server: FakeOllama) -> None:
    server.enqueue(reply("Blue sky.", thinking="sky"))
    result = sdk(server).generate("m", "Why?", stream=False)
    assert result.response == "Blue sky." and result.thinking == "sky"
    assert result.context == [1, 2, 3] and result.done


def test_non_streaming_error_line_is_http_500(server: FakeOllama) -> None:
    server.enqueue([Chunk(content="Half"), ErrorLine("runner crashed")])
    with pytest.raises(ollama.ResponseError) as info:
        sdk(server).chat("m", USER, stream=False)
    assert info.value.status_code == 500 and info.value.error == "runner crashed"


def test_non_streaming_status_still_applies(server: FakeOllama) -> None:
    server.enqueue(http_error(404, "model 'x' not found"))
    with pytest.raises(ollama.ResponseError) as info:
        sdk(server).generate("x", "hi", stream=False)
    assert info.value.status_code == 404 and "not found" in info.value.error


def test_non_streaming_stall_comes_before_the_status_line(server: FakeOllama) -> None:
    # Had the headers gone out before the stall, the cut would end a response
    # instead of leaving the client with no answer at all.
    server.enqueue([Chunk(content="x"), Stall(), Cut()])
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            raw_exchange(
                server.url, "POST", "/api/chat", {"model": "m", "stream": False}
            )
        except ConnectionError as exc:
            errors.append(exc)

    thread = threading.Thread(target=ask)
    thread.start()
    assert server.wait_stalled()
    server.release()
    thread.join(WAIT)
    assert len(errors) == 1 and "before answering" in str(errors[0])


def test_raw_steps_in_a_non_streaming_answer_are_refused_loudly(
    server: FakeOllama,
) -> None:
    server.enqueue([Raw(b"junk"), DoneLine()])
    with pytest.raises(ollama.ResponseError) as info:
        sdk(server).chat("m", USER, stream=False)
    assert info.value.status_code == 500 and "Body(" in info.value.error


# -- loading, unloading and /api/ps --------------------------------------------


def test_chat_loads_its_model_and_keep_alive_zero_unloads_it(
    server: FakeOllama,
) -> None:
    client = sdk(server)
    assert client.ps().models == []
    client.chat("m", USER, keep_alive="10m", options={"num_ctx": 8192})
    (loaded,) = client.ps().models
    assert loaded.model == "m" and loaded.name == "m"
    assert loaded.context_length == 8192 and loaded.size_vram == loaded.size
    assert loaded.details is not None and loaded.details.format == "gguf"
    assert loaded.expires_at is not None
    soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=9)
    assert loaded.expires_at > soon  # ten minutes from the request, not the default 5
    client.chat("m", USER, keep_alive=0)  # answers, then unloads, as Ollama does
    assert client.ps().models == [] and server.loaded == []


@pytest.mark.parametrize("endpoint", ["chat", "generate"])
def test_empty_request_loads_and_unloads_like_ollama(
    server: FakeOllama, endpoint: str
) -> None:
    def empty(**kwargs: Any) -> Any:
        client = sdk(server)
        if endpoint == "chat":
            return client.chat("m", [], **kwargs)
        return client.generate("m", **kwargs)

    assert empty().done_reason == "load"
    assert [m.model for m in sdk(server).ps().models] == ["m"]
    wire = raw_exchange(
        server.url, "POST", f"/api/{endpoint}", {"model": "m", "keep_alive": 0}
    )
    assert json.loads(wire.body)["done_reason"] == "unload"
    assert wire.headers["content-type"].startswith("application/json")  # not ndjson
    assert sdk(server).ps().models == []
    assert empty(keep_alive=0).done_reason == "unload"


def test_ps_lists_what_loaded_says(server: FakeOllama) -> None:
    server.loaded = ["a", {"name": "b", "size_vram": 0, "context_length": 2048}]
    models = {m.name: m for m in sdk(server).ps().models}
    assert set(models) == {"a", "b"}
    assert models["b"].size_vram == 0 and models["b"].context_length == 2048
    assert models["a"].digest and len(models["a"].digest) == 64


# -- /api/show and /api/tags ---------------------------------------------------


def test_show_has_capabilities_details_and_a_context_length() -> None:
    special = {"name": "qwen3", "capabilities": ["completion", "thinking"]}
    with FakeOllama(models=["llama3.2", special]) as server:
        shown = sdk(server).show("llama3.2")
        assert shown.capabilities == ["completion", "tools"]
        assert shown.details is not None and shown.details.family == "llama"
        assert shown.modelinfo is not None
        assert shown.modelinfo["llama.context_length"] == 131072
        assert shown.modelfile and "FROM llama3.2:latest" in shown.modelfile
        assert sdk(server).show("qwen3:latest").capabilities == [
            "completion",
            "thinking",
        ]


def test_show_of_a_model_not_pulled_is_404_like_ollama(server: FakeOllama) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        sdk(server).show("nope")
    # ShowHandler names the model by DisplayShortest(), the tag included.
    assert info.value.status_code == 404
    assert info.value.error == "model 'nope:latest' not found"


def test_tags_fields_are_ollamas(server: FakeOllama) -> None:
    (model,) = sdk(server).list().models
    assert model.model == "fake-model" and model.size and model.digest
    assert model.details is not None and model.details.quantization_level
    wire = raw_exchange(server.url, "GET", "/api/tags")
    (entry,) = json.loads(wire.body)["models"]
    assert set(entry) == {
        "name",
        "model",
        "modified_at",
        "size",
        "digest",
        "details",
        "capabilities",
    }


# -- pull, push, create --------------------------------------------------------


def test_unscripted_pull_streams_ollamas_progress_and_adds_the_model(
    server: FakeOllama,
) -> None:
    parts = list(sdk(server).pull("llama3.2", stream=True))
    statuses = [p.status for p in parts]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    layers = [p for p in parts if p.digest]
    assert all(p.status == f"pulling {p.digest[7:19]}" for p in layers)
    digests = list(dict.fromkeys(p.digest for p in layers))
    assert len(digests) == 6
    # Layers come one after another, so the total a client sums keeps growing.
    totals = [
        sum({p.digest: p.total for p in layers[: i + 1]}.values())
        for i in range(len(layers))
    ]
    assert totals == sorted(totals) and totals[0] < totals[-1]
    assert layers[0].completed is None  # 0 is left out, like Go's omitempty
    assert layers[-1].completed == layers[-1].total
    assert "llama3.2" in [m.model for m in sdk(server).list().models]


def test_pull_script_steps_and_faults_on_the_pull_endpoint(server: FakeOllama) -> None:
    server.enqueue(pull_script("x", layers=[100, 10], steps=2), endpoint="pull")
    server.enqueue([ProgressLine("pulling manifest"), Stall()], endpoint="pull")
    parts = list(sdk(server).pull("x", stream=True))
    assert [(p.total, p.completed) for p in parts if p.digest] == [
        (100, None),
        (100, 50),
        (100, 100),
        (10, None),
        (10, 5),
        (10, 10),
    ]
    stream = sdk(server).pull("y", stream=True)
    assert next(stream).status == "pulling manifest"
    assert server.wait_stalled()
    stream.close()
    assert server.wait_for(lambda s: s.disconnects_seen == 1)
    assert [m.model for m in sdk(server).list().models] == ["fake-model", "x"]


def test_pull_of_a_name_the_registry_lacks_is_an_in_band_error() -> None:
    with FakeOllama(unknown_models=["nope"]) as server:
        stream = sdk(server).pull("nope", stream=True)
        assert next(stream).status == "pulling manifest"  # after a 200
        with pytest.raises(ollama.ResponseError) as info:
            next(stream)
        assert info.value.status_code == -1  # the SDK's mark of an in-band error
        assert info.value.error == "pull model manifest: file does not exist"
        with pytest.raises(ollama.ResponseError) as whole:
            sdk(server).pull("nope")  # "stream": false: waitForStream's 500
        assert whole.value.status_code == 500
        assert "nope" not in [m.model for m in sdk(server).list().models]


def test_non_streaming_pull_push_create_answer_the_last_status(
    server: FakeOllama,
) -> None:
    wire = raw_exchange(
        server.url, "POST", "/api/pull", {"model": "llama3.2", "stream": False}
    )
    assert wire.headers["content-type"] == "application/json"
    assert json.loads(wire.body) == {"status": "success"}
    assert sdk(server).push("llama3.2").status == "success"
    assert sdk(server).create("mario", from_="llama3.2").status == "success"


def test_push_of_a_model_not_pulled_fails_like_ollama(server: FakeOllama) -> None:
    parts: list[str] = []
    with pytest.raises(ollama.ResponseError) as info:
        parts.extend(p.status or "" for p in sdk(server).push("me/gone", stream=True))
    assert parts == ["retrieving manifest", "couldn't retrieve manifest"]
    assert (
        "manifests/registry.ollama.ai/me/gone/latest: no such file" in info.value.error
    )


def test_push_script_shape(server: FakeOllama) -> None:
    server.enqueue(push_script("me/m", layers=[10], steps=1), endpoint="push")
    statuses = [(p.status, p.completed) for p in sdk(server).push("me/m", stream=True)]
    digest = push_script("me/m", layers=[10])[1]
    assert isinstance(digest, ProgressLine) and digest.digest
    short = f"pushing {digest.digest[7:19]}"
    assert statuses == [
        ("retrieving manifest", None),
        (short, None),
        (short, 10),
        ("pushing manifest", None),
        ("success", None),
    ]


def test_create_from_a_pulled_model(server: FakeOllama) -> None:
    server.models.append("llama3.2")
    statuses = [
        p.status or ""
        for p in sdk(server).create(
            "mario", from_="llama3.2", system="Mario", stream=True
        )
    ]
    assert [s.rsplit(" ", 1)[0] if "layer" in s else s for s in statuses] == [
        *["using existing layer"] * 5,
        "creating new layer",
        "writing manifest",
        "success",
    ]
    assert all(s.split()[-1].startswith("sha256:") for s in statuses[:6])
    assert sdk(server).show("mario").modelfile  # listed now


def test_create_from_a_missing_base_pulls_it_first(server: FakeOllama) -> None:
    statuses = [
        p.status for p in sdk(server).create("mario", from_="base", stream=True)
    ]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    assert statuses.index("writing manifest") < statuses.index("success")
    names = [m.model for m in sdk(server).list().models]
    assert "base" in names and "mario" in names


def test_create_without_from_or_files_is_400(server: FakeOllama) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        sdk(server).create("mario", system="x")
    assert info.value.status_code == 400
    assert info.value.error == "neither 'from' or 'files' was specified"


def test_create_script_from_files() -> None:
    script = create_script("m", existing=["sha256:abc"], new=0, parsing_gguf=True)
    assert [s.status for s in script if isinstance(s, ProgressLine)] == [
        "parsing GGUF",
        "using existing layer sha256:abc",
        "writing manifest",
        "success",
    ]


# -- queues per endpoint -------------------------------------------------------


def test_scripts_queue_per_endpoint(server: FakeOllama) -> None:
    server.enqueue(reply("shared one"), reply("shared two"))
    server.enqueue(reply("generate only"), endpoint="/api/generate")
    server.enqueue(pull_not_found_script(), endpoint="pull")
    client = sdk(server)
    assert client.generate("m", "?").response == "generate only"
    assert client.generate("m", "?").response == "shared one"
    assert client.chat("m", USER).message.content == "shared two"
    with pytest.raises(ollama.ResponseError):
        client.pull("anything")
    assert client.pull("anything").status == "success"  # queue empty: the default
    assert [r.path for r in server.stream_requests()] == [
        "/api/generate",
        "/api/generate",
        "/api/chat",
    ]


def test_enqueue_refuses_what_can_never_play(server: FakeOllama) -> None:
    with pytest.raises(ValueError, match="endpoint"):
        server.enqueue(reply("x"), endpoint="show")  # answers, never scripted
    with pytest.raises(ValueError, match="before any output"):
        server.enqueue([Chunk(content="x"), Status(500)])
    with pytest.raises(ValueError, match="empty HTTP chunk"):
        Bytes(b"")


# -- raw bodies and framing ----------------------------------------------------


def test_bytes_are_one_chunk_each_with_no_newline(server: FakeOllama) -> None:
    line = json.dumps({"model": "m", "message": {"role": "assistant", "content": "Hi"}})
    server.enqueue(
        [
            Bytes(b"\n"),
            Bytes(line[:20].encode()),
            Bytes(line[20:].encode() + b"\n"),
            DoneLine(),
        ]
    )
    wire = raw_exchange(server.url, "POST", "/api/chat", {"model": "m"})
    assert wire.chunks[:3] == [b"\n", line[:20].encode(), line[20:].encode() + b"\n"]
    assert json.loads(wire.chunks[3])["done"] is True


def test_sdk_reassembles_a_line_split_over_chunks(server: FakeOllama) -> None:
    line = '{"model":"m","message":{"role":"assistant","content":"Hi"},"done":false}\n'
    server.enqueue([Bytes(line[:25].encode()), Bytes(line[25:].encode()), DoneLine()])
    parts = [p.message.content for p in sdk(server).chat("m", USER, stream=True)]
    assert parts == ["Hi", ""]


def test_body_answers_any_page_with_its_headers(server: FakeOllama) -> None:
    page = b"<html><h1>502 Bad Gateway</h1></html>"
    server.enqueue([Body(page, headers={"Content-Type": "text/html"}, status=502)])
    answer = requests.post(server.url + "/api/chat", json={"model": "m"}, timeout=WAIT)
    assert answer.status_code == 502 and answer.content == page
    assert answer.headers["Content-Type"] == "text/html"
    assert "Server" not in answer.headers  # Go sends none


def test_body_can_carry_a_gzip_bomb(server: FakeOllama) -> None:
    bomb = gzip.compress(b"\n" * 5_000_000)
    headers = {"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"}
    server.enqueue([Body(bomb, headers=headers)])
    wire = raw_exchange(server.url, "POST", "/api/chat", {"model": "m"})
    assert wire.body == bomb and len(bomb) < 10_000  # sent as is, not inflated
    assert wire.headers["content-encoding"] == "gzip"


# -- body encodings ------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_encoded_stream_delivers_each_line_as_it_is_written(encoding: str) -> None:
    with FakeOllama(content_encoding=encoding) as server:
        server.enqueue(
            [Chunk(content="first"), Stall(), Chunk(content="second"), DoneLine()]
        )
        with (
            httpx.Client() as client,
            client.stream(
                "POST", server.url + "/api/chat", json={"model": "m"}
            ) as response,
        ):
            assert response.headers["content-encoding"] == encoding
            lines = response.iter_lines()
            # Readable while the server is still stalled: it was sync-flushed.
            assert json.loads(next(lines))["message"]["content"] == "first"
            assert server.wait_stalled()
            server.release()
            rest = [json.loads(line)["message"]["content"] for line in lines]
        assert rest == ["second", ""]


def test_content_encoding_step_per_script(server: FakeOllama) -> None:
    server.enqueue([ContentEncoding("deflate"), *reply("Squeezed.")], reply("Plain."))
    wire = raw_exchange(server.url, "POST", "/api/chat", {"model": "m"})
    assert wire.headers["content-encoding"] == "deflate"
    text = zlib.decompress(wire.body).decode()
    assert [json.loads(x)["message"]["content"] for x in text.splitlines()][:2] == [
        "Squeezed.",
        "",
    ]
    plain = sdk(server).chat("m", USER, stream=True)
    assert next(plain).message.content == "Plain."


def test_encoded_server_streams_through_the_sdk() -> None:
    with FakeOllama(content_encoding="gzip") as server:
        server.enqueue(reply("Through gzip.", thinking="hm"))
        result = sdk(server).chat("m", USER, stream=False)
        assert result.message.content == "Through gzip."


# -- TLS -----------------------------------------------------------------------


@pytest.fixture
def tls_server() -> Iterator[FakeOllama]:
    with FakeOllama(tls=True) as server:
        yield server


def test_tls_streams_through_the_sdk_and_requests(tls_server: FakeOllama) -> None:
    assert tls_server.url.startswith("https://127.0.0.1:")
    tls_server.enqueue(reply("Secret."), reply("Also secret."))
    parts = [p.message.content for p in sdk(tls_server).chat("m", USER, stream=True)]
    assert "".join(parts) == "Secret."
    answer = requests.post(
        tls_server.url + "/api/chat",
        json={"model": "m", "messages": USER, "stream": False},
        verify=tls_server.ca_file,
        timeout=WAIT,
    )
    assert answer.json()["message"]["content"] == "Also secret."


def test_tls_through_streaming_client(tls_server: FakeOllama) -> None:
    tls_server.enqueue(reply("Wrapped."))
    with StreamingClient(tls_server.url, verify=tls_server.client_ssl_context()) as c:
        assert c.chat("m", USER).content == "Wrapped."


def test_tls_stall_sees_the_client_hang_up(tls_server: FakeOllama) -> None:
    tls_server.enqueue([Chunk(content="x"), Stall()])
    stream = sdk(tls_server).chat("m", USER, stream=True)
    assert next(stream).message.content == "x"
    assert tls_server.wait_stalled()
    stream.close()
    assert tls_server.wait_for(lambda s: s.disconnects_seen == 1)


def test_tls_refuses_an_unverified_client(tls_server: FakeOllama) -> None:
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(tls_server.url, timeout=WAIT)  # the system CAs do not know it


def test_tls_needs_the_test_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "trustme", None)  # as if not installed
    with pytest.raises(ImportError, match=r"ollama-stream-sync\[test\]"):
        FakeOllama(tls=True)


def test_plain_server_has_no_ca(server: FakeOllama) -> None:
    with pytest.raises(RuntimeError, match="plain http"):
        _ = server.ca_file


# -- lifecycle, records, threads -----------------------------------------------


def test_a_server_never_started_answers_and_closes_twice() -> None:
    server = FakeOllama()  # no start(), no with: it serves all the same
    try:
        answer = sdk(server, timeout=WAIT).chat("m", USER)
        assert answer.message.content.startswith("Hello")
        assert server.start() is server  # harmless
        assert sdk(server, timeout=WAIT).list().models
    finally:
        server.close()
    server.close()  # again: nothing happens
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url, timeout=WAIT)


def test_step_names_that_do_not_collide_with_the_librarys_events() -> None:
    import ollama_stream_sync
    import ollama_stream_sync.testing as testing

    assert testing.Done is DoneLine and testing.Progress is ProgressLine
    assert ollama_stream_sync.Done is not DoneLine  # the library's event
    # The new names are the documented ones; the old still import.
    assert {"DoneLine", "ProgressLine"} <= set(testing.__all__)
    assert not {"Done", "Progress"} & set(testing.__all__)


def test_recorded_request_documents_every_field() -> None:
    doc = RecordedRequest.__doc__ or ""
    assert "Attributes:" in doc
    for field in dataclasses.fields(RecordedRequest):
        assert f"    {field.name}: " in doc, field.name


def test_close_ends_stalled_delayed_and_idle_connections() -> None:
    before = fake_threads()
    server = FakeOllama().start()
    server.enqueue([Chunk(content="x"), Stall()], [Delay(3600), *reply("never")])
    stalled = sdk(server).chat("m", USER, stream=True)
    assert next(stalled).message.content == "x"
    delayed_client = sdk(server)

    def delayed_chat() -> None:
        with contextlib.suppress(ollama.ResponseError, httpx.HTTPError):
            delayed_client.chat("m", USER)  # ends when close() drops the connection

    delayed = threading.Thread(target=delayed_chat)
    delayed.start()
    idle = socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])))
    assert server.wait_stalled()
    assert server.wait_for(lambda s: s.open_connections == 3)
    assert server.wait_for(lambda s: len(s.stream_requests()) == 2)
    started = fake_threads() - before
    assert all(t.daemon for t in started) and len(started) == 4
    server.close()
    assert not [t.name for t in started if t.is_alive()]  # ended and joined
    assert server.open_connections == 0
    delayed.join(WAIT)
    assert not delayed.is_alive()
    idle.close()
    stalled.close()


def test_requests_are_recorded_and_stream_requests_filters(server: FakeOllama) -> None:
    client = sdk(server, headers={"Authorization": "Bearer k"})
    client.pull("llama3.2")
    client.chat("m", USER)
    client.list()
    assert [(r.method, r.path) for r in server.requests] == [
        ("POST", "/api/pull"),
        ("POST", "/api/chat"),
        ("GET", "/api/tags"),
    ]
    (chat,) = server.stream_requests()
    assert chat.body["messages"] == USER and chat.headers["authorization"] == "Bearer k"


def test_serve_passes_options_and_queues() -> None:
    with serve(reply("Hi."), models=["a", "b"]) as server:
        assert [m.model for m in sdk(server).list().models] == ["a", "b"]
        assert sdk(server).chat("a", USER).message.content == "Hi."


def test_ipv6_loopback() -> None:
    try:
        server = FakeOllama(host="::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with server:
        assert server.url.startswith("http://[::1]:")
        assert sdk(server).chat("m", USER).message.content.startswith("Hello")


def test_http_error_headers_and_status(server: FakeOllama) -> None:
    server.enqueue(http_error(503, "busy", Retry_After="2"))
    answer = requests.post(server.url + "/api/chat", json={"model": "m"}, timeout=WAIT)
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "2"
    assert answer.json() == {"error": "busy"}


@pytest.mark.parametrize(
    ("body", "error", "recorded"),
    [(b"", "missing request body", {}), (b"{nope", "invalid request body: ", None)],
)
def test_bad_request_bodies_are_400(
    server: FakeOllama, body: bytes, error: str, recorded: Any
) -> None:
    answer = httpx.post(server.url + "/api/chat", content=body, timeout=WAIT)
    assert answer.status_code == 400 and answer.json()["error"].startswith(error)
    assert server.requests[-1].body == recorded


def test_a_chunked_request_body_is_read_whole(server: FakeOllama) -> None:
    parts = [
        b'{"model": "m", "stream": false, ',
        b'"messages": [{"role": "user", ',
        b'"content": "Hello?"}]}',
    ]
    answer = httpx.post(server.url + "/api/chat", content=iter(parts), timeout=WAIT)
    assert answer.status_code == 200 and answer.json()["done"] is True
    (request,) = server.stream_requests()
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert headers["transfer-encoding"] == "chunked"
    assert request.body["messages"] == USER


def test_in_band_error_ends_the_stream_after_a_200(server: FakeOllama) -> None:
    server.enqueue([Chunk(content="a"), ErrorLine("boom"), Chunk(content="never")])
    wire = raw_exchange(server.url, "POST", "/api/chat", {"model": "m"})
    assert wire.status == 200 and wire.headers["content-type"] == "application/x-ndjson"
    assert [json.loads(c) for c in wire.chunks][-1] == {"error": "boom"}


# -- the Tarpit helper ---------------------------------------------------------


def test_tarpit_reads_and_never_writes() -> None:
    with Tarpit() as tarpit, socket.create_connection(("127.0.0.1", tarpit.port)) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert tarpit.wait_for(lambda t: t.received == 27)
        s.shutdown(socket.SHUT_WR)
        assert tarpit.wait_for(lambda t: t.hangups == 1)
        assert s.recv(100) == b""  # it closed without a byte ever written


def test_tarpit_holds_a_tls_handshake_until_the_client_gives_up() -> None:
    context = ssl.create_default_context()
    with Tarpit() as tarpit:
        raw = socket.create_connection(("127.0.0.1", tarpit.port))
        tls = context.wrap_socket(
            raw, server_hostname="localhost", do_handshake_on_connect=False
        )
        failures: list[BaseException] = []

        def handshake() -> None:
            try:
                tls.do_handshake()
            except OSError as exc:
                failures.append(exc)

        thread = threading.Thread(target=handshake)
        thread.start()
        assert tarpit.wait_for(lambda t: t.received > 0)  # the ClientHello came in
        socket.socket.shutdown(tls, socket.SHUT_RDWR)  # what a cancel does
        thread.join(WAIT)
        assert len(failures) == 1
        assert tarpit.wait_for(lambda t: t.hangups == 1)
        tls.close()
