"""Bodies as the wire brings them: Content-Encoding, bounded as it is decoded,
and lines split anywhere, on both transports.

Each transport decodes its own bodies (httpx's decoders, urllib3's), so every
test here runs on both. The differential test checks the fast paths against the
bare SDK: random streams cut at random byte boundaries give the same result.
"""

from __future__ import annotations

import json
import random
import tracemalloc
import zlib
from typing import Any

import ollama
import pytest

from ollama_stream_sync import ModelNotFound, ProtocolError, _decode
from ollama_stream_sync.testing import Bytes, ContentEncoding, FakeOllama, Script

from .support import USER
from .support.clients import MakeClient
from .support.hostile import (
    END,
    Compressor,
    Gate,
    Hostile,
    Latch,
    Send,
    chunk,
    chunked_response,
    gzip_bomb,
    head,
    line,
)

pytestmark = pytest.mark.transport

# -- Content-Encoding ------------------------------------------------------------------


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


# -- random streams split anywhere match the bare SDK ----------------------------------


TRIALS = 12  # per transport, parser and encoding; each a fresh random stream
PIECES = [
    "a",
    " b",
    "é",
    "日本",
    "\\",
    '"',
    "\n",
    "👍",
    " ",
    "{",
    "}",
    "tok",
    "—",
    "\t",
]


def random_stream(rng: random.Random) -> bytes:
    """An Ollama chat stream as bytes: thinking, content, tool calls, unicode."""
    lines: list[dict[str, Any]] = []
    thinking = rng.random() < 0.5
    for i in range(rng.randint(1, 60)):
        message: dict[str, Any] = {"role": "assistant", "content": ""}
        if thinking and i < 5:
            message["thinking"] = "".join(rng.choices(PIECES, k=rng.randint(1, 4)))
        else:
            message["content"] = "".join(rng.choices(PIECES, k=rng.randint(0, 5)))
        if rng.random() < 0.05:
            message["tool_calls"] = [
                {
                    "id": f"call_{i}",
                    "function": {
                        "index": 0,
                        "name": "lookup",
                        "arguments": {"q": "".join(rng.choices(PIECES, k=3))},
                    },
                }
            ]
        lines.append(
            {
                "model": "m",
                "created_at": "2026-01-01T00:00:00Z",
                "message": message,
                "done": False,
            }
        )
    final = {
        "model": "m",
        "created_at": "2026-01-01T00:00:00Z",
        "message": {"role": "assistant", "content": rng.choice(["", "end"])},
        "done": True,
        "done_reason": "stop",
        "eval_count": len(lines),
    }
    lines.append(final)
    ascii_only = rng.random() < 0.5
    return b"".join(
        json.dumps(line, ensure_ascii=ascii_only).encode() + b"\n" for line in lines
    )


def split(rng: random.Random, data: bytes) -> Script:
    """The bytes cut at random places, each piece its own HTTP chunk."""
    steps: Script = []
    at = 0
    while at < len(data):
        size = rng.choice([1, 2, 3, 7, 16, 64, 500, len(data)])
        steps.append(Bytes(data[at : at + size]))
        at += size
    return steps


def bare_sdk(url: str) -> tuple[str, str, list[Any]]:
    """What the SDK's own loop accumulates."""
    thinking, content, calls = [], [], []
    with ollama.Client(url) as sdk:
        for part in sdk.chat("m", USER, stream=True):
            thinking.append(part.message.thinking or "")
            content.append(part.message.content or "")
            for call in part.message.tool_calls or ():
                calls.append((call.function.name, dict(call.function.arguments)))
    return "".join(thinking), "".join(content), calls


COMBINATIONS = [
    ("httpx", "json", None),
    ("httpx", "orjson", "gzip"),
    ("requests", "orjson", None),
    ("requests", "json", "gzip"),
]
"""Each transport with each parser and each encoding, each parser with each
encoding: every pair is covered, in half the runs of every triple."""


@pytest.mark.parametrize(("transport", "parser", "encoding"), COMBINATIONS)
def test_random_streams_split_anywhere_match_the_bare_sdk(
    make_client: MakeClient,
    transport: str,
    parser: str,
    encoding: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if parser == "json":
        monkeypatch.setattr(_decode, "_loads", json.loads)
    elif _decode._loads is json.loads:
        pytest.fail("the fast extra (orjson) is part of .[dev]: install it")
    seed = zlib.crc32(f"{transport}/{parser}/{encoding}".encode())  # reproducible
    rng = random.Random(seed)
    with FakeOllama() as server, make_client(server.url) as client:
        for trial in range(TRIALS):
            data = random_stream(rng)
            head: Script = [ContentEncoding(encoding)] if encoding else []
            script = head + split(rng, data)
            server.enqueue(script, script)
            expected = bare_sdk(server.url)
            result = client.chat("m", USER)
            got = (
                result.thinking,
                result.content,
                [
                    (c["function"]["name"], c["function"]["arguments"])
                    for c in result.tool_calls
                ],
            )
            assert got == expected, f"seed {seed}, trial {trial}"
            assert result.done and result.eval_count == data.count(b"\n") - 1


def test_a_stream_through_a_client_matches_when_chunks_hold_many_lines(
    server: FakeOllama, make_client: MakeClient
) -> None:
    """The batched path: many lines in one read."""
    rng = random.Random(3)
    data = random_stream(rng)
    server.enqueue([Bytes(data)], [Bytes(data)])
    expected = bare_sdk(server.url)
    with make_client(server.url) as client:
        result = client.chat("m", USER)
    assert (result.thinking, result.content) == expected[:2]


def test_the_parsers_agree_on_every_line_shape() -> None:
    """json and orjson give the same chunks, and the same typed errors."""
    rng = random.Random(7)
    for _ in range(50):
        data = random_stream(rng)
        fast = _decode.Lines()
        assert _decode._loads is not json.loads
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(_decode, "_loads", json.loads)
            plain = _decode.Lines()
            expected = plain.feed(data)
        assert fast.feed(data) == expected
    for bad in (b"[" * 5000 + b"\n", b"{not json}\n", b"[1, 2]\n", b'{"a": 1} x\n'):
        fast = _decode.Lines()
        fast.feed(bad)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(_decode, "_loads", json.loads)
            plain = _decode.Lines()
            plain.feed(bad)
        assert type(fast.error) is type(plain.error) is ProtocolError
