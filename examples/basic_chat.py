"""Thinking, then the answer, printed as they stream; the history kept for a 2nd turn.

Run: python examples/basic_chat.py [--host URL --model NAME]
Without --host it starts the built-in fake Ollama, so it runs anywhere.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from typing import Any

from ollama_stream_sync import StreamError, StreamingClient
from ollama_stream_sync.testing import Delay, FakeOllama, reply


@contextlib.contextmanager
def ollama_host(host: str | None) -> Iterator[str]:
    """A real host if given, else a fake one scripted with two answers."""
    if host:
        yield host
        return
    with FakeOllama() as server:
        first = reply("17 x 23 = 391.", thinking="17 x 20 = 340, 17 x 3 = 51, so 391.")
        second = reply("391 - 17 = 374.", thinking="Subtract 17 from 391.")
        server.enqueue(
            *[[s for step in r for s in (Delay(0.02), step)] for r in (first, second)]
        )
        yield server.url


class Printer:
    """Prints a "Thinking:" section, then an "Answer:" section."""

    def __init__(self) -> None:
        self.section = ""

    def _show(self, section: str, text: str) -> None:
        if section != self.section:
            print(f"\n{section}:", flush=True)
            self.section = section
        print(text, end="", flush=True)

    def thinking(self, text: str) -> None:
        self._show("Thinking", text)

    def content(self, text: str) -> None:
        self._show("Answer", text)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host")
    parser.add_argument("--model", default="qwen3")
    args = parser.parse_args()
    messages: list[dict[str, Any]] = []
    with ollama_host(args.host) as host, StreamingClient(host) as client:
        for question in ("What is 17 x 23?", "And minus 17?"):
            print(f"\nUser: {question}")
            messages.append({"role": "user", "content": question})
            printer = Printer()
            result = client.chat(
                args.model,
                messages,
                think=True,
                on_thinking=printer.thinking,
                on_content=printer.content,
            )
            # The assistant turn, thinking included, goes back into the history.
            messages.append(result.to_message())
            print(
                f"\n[{result.eval_count} tokens, {result.tokens_per_second or 0:.0f}/s]"
            )
    print(f"\nHistory has {len(messages)} messages.", file=sys.stderr)


if __name__ == "__main__":
    try:
        main()
    except StreamError as error:  # no server, no such model: one line says what to do
        sys.exit(str(error))
