"""Retry by phase: what is retried, what is not, and nothing lost or doubled.

Which failure is retried, when, and how the caller's own policy composes with
ours is engine logic: it runs once, on httpx. That each transport turns its
failures into the right typed error is ``test_errors.py``'s.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import tenacity

from ollama_stream_sync import (
    CallbackError,
    ConnectionFailed,
    ModelNotFound,
    ProtocolError,
    RateLimited,
    RetryPolicy,
    ServerError,
    StreamError,
    StreamingClient,
)
from ollama_stream_sync.testing import (
    Chunk,
    Cut,
    DoneLine,
    ErrorLine,
    FakeOllama,
    Raw,
    Status,
    http_error,
    reply,
)

from .support import USER, WAIT
from .support.clients import Recorder, new_client

FAST = RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.02, jitter=False)


def terminal_kinds(rec: Recorder) -> list[str]:
    return [k for k, _ in rec.terminals]


def chat(client: StreamingClient, rec: Recorder, **kwargs: Any) -> Any:
    return client.chat("m", USER, **rec.kwargs(), **kwargs)


def test_503_burst_then_success(server: FakeOllama) -> None:
    server.enqueue(http_error(503, "server busy"), http_error(503, "busy"), reply("ok"))
    rec = Recorder()
    with new_client(server.url, retry=FAST) as client:
        result = chat(client, rec)
    assert result.content == "ok"
    retries = [p for k, p in rec.events if k == "retry"]
    assert [a for a, _, _ in retries] == [1, 2]
    assert all(
        isinstance(e, ServerError) and e.status_code == 503 for _, e, _ in retries
    )
    assert terminal_kinds(rec) == ["done"]
    assert len(server.stream_requests()) == 3


def test_503_forever_gives_up_with_the_last_real_error(server: FakeOllama) -> None:
    server.enqueue(*[http_error(503, "server busy")] * 3)
    rec = Recorder()
    with (
        new_client(server.url, retry=FAST) as client,
        pytest.raises(ServerError) as info,
    ):
        chat(client, rec)
    assert info.value.status_code == 503
    assert not isinstance(info.value, tenacity.RetryError)
    assert terminal_kinds(rec) == ["error"] and rec.kinds().count("retry") == 2
    assert len(server.stream_requests()) == 3


def test_connection_refused_retries_then_fails(refused_url: str) -> None:
    rec = Recorder()
    with new_client(refused_url, retry=FAST) as client:
        with pytest.raises(ConnectionFailed) as info:
            chat(client, rec)
    assert info.value.during_connect
    assert rec.kinds() == ["retry", "retry", "error"]


@pytest.mark.parametrize("status", [400, 401, 403])
def test_client_errors_are_never_retried(server: FakeOllama, status: int) -> None:
    server.enqueue(http_error(status, "no"), reply("never"))
    with new_client(server.url, retry=FAST) as client, pytest.raises(ServerError):
        client.chat("m", USER)
    assert len(server.stream_requests()) == 1


def test_model_not_found_is_never_retried(server: FakeOllama) -> None:
    server.enqueue(http_error(404, "model 'x' not found"), reply("never"))
    with (
        new_client(server.url, retry=FAST) as client,
        pytest.raises(ModelNotFound),
    ):
        client.chat("m", USER)
    assert len(server.stream_requests()) == 1


def test_cut_before_output_is_retried(server: FakeOllama) -> None:
    server.enqueue([Chunk(content=""), Cut()], reply("whole answer"))
    rec = Recorder()
    with new_client(server.url, retry=FAST) as client:
        assert chat(client, rec).content == "whole answer"
    assert rec.kinds().count("retry") == 1 and "reset" not in rec.kinds()


def test_cut_after_output_is_not_retried_by_default(server: FakeOllama) -> None:
    server.enqueue([Chunk(content="Half"), Cut()], reply("never"))
    rec = Recorder()
    with (
        new_client(server.url, retry=FAST) as client,
        pytest.raises(ConnectionFailed) as info,
    ):
        chat(client, rec)
    assert info.value.partial.content == "Half"
    assert rec.kinds() == ["content", "error"]
    assert len(server.stream_requests()) == 1


def test_cut_after_output_with_retry_after_output_resets(server: FakeOllama) -> None:
    server.enqueue(
        [Chunk(content="Old "), Chunk(content="text"), Cut()],
        reply("New text only."),
    )
    rec = Recorder()
    policy = RetryPolicy(initial_delay=0.01, jitter=False, retry_after_output=True)
    with new_client(server.url) as client:
        result = chat(client, rec, retry=policy)  # a per-call policy
    assert result.content == "New text only."  # nothing doubled
    kinds = rec.kinds()
    assert kinds[:2] == ["content", "content"]
    assert kinds[2:4] == ["retry", "reset"]
    reset_attempt, reset_error = rec.events[3][1]
    assert reset_attempt == 1 and isinstance(reset_error, ConnectionFailed)
    after = [p for k, p in rec.events[4:] if k == "content"]
    assert "".join(after) == "New text only."
    assert kinds[-1] == "done"


def test_in_band_error_before_output_is_retried(server: FakeOllama) -> None:
    server.enqueue([ErrorLine("model failed to load")], reply("loaded"))
    with new_client(server.url, retry=FAST) as client:
        assert client.chat("m", USER).content == "loaded"


def test_in_band_error_after_output_is_not_retried(server: FakeOllama) -> None:
    server.enqueue([Chunk(content="So far"), ErrorLine("runner died")], reply("x"))
    with (
        new_client(server.url, retry=FAST) as client,
        pytest.raises(ServerError) as info,
    ):
        client.chat("m", USER)
    assert info.value.partial.content == "So far"
    assert len(server.stream_requests()) == 1


@pytest.mark.parametrize(
    "script",
    [
        [Chunk(content="x"), Raw(b"not json"), DoneLine()],
        [Chunk(content="x")],  # no done line
        [Raw(b'{"model": "m", "message": {"content": "' + b"a" * (9 << 20) + b'"}}')],
    ],
    ids=["non-json", "no-done", "9-MiB-line"],
)
def test_protocol_errors_are_not_retried(server: FakeOllama, script: list[Any]) -> None:
    server.enqueue(script, reply("never"))
    with (
        new_client(server.url, retry=FAST) as client,
        pytest.raises(ProtocolError),
    ):
        client.chat("m", USER)
    assert len(server.stream_requests()) == 1


def test_html_error_page_from_a_proxy_is_retried(server: FakeOllama) -> None:
    page = b"<html><body>502 Bad Gateway</body></html>"
    server.enqueue([Status(502, page, content_type="text/html")], reply("through"))
    with new_client(server.url, retry=FAST) as client:
        assert client.chat("m", USER).content == "through"


def test_retry_after_is_honoured(server: FakeOllama) -> None:
    # The backoff would be 5 s; Retry-After: 0 makes it 0.
    server.enqueue(http_error(429, "slow down", Retry_After="0"), reply("ok"))
    rec = Recorder()
    policy = RetryPolicy(initial_delay=5.0, jitter=False)
    with new_client(server.url, retry=policy) as client:
        assert chat(client, rec).content == "ok"
    (_, _, delay) = next(p for k, p in rec.events if k == "retry")
    assert delay == 0.0


def test_retry_after_is_capped(server: FakeOllama) -> None:
    server.enqueue(http_error(503, "busy", Retry_After="3600"), reply("ok"))
    rec = Recorder()
    policy = RetryPolicy(max_retry_after=0.05)
    with new_client(server.url, retry=policy) as client:
        assert chat(client, rec).content == "ok"
    (_, _, delay) = next(p for k, p in rec.events if k == "retry")
    assert delay == 0.05


def test_callback_error_is_never_retried(server: FakeOllama) -> None:
    server.enqueue(reply("boom"), reply("never"))

    def on_content(_: str) -> None:
        raise ValueError("bug in the app")

    with (
        new_client(server.url, retry=FAST) as client,
        pytest.raises(CallbackError),
    ):
        client.chat("m", USER, on_content=on_content)
    assert len(server.stream_requests()) == 1


def test_cancel_during_backoff_ends_it_at_once(server: FakeOllama) -> None:
    server.enqueue(http_error(503, "busy"), reply("never"))
    rec = Recorder()
    slow = RetryPolicy(initial_delay=60.0, jitter=False)
    with new_client(server.url, retry=slow) as client:
        handle = client.start_chat("m", USER, **rec.kwargs())
        assert rec.wait_for(lambda r: "retry" in r.kinds())
        handle.cancel()
        result = handle.result(WAIT)  # far less than the 60 s backoff
    assert result.cancelled and terminal_kinds(rec) == ["done"]
    assert len(server.stream_requests()) == 1


def test_a_tenacity_retrying_of_your_own(server: FakeOllama) -> None:
    server.enqueue(*[http_error(500, "oops")] * 2)
    mine = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(2), wait=tenacity.wait_none()
    )
    with (
        new_client(server.url, retry=mine) as client,
        pytest.raises(ServerError) as info,
    ):
        client.chat("m", USER)
    assert info.value.status_code == 500  # the real error, never RetryError
    assert len(server.stream_requests()) == 2


def test_retries_are_logged_without_secrets(
    server: FakeOllama,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server.enqueue(http_error(503, "busy"), reply("ok"))
    caplog.set_level(logging.INFO, logger="ollama_stream_sync")
    with new_client(
        server.url, retry=FAST, headers={"Authorization": "Bearer s3cret-key"}
    ) as client:
        client.chat("m", USER)
    assert any("retrying" in r.getMessage() for r in caplog.records)
    assert "s3cret-key" not in caplog.text


def test_a_bad_retry_policy_raises_at_once_naming_the_field() -> None:
    """(A client's or a call's ``retry=`` that is not a policy: test_api.py.)"""
    with pytest.raises(TypeError, match="max_attempts"):
        RetryPolicy(max_attempts="3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises((TypeError, ValueError), match="initial_delay"):
        RetryPolicy(initial_delay=-1)


def test_retry_statuses_take_any_set() -> None:
    policy = RetryPolicy(retry_statuses={429, 503})
    assert policy.retry_statuses == frozenset({429, 503})
    assert RetryPolicy(retry_statuses=[500]).retry_statuses == frozenset({500})


def test_a_usage_limit_is_rate_limited_and_retried_only_with_retry_after(
    server: FakeOllama,
) -> None:
    limit = "you've reached your hourly usage limit, please upgrade to continue"
    server.enqueue(
        http_error(429, limit),
        http_error(429, limit, Retry_After="0"),
        reply("after the wait"),
    )
    with new_client(server.url, retry=FAST) as client:
        with pytest.raises(RateLimited) as info:
            client.chat("m", USER)
        assert info.value.retry_after is None
        assert client.chat("m", USER).content == "after the wait"
    assert len(server.stream_requests()) == 3


def test_a_plain_429_is_still_retried_as_before(
    server: FakeOllama, client: StreamingClient
) -> None:
    server.enqueue(http_error(429, "too many requests to the runner"), reply("ok"))
    assert client.chat("m", USER, retry=FAST).content == "ok"


def test_a_busy_server_moves_to_another_host_at_once() -> None:
    with FakeOllama() as busy, FakeOllama() as free:
        busy.enqueue(
            http_error(
                503, "server busy, please try again.  maximum pending requests exceeded"
            )
        )
        free.enqueue(reply("from the other host"))
        delays: list[float] = []
        slow = RetryPolicy(initial_delay=30.0, jitter=False)
        with StreamingClient(hosts=[busy.url, free.url], retry=slow) as client:
            result = client.chat("m", USER, on_retry=lambda a, e, d: delays.append(d))
        assert result.content == "from the other host"
        assert delays == [0.0]  # no 30 s backoff: another host had room


def test_without_a_policy_nothing_is_retried(server: FakeOllama) -> None:
    server.enqueue(http_error(503, "server busy, please try again."), reply("never"))
    with new_client(server.url) as client, pytest.raises(ServerError):
        client.chat("m", USER)
    assert len(server.stream_requests()) == 1


# -- the caller's own tenacity.Retrying -------------------------------------------


def user_retrying(**kwargs: Any) -> tenacity.Retrying:
    """A policy that retries every StreamError: wider than ours, on purpose."""
    settings: dict[str, Any] = {
        "stop": tenacity.stop_after_attempt(3),
        "wait": tenacity.wait_none(),
        "retry": tenacity.retry_if_exception_type(StreamError),
    }
    settings.update(kwargs)
    return tenacity.Retrying(**settings)


def test_the_callers_before_sleep_and_after_hooks_run_with_ours(
    server: FakeOllama,
) -> None:
    server.enqueue(http_error(503, "busy"), http_error(500, "boom"), reply("ok"))
    theirs: list[tuple[str, int, str]] = []
    ours: list[int] = []
    policy = user_retrying(
        before_sleep=lambda s: theirs.append(
            ("before_sleep", s.attempt_number, type(s.outcome.exception()).__name__)
        ),
        after=lambda s: theirs.append(("after", s.attempt_number, "")),
    )
    with new_client(server.url, retry=policy) as client:
        result = client.chat("m", USER, on_retry=lambda a, e, d: ours.append(a))
    assert result.content == "ok"
    assert ours == [1, 2]  # our on_retry still fires
    assert ("before_sleep", 1, "ServerError") in theirs
    assert ("before_sleep", 2, "ServerError") in theirs
    assert [t for t in theirs if t[0] == "after"] == [
        ("after", 1, ""),
        ("after", 2, ""),
    ]


NEVER_RETRIED = {
    "400": http_error(400, "model is required"),
    "401": http_error(401, "unauthorized"),
    "403": http_error(403, "forbidden"),
    "404-model": http_error(404, "model 'm' not found"),
    "404-route": http_error(404, "404 page not found"),
    "not-ndjson": [Raw(b"<html>captive portal</html>")],
    "no-done-line": [Chunk(content="x")],
    "usage-limit": http_error(429, "you have reached your hourly usage limit"),
}


@pytest.mark.parametrize("script", NEVER_RETRIED.values(), ids=NEVER_RETRIED.keys())
def test_never_retried_failures_stay_so_under_any_policy(
    server: FakeOllama, script: list[Any]
) -> None:
    server.enqueue(script, reply("must not be asked for"))
    with new_client(server.url, retry=user_retrying()) as client:
        with pytest.raises(StreamError) as info:
            client.chat("m", USER)
    assert isinstance(info.value, (ServerError, ProtocolError))
    assert len(server.stream_requests()) == 1


def test_a_callback_error_is_never_retried_under_any_policy(server: FakeOllama) -> None:
    server.enqueue(reply("one"), reply("two"))

    def on_content(_: str) -> None:
        raise RuntimeError("the UI is gone")

    with new_client(server.url, retry=user_retrying()) as client:
        with pytest.raises(CallbackError):
            client.chat("m", USER, on_content=on_content)
    assert len(server.stream_requests()) == 1


@pytest.mark.parametrize("reraise", [True, False])
def test_the_last_real_error_ends_a_callers_policy(
    server: FakeOllama, reraise: bool
) -> None:
    server.enqueue(*[http_error(503, f"busy {i}") for i in range(3)])
    with new_client(server.url, retry=user_retrying(reraise=reraise)) as client:
        with pytest.raises(ServerError, match="busy 2"):  # never tenacity.RetryError
            client.chat("m", USER)


def test_a_callers_retry_error_callback_does_not_swallow_the_error(
    server: FakeOllama,
) -> None:
    """tenacity returns retry_error_callback's value instead of raising: a
    stream that failed would look like an empty answer."""
    server.enqueue(*[http_error(503, f"busy {i}") for i in range(3)])
    called: list[int] = []
    policy = user_retrying(
        retry_error_callback=lambda s: called.append(s.attempt_number)
    )
    with new_client(server.url, retry=policy) as client:
        with pytest.raises(ServerError, match="busy 2"):
            client.chat("m", USER)
    assert called == [3]  # theirs still ran


# -- a host that refused a connection is left at once and cools down -------------


def failovers(client: StreamingClient, count: int) -> list[int]:
    """Chat ``count`` times; how many attempts moved to another host in each."""
    out = []
    for _ in range(count):
        moves: list[Any] = []
        client.chat("m", USER, on_retry=lambda *_, seen=moves: seen.append(1))
        out.append(len(moves))
    return out


def test_a_refusing_host_cools_down_without_a_retry_policy(
    server: FakeOllama, refused_url: str
) -> None:
    """No policy: the call that finds the host refusing moves to the other at
    once (a failover, not a retry); the calls after it skip it."""
    with new_client(
        hosts=[refused_url, server.url], retry=None, routing="round_robin"
    ) as client:
        assert failovers(client, 4) == [1, 0, 0, 0]
        health = {h.url: (h.cooling_down, h.breaker) for h in client.health()}
    assert health == {refused_url: (True, "open"), server.url: (False, "closed")}
    assert len(server.stream_requests()) == 4


def test_without_a_cooldown_the_hosts_alternate(
    server: FakeOllama, refused_url: str
) -> None:
    """The counterpart: it is the cool-down that skips the refusing host."""
    with new_client(
        hosts=[refused_url, server.url],
        retry=None,
        host_cooldown=0,
        routing="round_robin",
    ) as client:
        assert failovers(client, 4) == [1, 0, 1, 0]
