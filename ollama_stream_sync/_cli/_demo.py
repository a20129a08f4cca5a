"""``demo``: a tool-using chat and a Stop, as they stream, on a fake or real Ollama."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ollama_stream_sync import ChatResult, Conversation, StreamHandle
from ollama_stream_sync.testing import (
    Delay,
    FakeOllama,
    Script,
    Stall,
    reply,
    tool_call,
)

from ._failure import EXIT_OK, open_client
from ._render import Transcript, follow, result_summary

PROJECT_URL = "https://github.com/ollama-stream-sync/ollama-stream-sync"
QUESTION = "What's the weather in Paris right now? Answer in one sentence."
SECOND_QUESTION = "Describe a rainy spring afternoon in Paris in about 150 words."
STOP_AFTER_WORDS = 12
"""The demo presses Stop once the second answer has this many words."""
LOADING_CHUNKS = 25
"""The fake model takes this many chunk delays to "load" before its first answer."""

_LONG_ANSWER = (
    "Rain drifts over the zinc roofs of Paris in soft grey curtains, and the "
    "cafés pull their awnings a little further over the terraces. Umbrellas open "
    "along the Seine like dark flowers while the bouquinistes close their green "
    "boxes and wait for the shower to pass. In the Luxembourg Gardens the chestnut "
    "trees drip onto empty chairs, the gravel turns the colour of wet sand, and "
    "the smell of earth and bread from a nearby bakery hangs in the cool air."
)


def get_weather(city: str) -> str:
    """Get the current weather for a city.

    Args:
        city: The city's name, e.g. Paris.
    """
    return json.dumps({"city": city, "temperature_c": 18, "sky": "light rain"})


def demo_scripts(delay: float) -> list[Script]:
    """The fake's turns: a tool call, the answer, a long answer, after a "load".

    The long answer never ends (a ``Stall`` after its text), so the demo's Stop
    always lands mid-answer, however fast or slow the machine is.
    """
    first = reply(
        thinking="The user wants current weather for Paris. I should call the "
        "get_weather tool rather than guess.",
        tool_calls=[tool_call("get_weather", {"city": "Paris"})],
    )
    second = reply(
        "It is 18 °C in Paris with light rain, so take an umbrella.",
        thinking="The tool says 18 degrees and light rain. One sentence, mention "
        "the umbrella.",
        mixed_switch=True,
    )
    long_answer = reply(
        _LONG_ANSWER,
        thinking="A short descriptive paragraph: rain, cafés, the Seine, a garden.",
        mixed_switch=True,
    )
    endless = [*long_answer[:-1], Stall()]  # its done line dropped

    def paced(script: Script) -> Script:
        return [s for step in script for s in (Delay(delay), step)] if delay else script

    loading: Script = [Delay(delay * LOADING_CHUNKS)] if delay else []
    return [loading + paced(first), paced(second), paced(endless)]


def run(args: argparse.Namespace) -> int:
    """Watch a chat stream, with thinking, a tool call and Stop; no Ollama needed.

    Starts a fake Ollama on loopback (or uses --host) and asks two questions: the
    first runs a tool and answers; the second is stopped mid-answer with
    handle.cancel(), keeping the partial text. Ends with the next steps.
    """
    view = Transcript.for_stream(sys.stdout)
    if args.host:
        _chat(args.host, args.model, view)
        _next_steps(view, args.prog, f" --host {args.host}", args.model)
        return EXIT_OK
    with FakeOllama(models=[args.model]) as server:
        server.enqueue(*demo_scripts(args.delay))
        view.note(
            f"(A fake Ollama on {server.url}. Add --host URL --model NAME to ask "
            "a real one.)",
            dim=False,
        )
        view.out.write("\n")
        _chat(server.url, args.model, view)
    _next_steps(view, args.prog, "", args.model)
    return EXIT_OK


def _ask(
    conv: Conversation, view: Transcript, question: str, **callbacks: Any
) -> tuple[StreamHandle, list[str]]:
    """Send ``question``, streaming to ``view``; the phases it goes through."""
    view.text("User", question)
    phases: list[str] = []
    handle = conv.start_send(
        question,
        on_thinking=view.thinking,
        on_content=view.content,
        on_phase=phases.append,
        **callbacks,
    )
    return handle, phases


def _report(view: Transcript, result: ChatResult, phases: list[str]) -> None:
    view.note("[stopped]" if result.cancelled else result_summary(result))
    view.note("phases: " + " → ".join(phases))


def _chat(url: str, model: str, view: Transcript) -> None:
    """The two questions: one with a tool call, one stopped mid-answer."""

    def show_call(call: dict[str, Any]) -> None:
        fn = call["function"]
        view.text("Tool call", f"{fn['name']}({json.dumps(fn['arguments'])})")

    # probe_loading: a model that is not in memory yet reports "loading".
    with open_client(url, probe_loading=True) as client:
        conv = Conversation(client, model, tools=[get_weather], think=True)
        try:
            handle, phases = _ask(
                conv,
                view,
                QUESTION,
                on_tool_call=show_call,
                on_tool_result=lambda call, output: view.text("Tool result", output),
            )
            follow(handle, view, model)
            _report(view, handle.result(), phases)
            view.out.write("\n")
            handle, phases = _ask(conv, view, SECOND_QUESTION)
            # The "user" presses Stop from this thread while the worker streams.
            follow(
                handle, view, model, lambda r: len(r.content.split()) > STOP_AFTER_WORDS
            )
            handle.cancel()
            result = handle.result()
            _report(view, result, phases)
        finally:
            view.end()  # an error's line or ^C starts on a line of its own, unstyled
    view.note(
        f"handle.cancel() ended the stream at once. The partial answer "
        f"({len(result.content)} characters) stays in conv.messages, so the next "
        "send() goes on from it. on_phase (or handle.phase) said where the stream "
        "was at each moment: shown live above on a terminal."
        if result.cancelled
        else "(the answer ended before Stop was pressed)",
        dim=False,
    )


def _next_steps(view: Transcript, prog: str, host: str, model: str) -> None:
    """Where to go from here, wrapped like the rest (a long line is cut, not lost)."""
    view.out.write("\n")
    view.text(
        "Next steps",
        f"Chat with a model on your own Ollama (run 'ollama pull {model}' first):\n"
        f"    {prog} chat --model {model}{host} --think\n"
        "Examples, one idea per script, GUIs included:\n"
        f"    {PROJECT_URL}/tree/main/examples\n"
        "The README: the API, errors, cancel, GUIs, testing your app:\n"
        f"    {PROJECT_URL}#readme",
    )
    view.end()
