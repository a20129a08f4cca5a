"""embed(): batches in order, equal to the SDK's, with cancel, retry and errors."""

from __future__ import annotations

import functools
import os
import random
import re
import socket
from array import array
from collections.abc import Iterator, Mapping
from typing import Any

import ollama
import pytest

from ollama_stream_sync import (
    BatchHandle,
    BatchProgress,
    CallbackError,
    ContextLengthExceeded,
    EmbedResult,
    ProtocolError,
    RetryPolicy,
    ServerError,
    StreamingClient,
    StreamTimeout,
)
from ollama_stream_sync.testing import (
    Body,
    Delay,
    FakeOllama,
    Script,
    Stall,
    embedding,
    http_error,
)

from .support import WAIT
from .support.clients import MakeClient, assert_all_closed

pytestmark = pytest.mark.transport

SIZE = 8
FAST = RetryPolicy(initial_delay=0.01, jitter=False)
TRIALS = int(os.environ.get("EMBED_TRIALS", "150"))
SEED = int(os.environ.get("RACES_SEED", "20260101"))


class EmbedOllama(FakeOllama):
    """Stalls the requests whose first input is one of ``stalls`` (batches
    reach the server in an order no test controls: this names them)."""

    def __init__(self) -> None:
        super().__init__(models=[{"name": "emb", "embedding_length": SIZE}])
        self.stalls: set[str] = set()

    def _next_script(
        self, path: str, body: Mapping[str, Any] | None = None
    ) -> Script | None:
        first = ((body or {}).get("input") or [None])[0]
        if path == "/api/embed" and first in self.stalls:
            return [Stall()]
        return super()._next_script(path, body)


@pytest.fixture
def server() -> Iterator[EmbedOllama]:
    srv = EmbedOllama()
    try:
        yield srv
    finally:
        srv.close()


def texts(count: int) -> list[str]:
    return [f"text number {i}" for i in range(count)]


def reached(count: int, progress: BatchProgress) -> bool:
    return progress.done >= count


def embed_bodies(server: FakeOllama) -> list[dict[str, Any]]:
    with server._cond:  # the list grows on the server's threads
        return [
            r.body
            for r in server.requests
            if r.path == "/api/embed" and isinstance(r.body, dict)
        ]


def test_batches_come_back_in_order_and_equal_the_sdks(
    server: FakeOllama, make_client: MakeClient
) -> None:
    inputs = texts(300)
    seen: list[tuple[int, int]] = []
    with make_client(server.url) as client:
        result = client.embed(
            "emb",
            inputs,
            batch_size=64,
            max_concurrency=4,
            on_progress=lambda done, total: seen.append((done, total)),
        )
    sent = [len(body["input"]) for body in embed_bodies(server)]
    assert sorted(sent) == [44, 64, 64, 64, 64]
    with ollama.Client(server.url) as sdk:
        bare = sdk.embed("emb", inputs)
    assert isinstance(result, EmbedResult) and not result.cancelled
    assert result.embeddings == [list(v) for v in bare.embeddings]
    assert result.embeddings[7] == embedding(inputs[7], SIZE)
    assert result.model == "emb" and result.prompt_eval_count == bare.prompt_eval_count
    assert result.seconds > 0
    assert sorted(seen) == seen and seen[-1] == (300, 300) and len(seen) == 5


def test_a_single_text_an_empty_text_and_the_options_reach_the_server(
    server: FakeOllama, client: StreamingClient
) -> None:
    one = client.embed("emb", "hello", dimensions=4, keep_alive="1m", truncate=True)
    assert one.embeddings == [embedding("hello", 4)]
    assert embed_bodies(server)[-1] == {
        "model": "emb",
        "input": ["hello"],
        "dimensions": 4,
        "keep_alive": "1m",
        "truncate": True,
    }
    empty = client.embed("emb", "")  # Ollama: no vector; the model still loads
    assert empty.embeddings == [] and empty.prompt_eval_count is None
    assert embed_bodies(server)[-1]["input"] == []
    assert client.embed("emb", []).embeddings == []


def test_compact_vectors_are_float32_arrays(client: StreamingClient) -> None:
    result = client.embed("emb", texts(3), compact=True)
    assert all(isinstance(v, array) and v.typecode == "f" for v in result.embeddings)
    expected = array("f", embedding(texts(3)[2], SIZE))
    assert result.embeddings[2] == expected


