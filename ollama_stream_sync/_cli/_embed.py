"""``embed``: texts in, one JSON line per vector out, progress on stderr."""

from __future__ import annotations

import argparse
import json
import sys
import threading

from ollama_stream_sync import Progress, QueueDispatcher

from ._failure import EXIT_INTERRUPTED, EXIT_OK, NAME, Failure, UsageError, open_client
from ._pull import pull_view


def run(args: argparse.Namespace) -> int:
    """Embed each line of a file; write one JSON array per line, in order.

    FILE holds one text per line ("-": standard input). Standard output gets
    one line per text, its vector as a JSON array, and nothing else. Progress
    goes to stderr: the pull command's bar on a terminal, else a line per
    batch. Ctrl-C cancels.
    """
    try:
        with sys.stdin if args.file == "-" else open(args.file, encoding="utf-8") as f:
            texts = f.read().splitlines()
    except OSError as exc:
        raise Failure(f"cannot read {args.file}: {exc.strerror}") from exc
    view, queue, ended = pull_view(sys.stderr), QueueDispatcher(), threading.Event()

    def show(done: int, total: int) -> None:  # on this thread, as it pumps
        view.show(
            Progress(f"embedded {done} of {total}", fraction=done / max(total, 1))
        )

    with open_client(args.host) as client:
        try:
            handle = client.start_embed(
                args.model,
                texts,
                on_progress=show,
                on_done=lambda _: ended.set(),
                on_error=lambda _: ended.set(),
                dispatcher=queue,
            )
        except ValueError as exc:  # an empty --model
            raise UsageError(str(exc)) from exc
        try:
            queue.pump_until(ended.is_set, None)
        except KeyboardInterrupt:
            handle.cancel()
            view.close(keep=False)
            done = handle.snapshot().done
            sys.stderr.write(f"{NAME}: embed cancelled after {done} of {len(texts)}\n")
            return EXIT_INTERRUPTED
        view.close(keep=handle.exception() is None)
        result = handle.result()
    for vector in result.embeddings:
        sys.stdout.write(json.dumps(list(vector)) + "\n")
    return EXIT_OK
