"""Hostile bodies: lines that cannot be parsed, bytes after ``done``, encoded bodies.

Each test drives the real SDK/httpx or requests stack over a real loopback
socket, on both transports. The servers: ``FakeOllama`` where Ollama's own
framing suffices, ``hostile.Hostile`` for byte-exact misbehaviour.
"""

from __future__ import annotations

import gc
import threading
import time
import tracemalloc
import types
from typing import Any

import pytest

from ollama_stream_sync import (
    ModelNotFound,
    ProtocolError,
    ServerError,
    StreamError,
)
from ollama_stream_sync.testing import Chunk, Done, FakeOllama, Raw, Status

from .conftest import USER, WAIT, MakeClient
from .support.hostile import (
    END,
    Close,
    Compressor,
    Gate,
    Hold,
    Hostile,
    Latch,
    Pause,
    Reset,
    Send,
    Trickle,
    answer,
    chunk,
    chunked_response,
    gzip_bomb,
    head,
    line,
)

pytestmark = pytest.mark.transport

# -- 3. any line that cannot be parsed is a ProtocolError with .partial --

UNPARSABLE = {
    "nested-100k-lists": b"[" * 100_000,
    "nested-100k-closed": b"[" * 100_000 + b"]" * 100_000,
    "nested-objects": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    "nested-in-message": b'{"message": {"content": ' + b"[" * 100_000 + b"}}",
    "not-json": b"<html>captive portal</html>",
    "invalid-utf8": b'{"message": {"content": "\xff\xfe"}}',
    "huge-int": b'{"eval_count": ' + b"9" * 100_000 + b"}",
    "nan": b"NaN",
    "a-list": b"[1, 2, 3]",
    "a-string": b'"text"',
    "message-not-object": b'{"message": [1]}',
    "content-not-string": b'{"message": {"role": "assistant", "content": 5}}',
    "tool-calls-malformed": b'{"message": {"content": "", "tool_calls": "x"}}',
}


@pytest.mark.parametrize("data", UNPARSABLE.values(), ids=UNPARSABLE.keys())
def test_a_line_that_cannot_be_parsed_is_a_protocol_error_with_partial(
    server: FakeOllama, make_client: MakeClient, data: bytes
) -> None:
    server.enqueue([Chunk(content="before"), Raw(data), Chunk(content="after"), Done()])
    errors: list[StreamError] = []
    with make_client(server.url) as client:
        handle = client.start_chat("m", USER, on_error=errors.append)
        with pytest.raises(ProtocolError) as info:
            handle.result(WAIT)
    assert type(info.value) is ProtocolError
    assert info.value.partial.content == "before"  # what came before is kept
    assert not info.value.partial.done
    assert errors == [info.value]  # one terminal callback, the same error


def test_a_deeply_nested_line_leaves_the_worker_its_stack(
    server: FakeOllama, make_client: MakeClient
) -> None:
    """Refused before parsing, not by exhausting the recursion limit.

    A garbage collection can run on the worker in the middle of a parse, and
    with it any finalizer of the program (urllib3 closes a pool's sockets in
    one). A probe in gc.callbacks checks that whatever runs there still has
    room to call functions.
    """
    starved: list[int] = []

    def recurse(n: int) -> int:
        return 0 if n == 0 else 1 + recurse(n - 1)

    def probe(phase: str, info: dict[str, Any]) -> None:
        if phase == "start" and threading.current_thread().name.startswith(
            "ollama-stream-"
        ):
            try:
                recurse(100)
            except RecursionError:
                starved.append(1)

    server.enqueue([Chunk(content="before"), Raw(b"[" * 100_000 + b"]" * 100_000)])
    threshold = gc.get_threshold()
    gc.callbacks.append(probe)  # in place: the interpreter holds this list
    gc.set_threshold(20)  # a collection every few allocations, parse included
    try:
        with make_client(server.url) as client:
            with pytest.raises(ProtocolError, match="too deeply nested") as info:
                client.chat("m", USER)
    finally:
        gc.set_threshold(*threshold)
        gc.callbacks.remove(probe)
    assert info.value.partial.content == "before"
    assert not starved


