"""This checkout against an earlier commit of the library, in the same run.

``python benchmarks/bench_versions.py REV [--pace-rounds N] [--ttfc-trials N]``
copies REV's package out of git under another name, and races both (and the
bare SDK loop) round by round: CPU per chunk at a model's pace, and time to the
first callback, over httpx and over a ``requests.Session``. A change of the
engine is "no worse" when its figures sit inside the old one's range.
"""

from __future__ import annotations

import argparse
import importlib
import io
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import bench_stream
import ollama
import requests
from _harness import Config, server
from contenders import Contender, bare_sdk_loop, chat_with_callback

ROOT = Path(__file__).resolve().parent.parent
OLD = "ollama_stream_sync_old"


def import_old(rev: str, into: Path) -> Any:
    """REV's ``ollama_stream_sync`` package, importable as ``OLD``."""
    archive = subprocess.run(
        ["git", "archive", rev, "ollama_stream_sync"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    (into / "ollama_stream_sync").rename(into / OLD)
    for path in (into / OLD).rglob("*.py"):
        text = re.sub(r"\bollama_stream_sync\b", OLD, path.read_text())
        path.write_text(text)
    sys.path.insert(0, str(into))
    return importlib.import_module(OLD)


class Versions:
    """The contenders: the bare SDK loop, then each version on both transports."""

    def __init__(self, url: str, new: Any, old: Any) -> None:
        self.sessions = [requests.Session(), requests.Session()]
        self.clients = [
            new.StreamingClient(url),
            old.StreamingClient(url),
            new.StreamingClient(url, session=self.sessions[0]),
            old.StreamingClient(url, session=self.sessions[1]),
        ]
        self.sdk = ollama.Client(url)
        labels = [
            "this checkout, httpx",
            "old, httpx",
            "this, session=",
            "old, session=",
        ]
        keys = ["new_httpx", "old_httpx", "new_session", "old_session"]
        self.items = [Contender("bare", "bare SDK loop", bare_sdk_loop(self.sdk))] + [
            Contender(key, label, chat_with_callback(client))
            for key, label, client in zip(keys, labels, self.clients, strict=True)
        ]
        self.unavailable: list[str] = []

    def __enter__(self) -> Versions:
        return self

    def __exit__(self, *exc: object) -> None:
        for client in self.clients:
            client.close()
        for session in self.sessions:
            session.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", help="the earlier commit, e.g. d7e65ef")
    parser.add_argument("--pace-rounds", type=int, default=9)
    parser.add_argument("--ttfc-trials", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old = import_old(args.rev, Path(tmp))
        new = importlib.import_module("ollama_stream_sync")
        cfg = Config(pace_rounds=args.pace_rounds, ttfc_trials=args.ttfc_trials)
        # The sections race whatever Contenders yields: here, the two versions.
        bench_stream.Contenders = lambda url, _port, _keys: Versions(url, new, old)
        with server() as srv:
            bench_stream.run_pace(srv, cfg)
            bench_stream.run_ttfc(srv, cfg)


if __name__ == "__main__":
    main()
