"""Routing over several hosts, with no network: the strategies, the breaker,
the model lists and their background refresh, on fake hosts and a fake clock."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import pytest

from ollama_stream_sync import (
    ConnectionFailed,
    HostHealth,
    ModelNotFound,
    ProtocolError,
    ServerError,
    StreamTimeout,
)
from ollama_stream_sync._hosts import (
    Host,
    Hosts,
    LeastBusy,
    ModelAware,
    RoundRobin,
    model_key,
    same_model,
)
from ollama_stream_sync._models import SharedAnswers, loaded_on

from .support import WAIT

REFUSED = ConnectionFailed("refused", during_connect=True)
BROKEN = ConnectionFailed("reset by peer")
BAD_GATEWAY = ServerError("bad gateway", status_code=502)
MISSING = ModelNotFound("model 'm' not found", status_code=404)


class FakeTransport:
    """Only what ``Host`` reads: the URL."""

    def __init__(self, url: str) -> None:
        self.url = url


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(
    count: int = 3, clock: Clock | None = None, **kwargs: Any
) -> tuple[Hosts, list[Host]]:
    hosts = [Host(FakeTransport(f"http://h{i}")) for i in range(count)]  # type: ignore[arg-type]
    return Hosts(hosts, clock=clock or Clock(), **kwargs), hosts


def attempt(
    hosts: Hosts,
    error: Exception | None = None,
    *,
    model: str | None = "m",
    ok: bool | None = None,
    **pick: Any,
) -> Host:
    """One whole attempt: pick, then end it (ok unless ``error``)."""
    owner = object()
    host = hosts.pick(model, owner=owner, **pick)
    hosts.done(
        host,
        error,  # type: ignore[arg-type]
        owner=owner,
        ok=error is None if ok is None else ok,
        model=model,
        ttft=0.1,
    )
    return host


def view(url: str, **fields: Any) -> HostHealth:
    return HostHealth(url, True, **fields)


# -- names -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("qwen3", "qwen3:latest"),
        ("Qwen3:8B", "qwen3:8b"),
        ("registry.ollama.ai/library/qwen3", "qwen3"),
        ("gpt-oss:20b:cloud", "gpt-oss:20b"),
        ("gpt-oss:20b-cloud", "gpt-oss:20b"),
        ("qwen3:local", "qwen3:latest"),
    ],
)
def test_names_match_as_ollama_matches_them(a: str, b: str) -> None:
    assert same_model(a, b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("qwen3:8b", "qwen3"),
        ("qwen3", "qwen2.5"),
        ("other.example:5000/m", "m"),
        ("me/qwen3", "qwen3"),
    ],
)
def test_different_models_differ(a: str, b: str) -> None:
    assert not same_model(a, b)


def test_a_registry_port_is_not_a_tag() -> None:
    assert model_key("other.example:5000/m") == "other.example:5000/m:latest"


# -- the strategies ------------------------------------------------------------------


def test_round_robin_takes_turns() -> None:
    router = RoundRobin()
    views = [view("a"), view("b"), view("c")]
    assert [router.choose("m", views).url for _ in range(4)] == ["a", "b", "c", "a"]


def test_least_busy_counts_streams_then_first_tokens() -> None:
    router = LeastBusy()
    views = [
        view("a", in_flight=2, last_ttft=0.1),
        view("b", in_flight=1, last_ttft=0.9),
        view("c", in_flight=1, last_ttft=0.2),
    ]
    assert router.choose("m", views).url == "c"
    assert router.choose("m", views[:2]).url == "b"


def test_model_aware_prefers_memory_then_disk_then_unknown() -> None:
    router = ModelAware()
    lacking = view("lacking", models_available=("other:latest",))
    unknown = view("unknown", in_flight=3)
    on_disk = view("disk", in_flight=5, models_available=("qwen3:latest",))
    loaded = view("loaded", in_flight=9, models_loaded=("qwen3:latest",))
    order = [lacking, unknown, on_disk, loaded]
    assert router.choose("qwen3", order).url == "loaded"
    assert router.choose("qwen3", order[:3]).url == "disk"
    assert router.choose("qwen3", order[:2]).url == "unknown"
    assert router.choose(None, order).url == "lacking"  # no model: least busy


def test_model_aware_is_least_busy_among_equals() -> None:
    router = ModelAware()
    views = [
        view("a", in_flight=2, models_loaded=("m:latest",)),
        view("b", in_flight=1, models_loaded=("m",)),
    ]
    assert router.choose("m", views).url == "b"


def test_a_router_of_your_own_sees_what_the_client_knows() -> None:
    seen: list[Sequence[HostHealth]] = []

    class Last:
        def choose(self, model: str | None, hosts: Sequence[HostHealth]) -> Any:
            seen.append(hosts)
            return hosts[-1]

    hosts, (_a, _b, c) = make(routing=Last())
    busy = hosts.pick("m", owner=object())  # the last one
    assert busy is c
    assert attempt(hosts) is c
    (_first, second) = seen
    assert [v.in_flight for v in second] == [0, 0, 1]
    assert all(v.breaker == "closed" and v.reachable for v in second)


def test_a_router_that_answers_something_else_is_a_clear_error() -> None:
    class Wrong:
        def choose(self, model: str | None, hosts: Sequence[HostHealth]) -> Any:
            return view(hosts[0].url)  # equal, but not one of those given

    hosts, _ = make(routing=Wrong())
    with pytest.raises(ValueError, match="not one of the hosts"):
        hosts.pick("m", owner=object())


# -- the breaker -------------------------------------------------------------------


def test_a_refused_connection_opens_the_breaker_at_once() -> None:
    hosts, (a, b, c) = make(routing=RoundRobin())
    assert attempt(hosts, REFUSED) is a
    assert hosts.view(a).breaker == "open" and hosts.view(a).cooling_down
    served = [attempt(hosts) for _ in range(4)]
    assert a not in served and served.count(b) == served.count(c) == 2


def test_three_failures_in_a_row_open_it_and_a_success_resets_the_count() -> None:
    hosts, (a,) = make(1)
    attempt(hosts, BROKEN)
    attempt(hosts, BAD_GATEWAY)
    attempt(hosts)  # a success: the count starts again
    attempt(hosts, BROKEN)
    attempt(hosts, StreamTimeout("no connection", which="connect"))
    assert hosts.view(a).breaker == "closed"
    attempt(hosts, BAD_GATEWAY)
    assert hosts.view(a).breaker == "open"


@pytest.mark.parametrize(
    "error",
    [
        MISSING,
        ServerError("bad request", status_code=400),
        ServerError("runner says no", status_code=None),
        ProtocolError("not JSON"),
        StreamTimeout("slow model", which="first_token"),
        StreamTimeout("silence", which="read"),
    ],
)
def test_failures_that_say_nothing_of_the_host_never_open_it(error: Exception) -> None:
    hosts, (a,) = make(1)
    for _ in range(5):
        attempt(hosts, error)
    assert hosts.view(a).breaker == "closed"


def test_a_gateways_504_counts_against_its_host() -> None:
    timeout = StreamTimeout("the gateway timed out", which="first_token")
    timeout.status_code = 504
    hosts, (a,) = make(1, failures_to_open=1)
    attempt(hosts, timeout)
    assert hosts.view(a).breaker == "open"


def test_after_the_cooldown_exactly_one_probe_goes_and_its_outcome_decides() -> None:
    clock = Clock()
    hosts, (a, b) = make(2, clock, cooldown=30.0, routing=RoundRobin())
    attempt(hosts, REFUSED)  # a opens
    clock.now += 29.9
    assert hosts.view(a).breaker == "open"
    clock.now += 0.2
    assert hosts.view(a).breaker == "half_open"
    probe = object()
    assert hosts.pick("m", owner=probe, avoid=[b]) is a  # the probe
    # While it runs, everything else goes to b: one probe per cool-down.
    assert {attempt(hosts) for _ in range(5)} == {b}
    hosts.done(a, REFUSED, owner=probe)  # the probe failed: open again, anew
    assert hosts.view(a).breaker == "open"
    clock.now += 29.9
    assert {attempt(hosts) for _ in range(3)} == {b}
    clock.now += 0.2
    probe = object()
    assert hosts.pick("m", owner=probe, avoid=[b]) is a
    hosts.done(a, None, owner=probe, ok=True)  # it is back
    assert hosts.view(a).breaker == "closed"
    assert {attempt(hosts) for _ in range(4)} == {a, b}


def test_a_probe_that_ends_without_a_verdict_frees_the_slot() -> None:
    clock = Clock()
    hosts, (a, b) = make(2, clock, cooldown=1.0, routing=RoundRobin())
    attempt(hosts, REFUSED)
    clock.now += 2
    probe = object()
    assert hosts.pick("m", owner=probe, avoid=[b]) is a
    hosts.done(a, None, owner=probe)  # cancelled: neither failed nor served
    assert hosts.view(a).breaker == "half_open"
    assert attempt(hosts, avoid=[b]) is a  # the next attempt may probe


def test_an_attempt_that_began_before_the_breaker_opened_is_no_probe() -> None:
    clock = Clock()
    hosts, (a, b) = make(2, clock, cooldown=1.0, routing=RoundRobin())
    early = object()
    assert hosts.pick("m", owner=early) is a  # in flight while a dies
    attempt(hosts, REFUSED, avoid=[b])
    clock.now += 2
    probe = object()
    assert hosts.pick("m", owner=probe, avoid=[b]) is a
    hosts.done(a, None, owner=early)  # the old one ends, cancelled
    assert attempt(hosts, avoid=[b]) is b  # the probe still holds the slot
    hosts.done(a, None, owner=probe, ok=True)


def test_concurrent_picks_send_one_probe() -> None:
    clock = Clock()
    hosts, (a, _b) = make(2, clock, cooldown=1.0, routing=RoundRobin())
    attempt(hosts, REFUSED)
    clock.now += 2
    barrier = threading.Barrier(8)
    picked: list[Host] = []
    lock = threading.Lock()

    def pick() -> None:
        barrier.wait(WAIT)
        host = hosts.pick("m", owner=object())
        with lock:
            picked.append(host)

    threads = [threading.Thread(target=pick) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert len(picked) == 8
    assert picked.count(a) <= 1


def test_when_every_host_is_open_the_first_to_cool_is_tried() -> None:
    clock = Clock()
    hosts, (a, b) = make(2, clock, routing=RoundRobin())
    attempt(hosts, REFUSED)
    clock.now += 5
    attempt(hosts, REFUSED)
    assert [v.breaker for v in map(hosts.view, (a, b))] == ["open", "open"]
    assert attempt(hosts, REFUSED) is a  # its cool-down ends first
    assert hosts.view(a).breaker == "open"


# -- failover and affinity ------------------------------------------------------------


def test_a_failover_goes_to_a_host_not_tried() -> None:
    hosts, (a, b, c) = make(routing=LeastBusy())
    assert hosts.can_fail_over([a])
    assert attempt(hosts, avoid=[a]) is b
    assert attempt(hosts, avoid=[a, b]) is c
    assert not hosts.can_fail_over([a, b, c])
    assert attempt(hosts, avoid=[a, b, c]) in (a, b, c)  # retries may go anywhere


def test_a_missing_model_fails_over_only_where_it_may_be() -> None:
    hosts, (a, b, c) = make()
    hosts.learned(b, [], ["other"], hosts.asked())
    hosts.learned(c, [], ["m:latest"], hosts.asked())
    assert hosts.can_fail_over([a], "m")
    hosts.learned(c, [], [], hosts.asked())
    assert not hosts.can_fail_over([a], "m")
    assert hosts.can_fail_over([a])  # for another failure, b would do


def test_a_sticky_host_is_kept_while_its_breaker_is_closed() -> None:
    hosts, (_a, b, _c) = make(routing=RoundRobin())
    assert {attempt(hosts, sticky=b.url) for _ in range(5)} == {b}
    attempt(hosts, REFUSED, sticky=b.url)
    assert b not in {attempt(hosts, sticky=b.url) for _ in range(5)}


# -- what the hosts hold -------------------------------------------------------------


def test_outcomes_teach_which_host_holds_which_model() -> None:
    hosts, (a, b, c) = make()
    hosts.learned(a, [], ["m:latest", "x:latest"], hosts.asked())
    hosts.learned(b, [], [], hosts.asked())
    assert attempt(hosts, MISSING, avoid=[b, c]) is a  # a said it lacks m after all
    assert hosts.view(a).models_available == ("x:latest",)
    attempt(hosts, avoid=[a, b])
    assert hosts.view(c).models_loaded == ("m",)
    assert hosts.view(c).last_ttft == 0.1
    assert attempt(hosts) is c  # it holds m now


class SlowLister:
    """Answers each host's lists once released; counts the calls."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[str] = []
        self.release = threading.Event()
        self.fail = fail
        self._lock = threading.Lock()

    def __call__(self, host: Host) -> tuple[Iterable[str], Iterable[str]]:
        with self._lock:
            self.calls.append(host.url)
        assert self.release.wait(WAIT)
        if self.fail:
            raise ConnectionFailed("no answer")
        loaded = ["m:latest"] if host.url == "http://h2" else []
        return loaded, ["m:latest"]


