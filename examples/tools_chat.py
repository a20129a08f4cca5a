"""A tool-using chat in a few lines: the Conversation runs the tools and keeps history.

Run: python examples/tools_chat.py [--host URL --model NAME]
Without --host it starts the built-in fake Ollama, scripted to call the tools.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from typing import Any

from ollama_stream_sync import Conversation, StreamError, StreamingClient
from ollama_stream_sync.testing import FakeOllama, reply, tool_call


def get_weather(city: str) -> str:
    """Get the current weather for a city.

    Args:
        city: The city's name, e.g. Paris.
    """
    weather = {"Paris": ("rain", 18), "Tokyo": ("sun", 25)}
    sky, temp = weather.get(city, ("unknown", 0))
    return json.dumps({"city": city, "sky": sky, "temperature_c": temp})


def convert_c_to_f(celsius: float) -> float:
    """Convert Celsius to Fahrenheit.

    Args:
        celsius: The temperature in Celsius.
    """
    return celsius * 9 / 5 + 32


@contextlib.contextmanager
def ollama_host(host: str | None) -> Iterator[str]:
    if host:
        yield host
        return
    with FakeOllama() as server:
        server.enqueue(
            reply(
                thinking="Two cities: call the tool twice.",
                tool_calls=[
                    tool_call("get_weather", {"city": "Paris"}, index=0),
                    tool_call("get_weather", {"city": "Tokyo"}, index=1),
                ],
            ),
            reply(tool_calls=[tool_call("convert_c_to_f", {"celsius": 25})]),
            reply("Paris: 18 °C and rain. Tokyo: 25 °C (77 °F) and sun."),
            reply("You asked about Paris and Tokyo."),
        )
        yield server.url


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host")
    parser.add_argument("--model", default="qwen3")
    args = parser.parse_args()

    def on_tool_call(call: dict[str, Any]) -> None:
        fn = call["function"]
        print(f"  -> {fn['name']}({json.dumps(fn['arguments'])})")

    def on_tool_result(call: dict[str, Any], result: str) -> None:
        print(f"  <- {result}")

    with ollama_host(args.host) as host, StreamingClient(host) as client:
        conv = Conversation(
            client,
            args.model,
            system="Answer briefly.",
            tools=[get_weather, convert_c_to_f],
            think=True,
        )
        for question in (
            "Weather in Paris and Tokyo, with Tokyo in F?",
            "Which cities?",
        ):
            print(f"User: {question}")
            answer = conv.send(
                question,
                on_tool_call=on_tool_call,
                on_tool_result=on_tool_result,
                on_content=lambda t: print(t, end="", flush=True),
            )
            print(f"\n[{answer.done_reason}]\n")
        print("History:", " > ".join(m["role"] for m in conv.messages))


if __name__ == "__main__":
    try:
        main()
    except StreamError as error:  # no server, no such model: one line says what to do
        sys.exit(str(error))
