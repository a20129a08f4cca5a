"""How a command fails: its exit statuses, and the one line that says why."""

from __future__ import annotations

from typing import Any

from ollama_stream_sync import (
    ConnectionFailed,
    ModelNotFound,
    StreamError,
    StreamingClient,
)

NAME = "ollama-stream-sync"
EXIT_OK = 0
EXIT_FAILURE = 1
"""An expected failure (no server, unknown model, timeout): one line on stderr."""
EXIT_USAGE = 2
"""A usage error, as argparse reports it."""
EXIT_INTERRUPTED = 130
"""Ctrl-C in a command that is not interactive (128 + SIGINT, as shells report it)."""


class Failure(Exception):
    """An expected failure: ``main`` prints its one line and exits with status 1."""


class UsageError(Failure):
    """A value the user gave cannot work (a --host naming the API path): status 2."""


def explain(error: StreamError) -> str:
    """The error's own line (it says what to do), and the flag that changes it."""
    line = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, ConnectionFailed) and error.during_connect:
        return f"{line} (on the command line: --host URL)"
    if isinstance(error, ModelNotFound):
        return f"{line} (or choose another with --model NAME)"
    return line


def open_client(host: str | None, **options: Any) -> StreamingClient:
    """A ``StreamingClient`` for ``--host`` (or OLLAMA_HOST); a URL it refuses
    is a ``UsageError``."""
    try:
        return StreamingClient(host, **options)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
