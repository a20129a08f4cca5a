"""Pull, push and create with honest progress and cancel; preload, unload, ps."""

from __future__ import annotations

import datetime as dt
import inspect
import itertools
import threading
from typing import Any

import ollama
import pytest

from ollama_stream_sync import (
    LoadedModel,
    ModelNotFound,
    ModelResult,
    Phase,
    Progress,
    ProgressHandle,
    RetryPolicy,
    ServerError,
    StreamingClient,
    StreamTimeout,
)
from ollama_stream_sync._state import ProgressState as ProgressTracker
from ollama_stream_sync._state import stage_of
from ollama_stream_sync.testing import (
    Cut,
    ErrorLine,
    FakeOllama,
    Stall,
    pull_script,
    reply,
)
from ollama_stream_sync.testing import Progress as Line

from .support import USER, WAIT
from .support.clients import MakeClient

FAST = RetryPolicy(initial_delay=0.01, jitter=False)
LAYERS = [600_000, 90_000, 4_000, 500]


def fractions(seen: list[Progress]) -> list[float]:
    return [p.fraction for p in seen if p.fraction is not None]


def test_a_multi_layer_pull_reports_monotonic_overall_progress(
    server: FakeOllama, make_client: MakeClient
) -> None:
    server.enqueue(pull_script("llama3.2", layers=LAYERS, steps=4), endpoint="pull")
    seen: list[Progress] = []
    with make_client(server.url) as client:
        result = client.pull("llama3.2", on_progress=seen.append)
    assert isinstance(result, ModelResult)
    assert (result.model, result.operation, result.status) == (
        "llama3.2",
        "pull",
        "success",
    )
    assert not result.cancelled and result.progress == seen[-1]
    values = fractions(seen)
    assert values == sorted(values) and values[-1] == 1.0
    assert seen[-1].completed == sum(LAYERS) == seen[-1].total
    # the total grew as layers appeared, the fraction never went back
    assert len({p.total for p in seen if p.total}) > 1
    stages = [stage for stage, _ in itertools.groupby(p.stage for p in seen)]
    assert stages == ["manifest", "downloading", "verifying", "writing", "success"]
    downloading = [p for p in seen if p.stage == "downloading"]
    assert all(p.digest and p.layer_total for p in downloading)
    assert server.requests[-1].body == {"model": "llama3.2", "stream": True}


def test_cancel_mid_download_stops_at_once_and_closes_the_socket(
    server: FakeOllama, make_client: MakeClient
) -> None:
    lines = pull_script("llama3.2", layers=LAYERS, steps=4)
    server.enqueue([*lines[:3], Stall()], endpoint="pull")
    with make_client(server.url) as client:
        handle = client.start_pull("llama3.2")
        assert isinstance(handle, ProgressHandle)
        assert handle.wait_for(lambda p: p.completed > 0, WAIT)
        assert handle.cancel()
        result = handle.result(WAIT)
    assert result.cancelled and result.progress is not None
    assert 0 < result.progress.completed < sum(LAYERS)
    assert server.wait_for(lambda s: s.disconnects_seen == 1)


def test_an_unknown_model_is_model_not_found(
    make_client: MakeClient,
) -> None:
    with FakeOllama(unknown_models=["no-such-model"]) as server:
        with make_client(server.url) as client, pytest.raises(ModelNotFound) as info:
            client.pull("no-such-model")
    assert info.value.model == "no-such-model"
    assert "no-such-model" in str(info.value)
    assert "check its name and tag" in str(info.value)  # pulling it is what failed
    assert isinstance(info.value.partial, Progress)


def test_an_error_line_mid_pull_keeps_the_last_progress(
    server: FakeOllama, make_client: MakeClient
) -> None:
    lines = pull_script("llama3.2", layers=LAYERS, steps=4)
    server.enqueue(
        [*lines[:4], ErrorLine("max retries exceeded: EOF")], endpoint="pull"
    )
    errors: list[Any] = []
    with make_client(server.url) as client, pytest.raises(ServerError) as info:
        client.pull("llama3.2", on_error=errors.append)
    last = info.value.partial
    assert isinstance(last, Progress) and last.completed > 0
    assert errors == [info.value]
    assert "max retries exceeded" in str(info.value)


def test_retry_resumes_a_failed_pull_and_progress_never_goes_back(
    server: FakeOllama, make_client: MakeClient
) -> None:
    first = pull_script("llama3.2", layers=LAYERS, steps=4)
    server.enqueue([*first[:4], Cut()], first, endpoint="pull")
    seen: list[Progress] = []
    retries: list[Any] = []
    with make_client(server.url, retry=FAST) as client:
        result = client.pull(
            "llama3.2", on_progress=seen.append, on_retry=lambda *a: retries.append(a)
        )
    assert result.status == "success" and len(retries) == 1
    values = fractions(seen)
    assert values == sorted(values) and values[-1] == 1.0
    assert [r.path for r in server.requests].count("/api/pull") == 2


