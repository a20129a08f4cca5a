"""A stream on a background thread, watched from the main thread, then cancelled.

The main thread stays free (as a GUI's would), reads partial text with
snapshot(), and cancels: the connection closes at once, the text so far is kept.

Run: python examples/background_cancel.py [--host URL --model NAME]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator

from ollama_stream_sync import ChatResult, StreamError, StreamingClient
from ollama_stream_sync.testing import Chunk, Delay, FakeOllama, Stall


@contextlib.contextmanager
def ollama_host(host: str | None) -> Iterator[str]:
    """A real host if given, else a fake one that talks, then goes silent."""
    if host:
        yield host
        return
    with FakeOllama() as server:
        words = "Once upon a time there was a very long story that never ended".split()
        steps = [s for w in words for s in (Delay(0.02), Chunk(content=w + " "))]
        server.enqueue([*steps, Stall()])  # then silence: only a cancel ends it
        yield server.url


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host")
    parser.add_argument("--model", default="qwen3")
    args = parser.parse_args()

    def on_content(text: str) -> None:
        print(text, end="", flush=True)

    def on_done(result: ChatResult) -> None:
        print(f"\n[on_done: cancelled={result.cancelled}]")

    with ollama_host(args.host) as host, StreamingClient(host) as client:
        handle = client.start_chat(
            args.model,
            [{"role": "user", "content": "Tell me a very long story."}],
            on_content=on_content,
            on_done=on_done,
        )
        # The main thread is free here; it waits for "enough" like a user would
        # (woken by each change of the stream, and at once if the stream fails).
        handle.wait_for(lambda partial: len(partial.content) > 40, timeout=60)
        print(f"\n[main thread sees {len(handle.snapshot().content)} characters]")
        handle.cancel()  # as a Stop button would, from any thread
        result = handle.result()  # the stream's error, if it failed, raises here
        print(f"kept {len(result.content)} characters: {result.content!r}")


if __name__ == "__main__":
    try:
        main()
    except StreamError as error:  # no server, no such model: one line says what to do
        sys.exit(str(error))
