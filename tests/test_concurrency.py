"""Many streams at once on one shared client: right results, nothing left behind."""

from __future__ import annotations

import concurrent.futures
import threading

from ollama_stream_sync.testing import Chunk, Delay, FakeOllama, Stall, reply

from .conftest import USER, WAIT, MakeClient


def test_sixteen_concurrent_streams_finish_with_their_own_text(
    server: FakeOllama,
    make_client: MakeClient,
) -> None:
    texts = {f"stream {i} " + " ".join(["word"] * 30) for i in range(16)}
    # a short pause before each answer makes the streams overlap on the wire
    server.enqueue(*[[Delay(0.01), *reply(t)] for t in texts])
    with make_client(server.url) as client:
        handles = [client.start_chat("m", USER) for _ in range(16)]
        _, pending = concurrent.futures.wait(handles, timeout=WAIT)
        assert not pending
        assert {h.result().content for h in handles} == texts
        assert len({h.thread.name for h in handles}) == 16
    make_client.release()  # the caller's sessions, if any
    assert server.wait_closed()


def test_sixteen_stalled_streams_all_cancel(
    server: FakeOllama, make_client: MakeClient
) -> None:
    server.enqueue(*[[Chunk(content=str(i)), Stall()] for i in range(16)])
    with make_client(server.url) as client:
        handles = [client.start_chat("m", USER) for _ in range(16)]
        assert server.wait_stalled(16)
        # The server wrote each chunk; wait until each client has it too.
        for handle in handles:
            assert handle.wait_for(lambda r: r.content != "", timeout=WAIT)
        for handle in handles:
            handle.cancel()
        results = [h.result(WAIT) for h in handles]
    assert all(r.cancelled for r in results)
    assert sorted(int(r.content) for r in results) == list(range(16))
    assert server.wait_for(lambda s: s.disconnects_seen == 16)
    make_client.release()  # the caller's sessions, if any
    assert server.wait_closed()


def test_one_client_shared_by_many_caller_threads(
    server: FakeOllama, make_client: MakeClient
) -> None:
    server.default_reply = reply("shared answer")
    errors: list[BaseException] = []
    contents: list[str] = []
    lock = threading.Lock()

    with make_client(server.url) as client:

        def caller() -> None:
            try:
                for _ in range(5):
                    text = client.chat("m", USER).content
                    with lock:
                        contents.append(text)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=caller) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT)
        assert not any(t.is_alive() for t in threads)
    assert not errors
    assert contents == ["shared answer"] * 40