def test_a_deeply_nested_error_body_is_read_as_text(
    server: FakeOllama, make_client: MakeClient
) -> None:
    server.enqueue([Status(500, b"[" * 100_000, content_type="application/json")])
    with make_client(server.url) as client:
        with pytest.raises(ServerError) as info:
            client.chat("m", USER)
    assert info.value.status_code == 500
    assert info.value.server_message.startswith("[[[[")


# -- 4. after the done line, the answer is complete --

WHOLE = head() + chunk(answer("Hello", " world"))
"""Headers and every line up to ``done``, the body's end not sent (yet)."""

AFTER_DONE: dict[str, list[Any]] = {
    "reset": [Send(WHOLE), Reset()],
    "fin-mid-body": [Send(WHOLE), Close()],
    "silence": [Send(WHOLE), Hold()],
    "bad-chunk-framing": [Send(WHOLE + b"zz\r\nnot a chunk\r\n"), Hold()],
    "half-a-chunk-then-reset": [Send(WHOLE + b'40\r\n{"partial'), Reset()],
    "half-a-chunk-then-silence": [Send(WHOLE + b'40\r\n{"partial'), Hold()],
    # Never silent for long, never ending: the drain's limit is for the whole
    # drain, not for each read.
    "blank-lines-forever": [Send(WHOLE), Trickle(chunk(b"\n"), every=0.05)],
}


@pytest.mark.parametrize("script", AFTER_DONE.values(), ids=AFTER_DONE.keys())
def test_an_error_or_silence_after_done_returns_the_answer(
    hostile: Hostile, make_client: MakeClient, script: list[Any]
) -> None:
    hostile.enqueue(script)
    # A read timeout far shorter than the wait: a silence after done must not
    # start it (nor anything else that could fail a complete answer).
    with make_client(hostile.url, read_timeout=0.2, retry=None) as client:
        handle = client.start_chat("m", USER)
        result = handle.result(WAIT)
        assert (result.content, result.done, result.done_reason) == (
            "Hello world",
            True,
            "stop",
        )
        assert not result.cancelled
        # The connection was not reused: it is closed, and the next call opens
        # a new one that works.
        assert client.chat("m", USER).content == "hello"
    make_client.release()  # the caller's sessions, if any
    assert hostile.wait_for(lambda s: s.open == 0, WAIT)
    requests = hostile.stream_requests()
    assert [r.connection for r in requests] == [1, 2]
    if any(isinstance(s, (Hold, Trickle)) for s in script):
        assert hostile.hangups == 1  # the client closed it, the server saw it


@pytest.mark.parametrize(
    "tail",
    [
        b'{"error": "a late error line"}\n',
        b"not json at all\n",
        line("more text after done"),
    ],
    ids=["error-line", "not-json", "more-output"],
)
def test_lines_after_done_in_the_same_body_are_ignored(
    hostile: Hostile, make_client: MakeClient, tail: bytes
) -> None:
    hostile.enqueue([Send(head() + chunk(answer("ok") + tail) + END)])
    with make_client(hostile.url) as client:
        result = client.chat("m", USER)
    assert (result.content, result.done) == ("ok", True)