@pytest.fixture
def lister() -> Iterator[SlowLister]:
    lister = SlowLister()
    yield lister
    lister.release.set()


def test_a_pick_never_waits_for_the_model_lists(lister: SlowLister) -> None:
    clock = Clock()
    hosts, (a, _b, c) = make(clock=clock, lister=lister, ttl=10.0)
    assert attempt(hosts, model="m") is a  # nothing known yet: least busy
    assert attempt(hosts, model="m") is a  # still refreshing: a served m
    lister.release.set()
    hosts.close(WAIT)  # no more refreshes; the running ones are joined
    assert sorted(lister.calls) == ["http://h0", "http://h1", "http://h2"]
    assert hosts.view(c).models_loaded == ("m:latest",)
    assert attempt(hosts, model="m") in (a, c)  # both hold m; both idle
    clock.now += 11
    attempt(hosts, model="m")
    assert len(lister.calls) == 3  # closed: stale lists stay


def test_lists_are_refreshed_once_per_ttl(lister: SlowLister) -> None:
    clock = Clock()
    hosts, _ = make(clock=clock, lister=lister, ttl=10.0)
    lister.release.set()
    attempt(hosts)
    settle()
    assert len(lister.calls) == 3
    for _ in range(5):
        attempt(hosts)
    settle()
    assert len(lister.calls) == 3
    clock.now += 11
    attempt(hosts)
    hosts.close(WAIT)
    assert len(lister.calls) == 6


