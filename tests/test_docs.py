"""Every Python snippet of README.md and docs/ runs, read from the pages at test time.

The snippets of one section (a page's heading) run in order in one namespace (a
later one may use what an earlier one defined), against FakeOllama; the names
they take for granted (``client``, ``messages``, ``root``...) are given below,
and the example hosts they name point at fake servers. GUI sections run their
window for real under Xvfb: ``root.mainloop()`` is replaced by a person using
the window. A snippet that cannot run here is marked in its page with an HTML
comment just before its block, ``<!-- not tested: why -->``; keep those few.
A new page under docs/ is picked up with no change here.
"""

from __future__ import annotations

import gc
import re
import tkinter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import tenacity

import ollama_stream_sync as oss
import ollama_stream_sync._engine as _engine
import ollama_stream_sync.testing as oss_testing
from ollama_stream_sync import StreamingClient
from ollama_stream_sync.testing import (
    Chunk,
    Done,
    FakeOllama,
    Progress,
    Stall,
    push_script,
    reply,
    tool_call,
)

from .support import USER
from .support.gui import tk_run_until

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SITE = "https://ollama-stream-sync.github.io/ollama-stream-sync/"
"""Where the docs are published (mkdocs.yml's site_url): the README links there."""
NOT_TESTED = re.compile(r"<!--\s*not tested:\s*(?P<why>.+?)\s*-->")
MAX_NOT_TESTED = 2
"""Snippets that need something a test cannot have (wx, a real Ollama)."""


@dataclass(frozen=True)
class Snippet:
    page: str
    section: str
    line: int
    code: str
    not_tested: str | None


def page_name(path: Path) -> str:
    """``README`` or the page's path under docs/ without ``.md``."""
    return (
        "README"
        if path.name == "README.md"
        else str(path.relative_to(ROOT / "docs"))[:-3]
    )


def read_snippets(text: str, page: str = "") -> list[Snippet]:
    """The ```python blocks, with their section and their "not tested" mark."""
    snippets: list[Snippet] = []
    section, start, language = "(top)", -1, ""
    lines = text.splitlines()
    for number, line in enumerate(lines):
        if start < 0:
            if line.startswith("#"):
                section = line.lstrip("#").strip()
            elif line.startswith("```"):
                start, language = number, line[3:].strip()
        elif line.startswith("```"):
            if language == "python":
                before = [b for b in lines[:start] if b.strip()][-1:]
                mark = NOT_TESTED.search(before[0]) if before else None
                snippets.append(
                    Snippet(
                        page,
                        section,
                        start + 2,  # the first line of code, counted from 1
                        "\n".join(lines[start + 1 : number]),
                        mark.group("why") if mark else None,
                    )
                )
            start = -1
    return snippets


SNIPPETS = [
    snippet
    for path in PAGES
    for snippet in read_snippets(path.read_text(encoding="utf-8"), page_name(path))
]
SECTIONS = list(dict.fromkeys((s.page, s.section) for s in SNIPPETS))


def section_id(page_section: tuple[str, str]) -> str:
    """The page, then the heading's first words (a failure names its line itself)."""
    page, section = page_section
    return page + "/" + "-".join(re.findall(r"[a-z]+", section.lower())[:4])


def test_the_snippets_are_found_and_few_are_not_tested() -> None:
    assert len(SNIPPETS) >= 50
    assert {s.page for s in SNIPPETS} >= {"README", "guides/gui", "reference/client"}
    untested = [s for s in SNIPPETS if s.not_tested]
    assert len(untested) <= MAX_NOT_TESTED, [(s.page, s.line) for s in untested]
    ids = [section_id(key) for key in SECTIONS]
    assert len(ids) == len(set(ids)), "two sections of a page start alike"


@pytest.mark.parametrize(
    ("module", "name"),
    [(oss, name) for name in oss.__all__]
    + [(oss_testing, name) for name in oss_testing.__all__],
    ids=lambda value: getattr(value, "__name__", value),
)
def test_every_public_name_has_an_example_in_the_docs(module: Any, name: str) -> None:
    word = re.compile(rf"\b{re.escape(name)}\b")
    assert any(word.search(s.code) for s in SNIPPETS if s.page != "README"), name
    directive = f"::: {module.__name__}.{name}\n"
    pages = [p.read_text(encoding="utf-8") for p in PAGES if p.parent != ROOT]
    assert any(directive in page for page in pages), f"no API entry: {directive}"


def test_the_readme_links_into_the_docs_reach_pages() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(re.escape(SITE) + r"([^)#\s]*)", text)
    assert len(targets) >= 10
    for target in targets:
        page = ROOT / "docs" / (target.rstrip("/") or "index")
        assert page.with_suffix(".md").is_file() or (page / "index.md").is_file(), (
            target
        )


