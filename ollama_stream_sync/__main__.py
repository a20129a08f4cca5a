"""``python -m ollama_stream_sync``: the command line (see ``_cli``)."""

from __future__ import annotations

from ._cli import main

if __name__ == "__main__":
    raise SystemExit(main(module=True))
