"""Command line: ``python -m ollama_stream_sync demo [--host URL] [--model NAME]``."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Dispatch the subcommand."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        sys.stdout.write(
            "usage: python -m ollama_stream_sync demo [--host URL] [--model NAME]\n"
        )
        return 0 if args else 2
    if args[0] == "demo":
        from ._demo import main as demo  # noqa: PLC0415  # keep --help instant

        return demo(args[1:])
    sys.stderr.write(f"unknown command {args[0]!r}; try 'demo'\n")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
