"""The fast paths are right: for random streams split at random byte boundaries, the
result equals what the bare SDK accumulates from the same bytes."""

from __future__ import annotations

import json
import random
import zlib
from typing import Any

import ollama
import pytest

from ollama_stream_sync import ProtocolError, StreamingClient, _decode
from ollama_stream_sync.testing import Bytes, ContentEncoding, FakeOllama, Script

from .conftest import USER, MakeClient

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


@pytest.mark.parametrize("parser", ["json", "orjson"])
@pytest.mark.parametrize("encoding", [None, "gzip"])
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


def test_a_stream_through_a_client_matches_when_chunks_hold_many_lines(
    server: FakeOllama, client: StreamingClient
) -> None:
    """The batched path: many lines in one read."""
    rng = random.Random(3)
    data = random_stream(rng)
    server.enqueue([Bytes(data)], [Bytes(data)])
    expected = bare_sdk(server.url)
    result = client.chat("m", USER)
    assert (result.thinking, result.content) == expected[:2]