def test_an_input_too_long_with_truncate_false_names_its_batch(
    server: FakeOllama, client: StreamingClient
) -> None:
    inputs = texts(10)
    inputs[6] = "far too many words for a context of eight tokens here"
    with pytest.raises(ContextLengthExceeded) as caught:
        client.embed(
            "emb", inputs, truncate=False, options={"num_ctx": 8}, batch_size=3
        )
    error = caught.value
    assert error.status_code == 400
    assert "batch 3 of 4 (inputs 6 to 8)" in str(error)
    assert "the input length exceeds the context length" in str(error)
    partial = error.partial
    assert isinstance(partial, EmbedResult)
    assert partial.embeddings == [embedding(t, SIZE) for t in inputs[:6]]
    # Cut silently by default, as Ollama does.
    assert len(client.embed("emb", inputs, options={"num_ctx": 8}).embeddings) == 10


def test_a_503_on_one_batch_is_retried_and_the_result_is_whole(
    server: FakeOllama, make_client: MakeClient
) -> None:
    server.enqueue(http_error(503, "server busy, please try again."), endpoint="embed")
    retries: list[int] = []
    inputs = texts(40)
    with make_client(server.url, retry=FAST) as client:
        result = client.embed(
            "emb",
            inputs,
            batch_size=8,
            max_concurrency=3,
            on_retry=lambda attempt, error, delay: retries.append(attempt),
        )
    assert result.embeddings == [embedding(t, SIZE) for t in inputs]
    assert retries == [1]
    firsts = [body["input"][0] for body in embed_bodies(server)]
    assert len(firsts) == 6 and sorted(set(firsts)) == sorted(inputs[::8])


def test_a_succeeded_batch_is_never_sent_twice(
    server: FakeOllama, client: StreamingClient
) -> None:
    # The second batch's answer is not Ollama's: a ProtocolError, never retried,
    # and the first batch (answered) is not sent again.
    server.enqueue([], [Body(b'{"embeddings": [[1.0]]}')], endpoint="embed")
    with pytest.raises(ProtocolError, match="batch 2 of 3"):
        client.embed("emb", texts(6), batch_size=2, retry=FAST)
    firsts = [body["input"][0] for body in embed_bodies(server)]
    assert firsts == ["text number 0", "text number 2"]


def test_answers_without_counters_are_accepted(
    server: FakeOllama, client: StreamingClient
) -> None:
    vector = embedding("x", SIZE)
    answer = b'{"embeddings":[%s]}' % str(vector).encode()
    server.enqueue([Body(answer)], endpoint="embed")
    result = client.embed("emb", "x")
    assert result.embeddings == [vector]
    assert result.prompt_eval_count is None and result.model == "emb"


def test_a_server_error_fails_the_call_and_cancels_the_other_batches(
    server: EmbedOllama, client: StreamingClient
) -> None:
    server.stalls = {"text number 0"}
    handle = client.start_embed("emb", texts(40), batch_size=2, max_concurrency=2)
    assert server.wait_stalled()
    server.enqueue(http_error(500, "boom"), endpoint="embed")  # for a later batch
    with pytest.raises(ServerError, match="boom") as caught:
        handle.result(WAIT)
    assert caught.value.status_code == 500
    assert server.wait_for(lambda s: s.disconnects_seen == 1)  # the stall was cut
    assert handle.join(WAIT)
    assert len(embed_bodies(server)) < 20


def test_cancel_mid_batch_stops_at_once_and_sends_nothing_more(
    server: EmbedOllama, make_client: MakeClient, worker_sockets: list[socket.socket]
) -> None:
    server.stalls = {"text number 4", "text number 6"}
    phases: list[str] = []
    with make_client(server.url) as client:
        handle = client.start_embed(
            "emb", texts(20), batch_size=2, max_concurrency=2, on_phase=phases.append
        )
        assert isinstance(handle, BatchHandle)
        assert server.wait_stalled(2)
        assert handle.wait_for(lambda p: p.done == 4, WAIT)
        assert handle.snapshot() == BatchProgress(4, 20)
        assert handle.cancel() is True
        result = handle.result(WAIT)
        assert result.cancelled and handle.cancelled()
        assert result.embeddings == [embedding(t, SIZE) for t in texts(4)]
        assert phases[0] == "connecting" and phases[-1] == "cancelled"
        assert server.wait_for(lambda s: s.in_flight("embed") == 0)
    assert server.wait_closed()
    assert len(embed_bodies(server)) == 4
    assert_all_closed(worker_sockets)


def test_the_deadline_bounds_the_whole_call(
    server: EmbedOllama, client: StreamingClient
) -> None:
    # Each batch alone is within the deadline; the three together never are.
    server.enqueue(*[[Delay(0.15)] for _ in range(3)], endpoint="embed")
    with pytest.raises(StreamTimeout) as caught:
        client.embed("emb", texts(6), batch_size=2, deadline=0.3)
    assert caught.value.which == "deadline"
    assert re.search(r"batch \d of 3 \(inputs \d to \d\)", str(caught.value))
    kept = caught.value.partial.embeddings
    assert kept == [embedding(t, SIZE) for t in texts(len(kept))]