def test_a_failed_refresh_keeps_what_was_known() -> None:
    lister = SlowLister(fail=True)
    lister.release.set()
    hosts, (a, _, _) = make(lister=lister)
    hosts.learned(a, ["m"], ["m"], hosts.asked())
    attempt(hosts)
    hosts.close(WAIT)
    assert hosts.view(a).models_loaded == ("m",)


def test_a_single_host_is_never_listed(lister: SlowLister) -> None:
    hosts, (_a,) = make(1, lister=lister)
    attempt(hosts)
    hosts.close(WAIT)
    assert lister.calls == []


def settle() -> None:
    """Join every running refresh (each ends once its lister returns)."""
    for thread in threading.enumerate():
        if thread.name == "ollama-hosts-refresh":
            thread.join(WAIT)
            assert not thread.is_alive()


def test_lists_asked_for_before_a_stream_showed_more_are_stale() -> None:
    clock = Clock()
    hosts, (a, b) = make(2, clock)
    asked = hosts.asked()
    clock.now += 1
    assert attempt(hosts, avoid=[b]) is a  # a serves m: m is loaded there now
    hosts.learned(a, [], ["m"], asked)  # the answer to the earlier question
    assert hosts.view(a).models_loaded == ("m",)
    hosts.learned(a, [], ["m"], hosts.asked())  # a later answer stands
    assert hosts.view(a).models_loaded == ()