def test_a_stalled_pull_hits_the_read_timeout(
    server: FakeOllama, make_client: MakeClient
) -> None:
    lines = pull_script("llama3.2", layers=LAYERS, steps=4)
    server.enqueue([*lines[:3], Stall()], endpoint="pull")
    with make_client(server.url, read_timeout=0.2) as client:
        with pytest.raises(StreamTimeout) as info:
            client.pull("llama3.2")
    assert info.value.which == "read"
    assert isinstance(info.value.partial, Progress) and info.value.partial.completed > 0
    assert server.wait_for(lambda s: s.disconnects_seen == 1)


def test_progress_is_coalesced_to_the_latest(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue(pull_script("llama3.2", layers=LAYERS, steps=4), endpoint="pull")
    seen: list[Progress] = []
    client.pull("llama3.2", on_progress=seen.append, coalesce_interval=10.0)
    assert len(seen) == 1 and seen[0].done


def test_push_and_create_stream_progress(
    server: FakeOllama, make_client: MakeClient
) -> None:
    seen: list[Progress] = []
    with make_client(server.url) as client:
        created = client.create(
            "brief", from_="fake-model", system="Be brief.", on_progress=seen.append
        )
        pushed = client.push("fake-model")
    assert (created.operation, created.status) == ("create", "success")
    assert pushed.status == "success"
    assert "creating" in {p.stage for p in seen}
    create_body = next(r.body for r in server.requests if r.path == "/api/create")
    assert create_body == {
        "model": "brief",
        "stream": True,
        "from": "fake-model",
        "system": "Be brief.",
    }


def test_create_takes_the_arguments_of_the_sdk() -> None:
    sdk = set(inspect.signature(ollama.Client.create).parameters) - {"self", "stream"}
    ours = set(inspect.signature(StreamingClient.create).parameters) - {"self"}
    assert sdk <= ours
    start = set(inspect.signature(StreamingClient.start_create).parameters)
    assert sdk <= start


def test_preload_unload_and_loaded_models_parse_ollamas_shapes(
    server: FakeOllama, make_client: MakeClient
) -> None:
    with make_client(server.url) as client:
        loaded = client.preload("fake-model", keep_alive="10m")
        models = client.loaded_models()
        unloaded = client.unload("fake-model")
        after = client.loaded_models()
    assert (loaded.operation, loaded.done_reason) == ("preload", "load")
    assert loaded.seconds >= 0
    assert unloaded.done_reason == "unload"
    (model,) = models
    assert isinstance(model, LoadedModel)
    assert model.name == "fake-model" and model.size > 0
    assert model.size_vram == model.size and model.context_length
    assert isinstance(model.expires_at, dt.datetime) and model.expires_at.tzinfo
    assert after == []  # unload invalidated the short cache
    preload_body = next(r.body for r in server.requests if r.path == "/api/generate")
    assert preload_body == {"model": "fake-model", "stream": True, "keep_alive": "10m"}


def test_two_immediate_calls_to_loaded_models_send_one_request(
    server: FakeOllama, client: StreamingClient
) -> None:
    first, second = client.loaded_models(), client.loaded_models()
    assert first == second
    assert [r.path for r in server.requests].count("/api/ps") == 1


def test_probe_loading_reports_loading_when_the_model_is_not_resident(
    server: FakeOllama, make_client: MakeClient
) -> None:
    server.loaded = []
    server.enqueue([Stall(), *reply("ready")], reply("again"))
    with make_client(server.url, probe_loading=True) as client:
        stream = client.stream_chat("fake-model", USER)
        handle = stream.handle
        # reported while the server is still silent
        assert handle.wait_for(lambda _: handle.phase == "loading", WAIT)
        assert server.wait_stalled()  # release() ends a stall already begun
        server.release()
        names = [e.name for e in stream if isinstance(e, Phase)]
        warm: list[str] = []
        client._loaded.forget()  # the server now lists the model as loaded
        client.chat("fake-model", USER, on_phase=warm.append)
    assert names in (
        ["connecting", "loading", "answering", "done"],
        ["connecting", "waiting", "loading", "answering", "done"],
    )
    assert "loading" not in warm and warm[:2] == ["connecting", "waiting"]


def test_an_inline_on_phase_gets_loading_before_the_next_event(
    server: FakeOllama, client: StreamingClient
) -> None:
    """Inline callbacks run on the worker: a probe's late answer waits for it."""
    server.loaded = []
    server.enqueue([Stall(), *reply("ready")])
    phases: list[str] = []
    handle = client.start_chat(
        "fake-model", USER, on_phase=phases.append, probe_loading=True
    )
    assert handle.wait_for(lambda _: handle.phase == "loading", WAIT)
    assert server.wait_stalled()  # release() ends a stall already begun
    server.release()
    handle.result(WAIT)
    assert phases[-3:] == ["loading", "answering", "done"]


def test_the_probe_is_off_by_default(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue(reply("x"))
    client.chat("m", USER)
    assert "/api/ps" not in [r.path for r in server.requests]


# -- the progress state, fed by hand: no network, no threads ----------------------


def test_fraction_holds_when_a_new_layer_grows_the_total() -> None:
    tracker = ProgressTracker("m", "pull")
    lines = [
        {
            "status": "pulling aaa",
            "digest": "sha256:aaa",
            "total": 100,
            "completed": 50,
        },
        {"status": "pulling bbb", "digest": "sha256:bbb", "total": 100, "completed": 0},
        {
            "status": "pulling bbb",
            "digest": "sha256:bbb",
            "total": 100,
            "completed": 10,
        },
        {
            "status": "pulling aaa",
            "digest": "sha256:aaa",
            "total": 100,
            "completed": 100,
        },
    ]
    seen = []
    for i, line in enumerate(lines):
        events, error = tracker.feed([line], float(i))
        assert error is None
        seen.append(events[0].fraction)
    assert seen == [0.5, 0.5, 0.5, 0.55]  # 50/200 would go back: held at 0.5


def test_speed_and_eta_appear_once_stable() -> None:
    tracker = ProgressTracker("m", "pull", clock=lambda: 0.0)
    snapshots = []
    for tick in range(30):  # 10 MB/s for 3 s, a line every 0.1 s
        line = {
            "status": "pulling aaa",
            "digest": "sha256:aaa",
            "total": 100_000_000,
            "completed": tick * 1_000_000,
        }
        tracker.feed([line], tick * 0.1)
        snapshots.append(tracker.snapshot())
    assert snapshots[2].bytes_per_second is None and snapshots[2].eta is None
    last = snapshots[-1]
    assert last.bytes_per_second == pytest.approx(10_000_000, rel=0.01)
    assert last.eta == pytest.approx((100_000_000 - 29_000_000) / 10_000_000, rel=0.01)


@pytest.mark.parametrize(
    ("status", "stage"),
    [
        ("pulling manifest", "manifest"),
        ("retrieving manifest", "manifest"),
        ("pushing manifest", "manifest"),
        ("pulling 8eeb52dfb3bb", "downloading"),
        ("pushing 8eeb52dfb3bb", "uploading"),
        ("verifying sha256 digest", "verifying"),
        ("writing manifest", "writing"),
        ("removing unused layers", "cleanup"),
        ("using existing layer sha256:abc", "creating"),
        ("parsing GGUF", "creating"),
        ("success", "success"),
        ("something new", "other"),
    ],
)
def test_stages_are_read_from_ollamas_status_text(status: str, stage: str) -> None:
    assert stage_of(status) == stage


def test_a_line_without_status_is_a_protocol_error(
    server: FakeOllama, client: StreamingClient
) -> None:
    from ollama_stream_sync import ProtocolError

    server.enqueue([Line("pulling manifest"), *reply("not progress")], endpoint="pull")
    with pytest.raises(ProtocolError, match="status"):
        client.pull("llama3.2")


def test_a_waiter_takes_no_stale_answer_when_the_fetch_it_waited_for_failed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two callers, one fetch: when that fetch fails, the caller that waited for
    it fetches itself instead of taking the answer that had expired."""
    from ollama_stream_sync import _models

    waiting = threading.Event()

    class Flight(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            waiting.set()  # the second caller waits for the first's fetch
            return super().wait(timeout)

    monkeypatch.setattr(_models.threading, "Event", Flight)
    answers: _models.SharedAnswers[str] = _models.SharedAnswers(ttl=60.0)
    answers._cache["host"] = (0.0, "old")  # long expired
    fetching, fail = threading.Event(), threading.Event()

    def failing() -> str:
        fetching.set()
        assert fail.wait(WAIT)
        raise ConnectionError("the server went away")

    def first_caller() -> None:
        with pytest.raises(ConnectionError):
            answers.get("host", failing, WAIT)

    got: list[str] = []
    first = threading.Thread(target=first_caller)
    second = threading.Thread(target=lambda: got.append(answers.get("host", str, WAIT)))
    first.start()
    assert fetching.wait(WAIT)
    second.start()
    assert waiting.wait(WAIT)
    fail.set()
    first.join(WAIT)
    second.join(WAIT)
    assert got == [""]  # its own fetch (str() is ""), not the expired "old"
