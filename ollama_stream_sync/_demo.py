"""``python -m ollama_stream_sync demo``: a tool-using chat, printed as it streams.

With no ``--host`` it starts the loopback ``FakeOllama`` server, so it runs on a
machine with no Ollama at all; with ``--host URL --model NAME`` it talks to a real
Ollama the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from ._client import StreamingClient
from ._conversation import Conversation
from ._result import ChatResult
from .testing import Delay, FakeOllama, Script, reply, tool_call

QUESTION = "What's the weather in Paris right now? Answer in one sentence."


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
    """The two model turns the fake server plays: a tool call, then the answer."""
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
    return [_paced(first, delay), _paced(second, delay)]


class _Printer:
    """Prints "Thinking:" then "Answer:" the way a person wants to read a stream."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.section = ""

    def _enter(self, section: str) -> None:
        if self.section != section:
            self.out.write(("\n" if self.section else "") + f"{section}:\n")
            self.section = section

    def thinking(self, delta: str) -> None:
        self._enter("Thinking")
        self.out.write(delta)
        self.out.flush()

    def content(self, delta: str) -> None:
        self._enter("Answer")
        self.out.write(delta)
        self.out.flush()

    def tool(self, call: dict[str, Any]) -> None:
        self._enter("Tool call")
        fn = call["function"]
        self.out.write(f"{fn['name']}({json.dumps(fn['arguments'])})")

    def summary(self, result: ChatResult) -> None:
        self.section = ""
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
        self.out.write("\n[" + " · ".join(parts) + "]\n\n")
        self.out.flush()


def run(host: str, model: str, out: TextIO, *, think: bool = True) -> list[Any]:
    """Ask the weather question against ``host``; return the history."""
    printer = _Printer(out)
    out.write(f"User:\n{QUESTION}\n\n")

    def show_result(call: dict[str, Any], output: str) -> None:
        printer.section = ""
        out.write(f"\nTool result:\n{output}\n\n")

    with StreamingClient(host) as client:
        conv = Conversation(client, model, tools=[get_weather], think=think)
        result = conv.send(
            QUESTION,
            on_thinking=printer.thinking,
            on_content=printer.content,
            on_tool_call=printer.tool,
            on_tool_result=show_result,
        )
        printer.summary(result)
        return conv.messages


def main(argv: list[str] | None = None) -> int:
    """The ``demo`` command."""
    parser = argparse.ArgumentParser(
        prog="python -m ollama_stream_sync demo",
        description="Stream a tool-using chat with thinking; no Ollama needed.",
    )
    parser.add_argument("--host", help="a real Ollama URL (default: built-in fake)")
    parser.add_argument("--model", default=None, help="model name (default: qwen3)")
    parser.add_argument(
        "--delay",
        type=float,
        default=0.03,
        help="seconds between fake chunks, to watch it stream (default 0.03)",
    )
    args = parser.parse_args(argv)
    if args.host:
        run(args.host, args.model or "qwen3", sys.stdout)
        return 0
    with FakeOllama(models=["qwen3"]) as server:
        server.enqueue(*demo_scripts(args.delay))
        sys.stdout.write(
            f"(fake Ollama on {server.url}; use --host for a real one)\n\n"
        )
        run(server.url, args.model or "qwen3", sys.stdout)
    return 0
