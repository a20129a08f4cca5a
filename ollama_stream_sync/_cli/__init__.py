"""The command line: ``ollama-stream-sync`` and ``python -m ollama_stream_sync``.

Each subcommand is a module whose ``run(args) -> int`` docstring is its help. A
``StreamError`` (its own line says what to do) or a ``Failure("...")`` escaping a
command is printed as one line with status 1; anything else is a bug: a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import math
import os
import sys
from collections.abc import Callable
from importlib import metadata

from ollama_stream_sync import StreamError

from . import _chat, _demo, _embed, _hosts, _pull
from ._failure import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    NAME,
    Failure,
    UsageError,
    explain,
)

__all__ = ["build_parser", "main"]

DEFAULT_HOST = "http://127.0.0.1:11434"
"""What the ollama SDK connects to when neither --host nor OLLAMA_HOST is set."""
EXIT_STATUS_HELP = f"""\
exit status:
  {EXIT_OK:<4} success
  {EXIT_FAILURE:<4} an expected failure (no server, unknown model, timeout): one
       line on stderr says what went wrong and what to do
  {EXIT_USAGE:<4} a usage error (unknown command or option, missing argument, a
       host URL that names the API path)
  {EXIT_INTERRUPTED:<4} interrupted with Ctrl-C (the interactive chat leaves with 0)
"""
HOST_HELP = f"Ollama's URL (default: $OLLAMA_HOST, or {DEFAULT_HOST})"


def _seconds(text: str) -> float:
    """An argparse type: a pause in seconds, 0 or more (a negative one is a typo)."""
    with contextlib.suppress(ValueError):
        if 0 <= float(text) < math.inf:
            return float(text)
    raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds, 0 or more")


def _version() -> str:
    def of(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    python = ".".join(str(n) for n in sys.version_info[:3])
    return f"{NAME} {of(NAME)} (ollama {of('ollama')}, Python {python})"


def build_parser(prog: str) -> argparse.ArgumentParser:
    """The parser with every subcommand; ``prog`` is how usage lines name us."""
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Stream Ollama chats from synchronous Python code. "
        f"Start with '{prog} demo' (no Ollama needed).",
        epilog=f"{EXIT_STATUS_HELP}\nmore: {_demo.PROJECT_URL}#readme",
        formatter_class=raw,
    )
    parser.add_argument("--version", action="version", version=_version())
    parser.set_defaults(prog=prog)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    def command(
        name: str, run: Callable[[argparse.Namespace], int], epilog: str = ""
    ) -> argparse.ArgumentParser:
        doc = inspect.cleandoc(run.__doc__ or "")
        sub = commands.add_parser(
            name,
            help=doc.splitlines()[0],
            description=doc,
            epilog=epilog + EXIT_STATUS_HELP,
            formatter_class=raw,
        )
        sub.set_defaults(run=run)
        return sub

    demo = command("demo", _demo.run)
    demo.add_argument(
        "--host",
        metavar="URL",
        help="run against this real Ollama instead of the built-in fake one",
    )
    demo.add_argument(
        "--model",
        metavar="NAME",
        default="qwen3",
        help="the model to ask (default: qwen3)",
    )
    demo.add_argument(
        "--delay",
        type=_seconds,
        default=0.03,
        metavar="SECONDS",
        help="pause between the fake server's chunks, to watch it stream "
        "(default: 0.03)",
    )
    chat = command("chat", _chat.run, _chat.KEYS + "\n")
    chat.add_argument(
        "--model", "-m", required=True, metavar="NAME", help="the model to chat with"
    )
    chat.add_argument("--host", metavar="URL", help=HOST_HELP)
    chat.add_argument(
        "--think", action="store_true", help="ask the model to think before answering"
    )
    chat.add_argument("--system", metavar="TEXT", help="a system prompt")
    pull = command("pull", _pull.run)
    pull.add_argument(
        "model", metavar="MODEL", help="the model to download, e.g. qwen3:8b"
    )
    pull.add_argument("--host", metavar="URL", help=HOST_HELP)
    pull.add_argument(
        "--insecure",
        action="store_true",
        help="allow a registry without a verified TLS certificate",
    )
    hosts = command("hosts", _hosts.run)
    hosts.add_argument(
        "--host",
        action="append",
        metavar="URL",
        help=f"an Ollama's URL, once per host (default: $OLLAMA_HOST, or "
        f"{DEFAULT_HOST})",
    )
    hosts.add_argument(
        "--timeout",
        type=_seconds,
        metavar="SECONDS",
        help="how long to wait for each host (default: 10)",
    )
    embed = command("embed", _embed.run)
    embed.add_argument("file", metavar="FILE", help='texts, one a line ("-": stdin)')
    embed.add_argument(
        "--model", "-m", required=True, metavar="NAME", help="the embedding model"
    )
    embed.add_argument("--host", metavar="URL", help=HOST_HELP)
    return parser


def main(argv: list[str] | None = None, *, module: bool = False) -> int:
    """Run the command line; return the exit status.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).
        module: run as ``python -m ollama_stream_sync``. Usage lines and next
            steps name the program as people type it, never by its path.
    """
    parser = build_parser("python -m ollama_stream_sync" if module else NAME)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if "run" not in args:
        parser.print_help()
        return EXIT_USAGE
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    """Run the chosen command; expected failures become one line and status 1."""
    try:
        status: int = args.run(args)
    except (Failure, StreamError) as exc:
        if _broken_pipe(exc):
            return _stdout_gone()
        with contextlib.suppress(OSError):
            sys.stdout.flush()
        line = explain(exc) if isinstance(exc, StreamError) else str(exc)
        sys.stderr.write(f"{NAME}: error: {line}\n")
        return EXIT_USAGE if isinstance(exc, UsageError) else EXIT_FAILURE
    except KeyboardInterrupt:
        with contextlib.suppress(OSError):
            sys.stdout.flush()
        sys.stderr.write(f"\n{NAME}: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `... | head`: the reader has gone, so stop quietly
        return _stdout_gone()
    return status


def _broken_pipe(exc: BaseException | None) -> bool:
    """Whether ``exc`` is, or was caused by, writing to a closed pipe."""
    while exc is not None:
        if isinstance(exc, BrokenPipeError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _stdout_gone() -> int:
    # Point stdout at /dev/null so the interpreter's final flush does not fail
    # again (the recipe in the signal module's documentation).
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_FAILURE