class PsTransport:
    """Answers ``/api/ps`` with the next of ``answers``, each once released."""

    url = "http://h"

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.asked = threading.Semaphore(0)
        self.release = threading.Event()

    def request_json(self, method: str, path: str, payload: Any, **_: Any) -> Any:
        name = self.answers.pop(0)
        self.asked.release()
        assert self.release.wait(WAIT)
        return {"models": [{"name": name}]}


def test_forget_reaches_a_ps_request_already_on_its_way() -> None:
    transport = PsTransport("before", "after")
    host = Host(transport)  # type: ignore[arg-type]
    loaded: SharedAnswers[Any] = SharedAnswers(1.0)

    def ps() -> list[str]:
        return [
            m.name for m in loaded.get(host.url, lambda: loaded_on(host, WAIT), WAIT)
        ]

    answers: dict[str, list[str]] = {}

    def get(label: str) -> None:
        answers[label] = ps()

    early = threading.Thread(target=get, args=("early",))
    early.start()
    assert transport.asked.acquire(timeout=WAIT)  # its request is on its way
    loaded.forget()  # a model was loaded meanwhile
    late = threading.Thread(target=get, args=("late",))
    late.start()
    assert transport.asked.acquire(timeout=WAIT)  # a request of its own
    transport.release.set()
    for thread in (early, late):
        thread.join(WAIT)
    assert answers == {"early": ["before"], "late": ["after"]}
    assert ps() == ["after"]  # cached