def test_a_clean_body_end_after_done_keeps_the_connection(
    hostile: Hostile, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The drain's time limit applies to the drain only, not to the reused socket.

    The body's end comes a moment after the done line (the worker waits for
    it to reuse the connection); the next call on that connection is made
    later than the drain's limit: it must not inherit it. The later moment is
    simulated by moving the httpx transport's clock forward, not by sleeping.
    """
    latch = hostile.latch()
    hostile.enqueue(
        [Send(head() + chunk(answer("first"))), Gate(latch), Send(END)],
        # A pause before the second answer (pacing): the client then reads a
        # socket with nothing to read yet, as it would from a real model.
        [Pause(0.05), Send(chunked_response(answer("second")))],
    )
    from ollama_stream_sync._transports import _httpx

    offset = [0.0]
    shim = types.SimpleNamespace(
        monotonic=lambda: time.monotonic() + offset[0], sleep=time.sleep
    )
    monkeypatch.setattr(_httpx, "time", shim, raising=False)
    with make_client(hostile.url) as client:
        handle = client.start_chat("m", USER, on_content=lambda _: latch.set())
        assert handle.result(WAIT).content == "first"
        offset[0] = 3600.0  # an hour later
        assert client.chat("m", USER).content == "second"
    assert [r.connection for r in hostile.stream_requests()] == [1, 1]  # reused


# -- 5. Content-Encoding on both transports, bounded as it is decoded --


def encoded_response(
    encoding: str, pieces: list[bytes], *, gate: Latch | None = None
) -> list[Any]:
    """A chunked NDJSON response with each piece compressed and flushed on its own.

    With ``gate``, the server waits for it after the first piece: the client
    must decode that piece before the rest of the stream exists.
    """
    comp = Compressor(encoding)
    label = "deflate" if encoding == "raw-deflate" else encoding
    first = head(headers={"Content-Encoding": label}) + chunk(comp.piece(pieces[0]))
    rest = b"".join(chunk(comp.piece(p)) for p in pieces[1:]) + chunk(comp.end())
    steps: list[Any] = [Send(first)]
    if gate is not None:
        steps.append(Gate(gate))
    return [*steps, Send(rest + END)]


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate"])
def test_an_encoded_stream_is_decoded_line_by_line(
    hostile: Hostile, make_client: MakeClient, encoding: str
) -> None:
    latch = hostile.latch()
    hostile.enqueue(
        encoded_response(
            encoding, [line("Hello"), line(" gzip"), line(done=True)], gate=latch
        )
    )
    deltas: list[str] = []

    def on_content(text: str) -> None:
        deltas.append(text)
        latch.set()  # the first line was decoded before the rest was sent

    with make_client(hostile.url) as client:
        result = client.chat("m", USER, on_content=on_content)
    assert (result.content, result.done) == ("Hello gzip", True)
    assert deltas == ["Hello", " gzip"]


def test_a_multi_member_gzip_body_is_decoded(
    hostile: Hostile, make_client: MakeClient
) -> None:
    first, second = Compressor("gzip"), Compressor("gzip")
    body = first.piece(line("one")) + first.end()
    body += second.piece(line(" two") + line(done=True)) + second.end()
    hostile.enqueue(
        [Send(head(headers={"Content-Encoding": "gzip"}) + chunk(body) + END)]
    )
    with make_client(hostile.url) as client:
        assert client.chat("m", USER).content == "one two"


def test_an_encoded_error_body_is_decoded(
    hostile: Hostile, make_client: MakeClient
) -> None:
    comp = Compressor("gzip")
    body = comp.piece(b'{"error": "model \'nope\' not found"}') + comp.end()
    headers = {
        "Content-Encoding": "gzip",
        "Content-Type": "application/json",
        "Transfer-Encoding": "",
        "Content-Length": str(len(body)),
    }
    hostile.enqueue([Send(head(404, headers, reason="Not Found") + body)])
    with make_client(hostile.url) as client:
        with pytest.raises(ModelNotFound) as info:
            client.chat("m", USER)
    assert info.value.server_message == "model 'nope' not found"


@pytest.mark.parametrize("size", [1000, 1001])
def test_max_line_bytes_bounds_the_decoded_line(
    hostile: Hostile, make_client: MakeClient, size: int
) -> None:
    text = "x" * (size + 1 - len(line("")))  # `size` bytes and a newline
    assert len(line(text)) == size + 1
    hostile.enqueue(encoded_response("gzip", [line("a"), line(text), line(done=True)]))
    with make_client(hostile.url, max_line_bytes=1000) as client:
        if size <= 1000:
            assert client.chat("m", USER).content == "a" + text
            return
        with pytest.raises(ProtocolError, match="max_line_bytes") as info:
            client.chat("m", USER)
    assert info.value.partial.content == "a"


BOMB = 256 * 1024 * 1024
"""Bytes a gzip bomb inflates to; it is about 250 KB on the wire."""

_bombs: dict[str, bytes] = {}


def bomb_for(encoding: str) -> bytes:
    """A compressed body that inflates to ``BOMB`` bytes of one endless line."""
    if encoding not in _bombs:
        if encoding == "gzip":
            _bombs[encoding] = gzip_bomb(BOMB)
        elif encoding == "br":
            brotli = pytest.importorskip("brotli")
            _bombs[encoding] = brotli.compress(b"a" * (BOMB // 4), quality=5)
        else:
            zstd = pytest.importorskip("backports.zstd")
            _bombs[encoding] = zstd.compress(b"a" * (BOMB // 4))
    return _bombs[encoding]


@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd"])
def test_a_compressed_bomb_is_stopped_while_it_inflates(
    hostile: Hostile, make_client: MakeClient, encoding: str
) -> None:
    bomb = bomb_for(encoding)
    assert len(bomb) < 1024 * 1024
    body = b"".join(chunk(bomb[i : i + 65536]) for i in range(0, len(bomb), 65536))
    encoded = head(headers={"Content-Encoding": encoding})
    hostile.enqueue([Send(encoded), Send(body + END)])
    limit = 1024 * 1024
    with make_client(hostile.url, max_line_bytes=limit) as client:
        tracemalloc.start()
        try:
            with pytest.raises(ProtocolError, match="max_line_bytes"):
                client.chat("m", USER)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    # The line buffer may hold max_line_bytes; decoding adds a bounded piece
    # or two on top. Inflating one 64 KB read at once would take ~64 MB.
    assert peak < 8 * limit, f"peak traced memory {peak / 2**20:.1f} MiB"


def test_an_encoding_nobody_decodes_is_a_protocol_error(
    hostile: Hostile, make_client: MakeClient
) -> None:
    hostile.enqueue(
        [Send(chunked_response(b"\x1f\x9d\x90junk", {"Content-Encoding": "compress"}))]
    )
    with make_client(hostile.url) as client:
        with pytest.raises(ProtocolError):
            client.chat("m", USER)


@pytest.mark.parametrize("encoding", ["br", "zstd"])
def test_br_and_zstd_when_their_packages_are_installed(
    hostile: Hostile, make_client: MakeClient, encoding: str
) -> None:
    body = line("Hello") + line(" there") + line(done=True)
    if encoding == "br":
        brotli = pytest.importorskip("brotli")
        data = brotli.compress(body)
    else:
        zstd = pytest.importorskip("backports.zstd")
        data = zstd.compress(body)
    hostile.enqueue([Send(chunked_response(data, {"Content-Encoding": encoding}))])
    with make_client(hostile.url) as client:
        assert client.chat("m", USER).content == "Hello there"
    accepted = hostile.stream_requests()[0].headers.get("accept-encoding", "")
    assert encoding in accepted


def test_a_compressed_stream_is_asked_for_only_in_known_encodings(
    hostile: Hostile, make_client: MakeClient
) -> None:
    with make_client(hostile.url) as client:
        client.chat("m", USER)
    offered = hostile.stream_requests()[0].headers.get("accept-encoding", "")
    names = {n.strip() for n in offered.split(",") if n.strip()}
    assert {"gzip", "deflate"} <= names
    for name, module in (("br", "brotli"), ("zstd", "backports.zstd")):
        try:
            __import__(module)
        except ImportError:
            assert name not in names  # never ask for what cannot be decoded