# -- what the snippets take for granted -------------------------------------------


def get_weather(city: str) -> str:
    """Get the current weather for a city.

    Args:
        city: The name of the city
    """
    return f"Sunny in {city}"


class TextBox:
    def __init__(self) -> None:
        self.cleared = 0

    def clear(self) -> None:
        self.cleared += 1


@pytest.fixture
def other_server() -> Iterator[FakeOllama]:
    with FakeOllama() as srv:
        yield srv


@pytest.fixture
def made() -> Iterator[list[Any]]:
    """Clients and sessions the snippets build: closed at the end."""
    things: list[Any] = []
    yield things
    for thing in reversed(things):
        thing.close()


@pytest.fixture
def namespace(
    server: FakeOllama,
    other_server: FakeOllama,
    made: list[Any],
    tk_root: Any,
    qt_app: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[dict[str, Any]]:
    import shiboken6
    from PySide6.QtWidgets import QWidget

    monkeypatch.setenv("OLLAMA_HOST", server.url)  # StreamingClient() finds it

    class Tracked(StreamingClient):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    class TrackedSession(requests.Session):
        def __init__(self) -> None:
            super().__init__()
            made.append(self)

    monkeypatch.setattr(oss, "StreamingClient", Tracked)
    monkeypatch.setattr(requests, "Session", TrackedSession)
    set_providers_for_this_test(monkeypatch, made)
    client = Tracked(server.url)
    window = QWidget()
    ns: dict[str, Any] = {name: getattr(oss, name) for name in oss.__all__}
    ns.update(
        client=client,
        messages=[*USER],
        msgs=[*USER],
        result=client.chat("qwen3", USER),
        get_weather=get_weather,
        show=lambda text: None,
        print_delta=lambda text: None,
        show_call=lambda call: None,
        text_box=TextBox(),
        root=tk_root,
        window=window,
        tenacity=tenacity,
        requests=requests,
    )
    ns["__hosts__"] = {
        "http://gpu-box:11434": server.url,
        "http://ollama.corp:11434": server.url,
        "http://box-a:11434": server.url,
        "http://box-b:11434": other_server.url,
    }
    yield ns
    shiboken6.delete(window)  # on the Qt thread


def set_providers_for_this_test(
    monkeypatch: pytest.MonkeyPatch, made: list[Any]
) -> None:
    """The telemetry guide sets OpenTelemetry's global providers, which a process
    sets once: its ``set_*_provider`` hand them to the library's telemetry for
    this test only (and they shut down with the test's clients)."""
    from opentelemetry import metrics, trace

    telemetry = _engine.opentelemetry()
    assert telemetry is not None  # the dev extra installs the API

    def setter(attribute: str) -> Callable[[Any], None]:
        def set_provider(provider: Any) -> None:
            monkeypatch.setattr(telemetry, attribute, provider)
            made.insert(0, ShutDown(provider))  # after the clients that use it

        return set_provider

    monkeypatch.setattr(trace, "set_tracer_provider", setter("tracer_provider"))
    monkeypatch.setattr(metrics, "set_meter_provider", setter("meter_provider"))


@dataclass(frozen=True)
class ShutDown:
    provider: Any

    def close(self) -> None:
        self.provider.shutdown()


# -- the GUI sections: a person at the window ------------------------------------


def press_send_then_stop(ns: dict[str, Any], server: FakeOllama) -> None:
    """The chat window's ``root.mainloop()`` in this test: use it, then close it."""
    root, status = ns["root"], ns["status"]

    def shown() -> str:
        return str(ns["transcript"].get("1.0", "end-1c"))

    def status_text() -> str:
        return str(status.cget("text"))

    # Stop mid-answer: a cancelled result, the phase shown before it.
    server.enqueue([Chunk(thinking="Hmm. "), Chunk(content="Hello wor"), Stall()])
    ns["prompt"].insert(0, "Hi")
    ns["send_button"].invoke()
    assert tk_run_until(root, lambda: shown().endswith("Hello wor"))
    assert tk_run_until(root, lambda: status_text() == "answering")
    ns["stop_button"].invoke()
    assert tk_run_until(root, lambda: status_text().startswith("Stopped"))
    assert ns["handle"].result().cancelled
    # Stop before any output, and a one-chunk answer: no rate to show, no error.
    for script, final in (([Stall()], "Stopped"), ([Done(content="Yes.")], "Done")):
        # The server takes a script when it reads a request, maybe after a stop:
        # earlier streams end there first, so the stall awaited is this one's.
        assert server.wait_for(lambda s: s.in_flight("chat") == 0)
        server.enqueue(script)
        ns["send_button"].invoke()
        if final == "Stopped":
            assert tk_run_until(root, lambda: status_text() == "waiting")
            assert server.wait_stalled()  # it took its script, not the next send
            ns["stop_button"].invoke()
        assert tk_run_until(root, lambda f=final: status_text() == f), status_text()
    # A whole answer, with its rate.
    server.enqueue(reply("A whole answer."))
    ns["send_button"].invoke()
    assert tk_run_until(root, lambda: status_text().startswith("Done, "))
    assert status_text().endswith("tokens/s")


def read_the_story_then_stop(ns: dict[str, Any], server: FakeOllama) -> None:
    """The README's window: the answer shows; Stop after the end is harmless."""
    root = ns["root"]
    assert tk_run_until(
        root, lambda: ns["transcript"].get("1.0", "end-1c") == "Once upon a time."
    )
    assert ns["handle"].result().content == "Once upon a time."
    assert ns["handle"].cancel() is False


MAINLOOP: dict[str, Callable[[dict[str, Any], FakeOllama], None]] = {
    "guides/gui/a-chat-window": press_send_then_stop,
    "README/using-it-from-a": read_the_story_then_stop,
}
"""What a person does where a section's snippet calls ``root.mainloop()``."""


def click_summarize(ns: dict[str, Any], server: FakeOllama) -> None:
    server.enqueue(reply("Short summary."))
    root = ns["root"]
    root.after(0, ns["summarize"])
    assert tk_run_until(root, lambda: ns["status"].cget("text") == "14 characters")


def click_pull(ns: dict[str, Any], server: FakeOllama) -> None:
    """The Pull button, then Cancel on a pull that stalls."""
    root, status = ns["root"], ns["status"]
    ns["pull"]()
    assert tk_run_until(root, lambda: status.cget("text") == "Pulled.")
    assert float(ns["bar"]["value"]) == 100.0
    assert ns["rate"].cget("text") != ""
    server.enqueue([Progress("pulling manifest"), Stall()], endpoint="pull")
    ns["pull"]()
    assert server.wait_stalled()
    ns["cancel_button"].invoke()
    assert tk_run_until(root, lambda: status.cget("text") == "Cancelled.")


AFTER_DEFINING: dict[tuple[str, str], Callable[[dict[str, Any], FakeOllama], None]] = {
    ("guides/gui/a-chat-window", "summarize"): click_summarize,
    ("guides/gui/a-pull-with-a", "pull"): click_pull,
}
"""Functions a section's snippet defines (a button's command): used once defined."""


WEATHER = '{"city": "Paris", "temp_c": 18.5, "conditions": "sunny", "notes": ["dry"]}'


def weather_answer(server: FakeOllama, ns: dict[str, Any]) -> None:
    """A JSON answer in pieces: the partial values grow, then it validates."""
    server.enqueue([Chunk(content=WEATHER[:12]), Chunk(content=WEATHER[12:]), Done()])


def weather_then_not_then_weather(server: FakeOllama, ns: dict[str, Any]) -> None:
    """Structured output: a valid answer, one that is not JSON, a valid one again."""
    weather_answer(server, ns)
    server.enqueue(reply("Sunny, I think."))
    weather_answer(server, ns)


def a_window_for_the_pull(server: FakeOllama, ns: dict[str, Any]) -> None:
    from tkinter import ttk

    root = ns["root"]
    ns.update(
        model=tkinter.StringVar(root, value="qwen3"),
        status=ttk.Label(root),
        rate=ttk.Label(root),
        bar=ttk.Progressbar(root, maximum=100),
        cancel_button=ttk.Button(root, text="Cancel"),
    )


def a_window_for_the_form(server: FakeOllama, ns: dict[str, Any]) -> None:
    from tkinter import ttk

    weather_answer(server, ns)
    ns.update(city=tkinter.StringVar(ns["root"]), status=ttk.Label(ns["root"]))


def the_form_filled(server: FakeOllama, ns: dict[str, Any]) -> None:
    assert tk_run_until(ns["root"], lambda: ns["city"].get() == "Paris")
    assert ns["handle"].result().parsed.notes == ["dry"]


def pushing_a_model_we_have(server: FakeOllama, ns: dict[str, Any]) -> None:
    server.enqueue(push_script("me/mymodel"), endpoint="push")


def answers_then_a_model_that_keeps_calling(
    server: FakeOllama, ns: dict[str, Any]
) -> None:
    """Three plain answers, then tool calls past ``max_tool_rounds``."""
    for _ in range(3):
        server.enqueue(reply("Sunny."))
    for _ in range(2):
        server.enqueue(reply(tool_calls=[tool_call("get_weather", {"city": "Rome"})]))


def the_tool_rounds_stopped(server: FakeOllama, ns: dict[str, Any]) -> None:
    assert [m["role"] for m in ns["strict"].messages] == [
        *("user", "assistant", "tool", "assistant", "tool")
    ]


def a_story(server: FakeOllama, ns: dict[str, Any]) -> None:
    server.enqueue(reply("Once upon a time."))


def models_that_say_what_they_can(server: FakeOllama, ns: dict[str, Any]) -> None:
    """Long conversations: models whose /api/show has capabilities and a context."""
    qwen3: dict[str, Any] = {"capabilities": ["completion", "tools", "thinking"]}
    qwen3 |= {"context_length": 40960, "details": {"family": "qwen3"}}
    server.models += [
        {"name": "qwen3", **qwen3},
        {"name": "gemma3", "capabilities": ["completion", "vision"]},
        {"name": "gemma3-text", "capabilities": ["completion"]},
    ]


LONG = "guides/long-conversations/"
BEFORE_SECTION: dict[str, Callable[[FakeOllama, dict[str, Any]], None]] = {
    **{
        LONG + section: models_that_say_what_they_can
        for section in (
            "what-a-model-can",
            "capabilities",
            "sizing-the-context-context",
            "trimming-a-conversation-history",
            "when-the-server-cut",
        )
    },
    "README/using-it-from-a": a_story,
    "guides/structured-output/structured-output": weather_then_not_then_weather,
    "guides/pull/push-create-preload-unload": pushing_a_model_we_have,
    "reference/models/models-pull-push-create": pushing_a_model_we_have,
    "guides/gui/a-pull-with-a": a_window_for_the_pull,
    "guides/gui/a-form-that-fills": a_window_for_the_form,
    "reference/conversation/conversation": answers_then_a_model_that_keeps_calling,
}
"""What a section's snippets expect of the server and of the window around them."""

AFTER_SECTION: dict[str, Callable[[FakeOllama, dict[str, Any]], None]] = {
    "guides/gui/a-form-that-fills": the_form_filled,
    "reference/conversation/conversation": the_tool_rounds_stopped,
}
"""What a section's snippets must have done, once they ran."""


def run_section(
    ns: dict[str, Any], server: FakeOllama, key: str, snippets: list[Snippet]
) -> None:
    hosts: dict[str, str] = ns.pop("__hosts__")
    for snippet in snippets:
        code = snippet.code
        for example, real in hosts.items():
            code = code.replace(example, real)
        before = set(ns)
        where = f"{snippet.page}.md line {snippet.line}"
        exec(compile(code, where, "exec"), ns)  # the page's own code
        for name in set(ns) - before:
            if name.startswith("test_") and callable(ns[name]):
                with FakeOllama() as fake_ollama:  # as the plugin's fixture
                    ns[name](fake_ollama)
            if (key, name) in AFTER_DEFINING:
                AFTER_DEFINING[key, name](ns, server)


@pytest.mark.parametrize("page_section", SECTIONS, ids=section_id)
def test_the_snippets_run(
    page_section: tuple[str, str],
    namespace: dict[str, Any],
    server: FakeOllama,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    snippets = [
        s for s in SNIPPETS if (s.page, s.section) == page_section and not s.not_tested
    ]
    if not snippets:
        pytest.skip(f"every snippet of {page_section} is marked not tested")
    key = section_id(page_section)
    own_roots: list[Any] = []

    def mainloop(root: Any, n: int = 0) -> None:
        own_roots.append(root)
        assert key in MAINLOOP, f"{key} runs a window: say in MAINLOOP what to do"
        MAINLOOP[key](namespace, server)

    monkeypatch.setattr(tkinter.Misc, "mainloop", mainloop)
    try:
        if key in BEFORE_SECTION:
            BEFORE_SECTION[key](server, namespace)
        run_section(namespace, server, key, snippets)
        if key in AFTER_SECTION:
            AFTER_SECTION[key](server, namespace)
    finally:
        for value in list(namespace.values()):
            if isinstance(value, StreamingClient):
                value.close()  # the snippets' own, before their windows go
        for root in own_roots:
            root.destroy()
        own_roots.clear()
        gc.collect()  # here, on Tk's thread


def test_the_snippet_reader_sees_each_block_and_its_mark() -> None:
    text = "\n".join(
        [
            "## A",
            "```python",
            "x = 1",
            "```",
            "",
            "<!-- not tested: needs wx -->",
            "```python",
            "import wx",
            "```",
            "```sh",
            "echo not python",
            "```",
        ]
    )
    found = read_snippets(text, "page")
    assert [(s.page, s.section, s.code, s.not_tested) for s in found] == [
        ("page", "A", "x = 1", None),
        ("page", "A", "import wx", "needs wx"),
    ]
