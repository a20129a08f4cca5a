"""``python -m ollama_stream_sync demo``: a tool-using chat and a Stop, as they stream.

With no ``--host`` it starts the loopback ``FakeOllama`` server, so it runs on a
machine with no Ollama at all; with ``--host URL --model NAME`` it talks to a real
Ollama the same way. The command line itself is in ``_cli``.

Each answer shows its phases: live on a terminal (a status line such as
"loading qwen3…" until the text starts), and as a line after the answer
("phases: connecting → loading → thinking → tool_call → ...") everywhere.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ._cli import PROJECT_URL, Transcript, explained, follow, open_client
from ._conversation import Conversation
from ._handle import StreamHandle
from ._result import ChatResult
from .testing import Delay, FakeOllama, Script, Stall, reply, tool_call

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

    Returns:
        A short description of the weather.
    """
    return json.dumps({"city": city, "temperature_c": 18, "sky": "light rain"})


def _paced(script: Script, delay: float) -> Script:
    if delay <= 0:
        return script
    paced: Script = []
    for step in script:
        paced += [Delay(delay), step]
    return paced


def demo_scripts(delay: float) -> list[Script]:
    """The model turns the fake server plays: a tool call, the answer, a long answer.

    The long answer never ends on its own (a ``Stall`` after its text), so the
    demo's Stop always lands mid-answer, however fast or slow the machine is.
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
    endless = [*long_answer[:-1], Stall()]  # drop its done line
    # The model is not loaded yet (the server's /api/ps lists nothing), and
    # takes a moment to load, as a real one does: the "loading" phase.
    loading: Script = [Delay(delay * LOADING_CHUNKS)] if delay > 0 else []
    return [
        loading + _paced(first, delay),
        _paced(second, delay),
        _paced(endless, delay),
    ]


def _summary(result: ChatResult) -> str:
    parts = [
        result.model,
        f"done: {result.done_reason}",
        f"prompt {result.prompt_eval_count} tokens",
        f"output {result.eval_count} tokens",
    ]
    if result.time_to_first_token is not None:
        parts.append(f"first token {result.time_to_first_token * 1000:.1f} ms")
    if result.tokens_per_second:
        parts.append(f"{result.tokens_per_second:.0f} tokens/s")
    return "[" + " · ".join(parts) + "]"


class _Phases:
    """Records a stream's phases (``on_phase``) for the line after the answer."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def __call__(self, name: str) -> None:
        self.names.append(name)

    def line(self) -> str:
        return "phases: " + " → ".join(self.names)


def _wait(
    handle: StreamHandle,
    view: Transcript,
    model: str,
    until: Callable[[ChatResult], bool] | None = None,
) -> None:
    """Show the stream's phase until it ends (or ``until``); Ctrl-C cancels it."""
    try:
        follow(handle, view, model, until)
    except BaseException:
        handle.cancel()  # Ctrl-C: stop the stream before leaving
        raise


def _ask_with_tools(conv: Conversation, view: Transcript) -> None:
    view.text("User", QUESTION)

    def show_call(call: dict[str, Any]) -> None:
        fn = call["function"]
        view.text("Tool call", f"{fn['name']}({json.dumps(fn['arguments'])})")

    phases = _Phases()
    handle = conv.start_send(
        QUESTION,
        on_thinking=view.thinking,
        on_content=view.content,
        on_tool_call=show_call,
        on_tool_result=lambda call, output: view.text("Tool result", output),
        on_phase=phases,
    )
    _wait(handle, view, conv.model)
    result = handle.result()
    view.note(_summary(result))
    view.note(phases.line())


def _ask_and_stop(conv: Conversation, view: Transcript) -> None:
    """Ask for a long answer and press Stop (``handle.cancel()``) partway through."""
    view.out.write("\n")
    view.text("User", SECOND_QUESTION)
    phases = _Phases()
    handle = conv.start_send(
        SECOND_QUESTION,
        on_thinking=view.thinking,
        on_content=view.content,
        on_phase=phases,
    )

    def enough(partial: ChatResult) -> bool:
        return len(partial.content.split()) > STOP_AFTER_WORDS

    # The "user" presses Stop from this thread while the worker streams.
    _wait(handle, view, conv.model, until=enough)
    handle.cancel()
    result = handle.result()
    if not result.cancelled:
        view.note(_summary(result))
        view.note(phases.line())
        view.out.write("(the answer ended before Stop was pressed)\n")
        return
    view.note("[stopped]")
    view.note(phases.line())
    view.paragraph(
        f"handle.cancel() ended the stream at once. The partial answer "
        f"({len(result.content)} characters) stays in conv.messages, so the next "
        "send() goes on from it. on_phase (or handle.phase) said where the stream "
        "was at each moment: shown live above on a terminal."
    )


def _next_steps(view: Transcript, prog: str, host: str | None, model: str) -> None:
    view.out.write("\n")
    view.heading("Next steps:")
    where = f" --host {host}" if host else ""
    view.paragraph(
        f"Chat with a model on your own Ollama (run 'ollama pull {model}' first):"
    )
    view.out.write(f"    {prog} chat --model {model}{where} --think\n")
    view.paragraph("Examples, one idea per script, GUIs included:")
    view.out.write(f"    {PROJECT_URL}/tree/main/examples\n")
    view.paragraph("The README: the API, errors, cancel, GUIs, testing your app:")
    view.out.write(f"    {PROJECT_URL}#readme\n")
    view.out.flush()


def _run(url: str, model: str, view: Transcript, prog: str, real: bool) -> None:
    with (
        # probe_loading: a model that is not in memory yet reports "loading".
        open_client(url, probe_loading=True) as client,
        explained(client.hosts[0], model),
    ):
        conv = Conversation(client, model, tools=[get_weather], think=True)
        try:
            _ask_with_tools(conv, view)
            _ask_and_stop(conv, view)
        finally:
            view.end()  # an error's line or ^C starts on a line of its own, unstyled
    _next_steps(view, prog, url if real else None, model)


def run_demo(
    *, host: str | None, model: str, delay: float, view: Transcript, prog: str
) -> None:
    """The ``demo`` command: against ``host``, or a fake Ollama started here.

    Args:
        host: a real Ollama's URL, or ``None`` for the built-in fake one.
        model: the model to ask.
        delay: seconds between the fake server's chunks.
        view: where the chat is shown.
        prog: how the user runs this command line, for the next steps.

    Raises:
        Failure: the server failed in an expected way (one line says how).
    """
    if host:
        _run(host, model, view, prog, real=True)
        return
    with FakeOllama(models=[model]) as server:
        server.enqueue(*demo_scripts(delay))
        view.paragraph(
            f"(A fake Ollama on {server.url}. Add --host URL --model NAME to ask "
            "a real one.)"
        )
        view.out.write("\n")
        _run(server.url, model, view, prog, real=False)
