"""``embed``: texts in, one JSON line per vector out, progress on stderr."""

from __future__ import annotations

import argparse
import json
import sys
import threading

from ollama_stream_sync import Progress, QueueDispatcher

from ._failure import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    NAME,
    Failure,
    UsageError,
    open_client,
)
from ._pull import pull_view


def run(args: argparse.Namespace) -> int:
    """Embed each line of a file; write one JSON array per line, in order.

    FILE holds one text per line ("-": standard input). Standard output gets
    one line per text, its vector as a JSON array, and nothing else, so it
    pipes into a file or a program. Progress goes to stderr: the pull
    command's bar on a terminal, a line per batch otherwise. Ctrl-C cancels.
    """
    try:
        with sys.stdin if args.file == "-" else open(args.file, encoding="utf-8") as f:
            texts = f.read().splitlines()
    except OSError as exc:
        raise Failure(f"cannot read {args.file}: {exc.strerror}") from exc
    view = pull_view(sys.stderr)
    # Callbacks run here, on the main thread, as it pumps the queue.
    queue, ended = QueueDispatcher(), threading.Event()

    def show(done: int, total: int) -> None:
        status = f"embedded {done} of {total}"
        view.show(Progress(status, fraction=done / total if total else 1.0))

    with open_client(args.host) as client:
        try:
            handle = client.start_embed(
                args.model,
                texts,
                batch_size=args.batch_size,
                on_progress=show,
                on_done=lambda _: ended.set(),
                on_error=lambda _: ended.set(),
                dispatcher=queue,
            )
        except ValueError as exc:  # an empty --model, a --batch-size of 0
            raise UsageError(str(exc)) from exc
        try:
            queue.pump_until(ended.is_set, None)
        except KeyboardInterrupt:
            handle.cancel()
            view.close(keep=False)
            done = handle.snapshot().done
            sys.stderr.write(f"{NAME}: embed cancelled after {done} of {len(texts)}\n")
            return EXIT_INTERRUPTED
        try:
            result = handle.result()
        finally:
            view.close(keep=handle.exception() is None)
    for vector in result.embeddings:
        sys.stdout.write(json.dumps(vector) + "\n")
    return EXIT_OK