def test_embed_checks_its_arguments_before_anything_starts(
    client: StreamingClient,
) -> None:
    with pytest.raises(TypeError, match="input"):
        client.embed("emb", [b"bytes"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="batch_size"):
        client.embed("emb", "x", batch_size=0)
    with pytest.raises(TypeError, match="on_progres"):
        client.embed("emb", "x", on_progres=print)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="model"):
        client.embed("", "x")


def test_embed_batches_wait_for_a_slot_under_max_in_flight(
    server: FakeOllama, make_client: MakeClient
) -> None:
    server.enqueue(*[[Delay(0.001)] for _ in range(10)], endpoint="embed")
    with make_client(server.url, max_in_flight=1) as client:
        result = client.embed("emb", texts(20), batch_size=2, max_concurrency=4)
    assert len(result.embeddings) == 20
    assert server.peak_in_flight("embed") == 1


@pytest.mark.usefixtures("fast_switching")
def test_cancel_at_random_moments_never_sends_a_batch_after_it(
    server: EmbedOllama, make_client: MakeClient
) -> None:
    """Cancels land at random moments: before the first batch, between batches,
    mid-batch, after the last. Whatever the moment, every batch the server saw
    was started before ``cancel()`` returned, the vectors kept are the leading
    inputs', whole and in order, and nothing is left running or open."""
    rng = random.Random(SEED)
    client = make_client(server.url)
    try:
        for trial in range(TRIALS):
            where = f"seed={SEED} trial={trial}"
            inputs = [f"trial {trial} text {i}" for i in range(24)]
            batch, limit = rng.choice([2, 3, 5]), rng.randint(1, 4)
            mode = rng.choice(["at once", "after progress", "in on_progress"])
            stall_at = rng.choice([None, 0, 1, 3]) if mode != "in on_progress" else None
            server.stalls = set() if stall_at is None else {inputs[stall_at * batch]}
            when = rng.randint(0, len(inputs))
            holder: list[BatchHandle[EmbedResult]] = []

            def progress(
                done: int, _: int, mode: str = mode, when: int = when, h: Any = holder
            ) -> None:
                if mode == "in on_progress" and done >= when:
                    h[0].cancel()  # on the batch's own thread

            handle = client.start_embed(
                "emb",
                inputs,
                batch_size=batch,
                max_concurrency=limit,
                on_progress=progress,
            )
            holder.append(handle)
            if stall_at is not None and mode != "at once":
                assert server.wait_stalled(), where  # cancel mid-batch
            elif mode == "after progress":
                assert handle.wait_for(functools.partial(reached, when), WAIT), where
            elif mode == "in on_progress":
                assert handle.wait(WAIT), where
            handle.cancel()
            started = set(handle._stream_state.children)  # white box: what ran
            result = handle.result(WAIT)
            assert handle.join(WAIT), where
            server.release()
            assert server.wait_for(lambda s: s.in_flight("embed") == 0), where
            # A request cut by the cancel as it was sent may arrive without its
            # body: it cannot be told apart, and is not counted.
            firsts = [
                str(b["input"][0])
                for b in embed_bodies(server)
                if b and str(b["input"][0]).startswith(f"trial {trial} ")
            ]
            seen = [int(first.split()[-1]) // batch for first in firsts]
            assert set(seen) <= started and len(seen) == len(set(seen)), where
            count = len(result.embeddings)
            assert result.embeddings == [embedding(t, SIZE) for t in inputs[:count]], (
                where
            )
            assert count % batch == 0 or count == len(inputs), where
            assert result.cancelled or count == len(inputs), where
    finally:
        client.close()
        make_client.release()
    assert server.wait_closed(), "connections left open after close()"


def test_batches_go_to_the_next_host_when_one_refuses(
    server: EmbedOllama, make_client: MakeClient, refused_url: str
) -> None:
    with make_client(hosts=[refused_url, server.url], retry=FAST) as client:
        result = client.embed("emb", texts(6), batch_size=2, max_concurrency=2)
    assert result.embeddings == [embedding(t, SIZE) for t in texts(6)]
    assert result.model == "emb"


def test_a_failing_on_progress_stops_the_call_and_its_batches(
    server: EmbedOllama, client: StreamingClient
) -> None:
    server.stalls = {"text number 2"}

    def broken(done: int, total: int) -> None:
        assert server.wait_stalled()  # the next batch is under way: stop it too
        raise RuntimeError("oops")

    with pytest.raises(CallbackError, match="oops"):
        client.embed(
            "emb", texts(8), batch_size=2, max_concurrency=2, on_progress=broken
        )
    assert server.wait_for(lambda s: s.disconnects_seen == 1)
    assert len(embed_bodies(server)) == 2
