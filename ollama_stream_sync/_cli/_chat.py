"""``chat``: a chat with a model on your Ollama, read line by line."""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import sys
from pathlib import Path

import httpx
import ollama

from ollama_stream_sync import (
    ChatResult,
    ConnectionFailed,
    Conversation,
    StreamError,
    StreamHandle,
    StreamingClient,
    StreamTimeout,
)

from ._failure import EXIT_OK, Failure, explain, open_client
from ._render import Transcript, follow, result_summary

KEYS = """\
in the chat:
  Enter        send the line
  Ctrl-C       stop the answer being written (the partial answer stays in
               the history); at the prompt, a second Ctrl-C leaves
  Ctrl-D       leave
  /save FILE   save the chat (settings and history) as JSON
  /load FILE   continue a chat saved with /save
  /help        list these
  /exit        leave
"""
LEAVE_HINT = "(Ctrl-C again, or Ctrl-D, leaves; /save FILE keeps the chat)"


def run(args: argparse.Namespace) -> int:
    """Chat with a model on your Ollama, streamed, history kept.

    Thinking (with --think) is shown apart from the answer. Ctrl-C stops an
    answer without leaving the chat; a second Ctrl-C leaves.
    """
    return _Repl(args).run()


class _Repl:
    """The chat loop: read a line, stream the answer, keep the history."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.view = Transcript.for_stream(sys.stdout)
        self.interactive = sys.stdin.isatty()

    def say(self, line: str) -> None:
        """A line of the chat's own (not the model's)."""
        self.view.end()
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def run(self) -> int:
        args = self.args
        if self.interactive:
            with contextlib.suppress(ImportError):
                import readline  # noqa: F401, PLC0415  # line editing and history in input()
        # probe_loading: a cold model says "loading qwen3…", not just "waiting".
        with open_client(args.host, probe_loading=True) as client:
            url = client.hosts[0]
            _check(client, url, args.model)
            conv = Conversation(
                client, args.model, system=args.system, think=bool(args.think)
            )
            thinking = ", thinking on" if args.think else ""
            self.view.note(
                f"Chatting with {args.model} at {url}{thinking}. Ctrl-C stops an "
                "answer, Ctrl-D leaves, /help lists the commands.",
                dim=False,
            )
            try:
                return self._loop(conv)
            finally:
                self.view.end()  # never leave the terminal grey

    def _loop(self, conv: Conversation) -> int:
        prompt = ">>> " if self.interactive else ""
        interrupted = False  # the last key was a Ctrl-C: one more leaves
        while True:
            try:
                line = input(prompt)
            except EOFError:  # Ctrl-D, or the end of piped input
                if self.interactive:
                    sys.stdout.write("\n")
                return EXIT_OK
            except KeyboardInterrupt:
                if interrupted:
                    sys.stdout.write("\n")
                    return EXIT_OK
                interrupted = True
                self.say("\n" + LEAVE_HINT)
                continue
            interrupted = False
            text = line.strip()
            if text.startswith("/"):
                conv, leave = self._slash(conv, text)
                if leave:
                    return EXIT_OK
            elif text:
                interrupted = self._turn(conv, line)

    def _turn(self, conv: Conversation, text: str) -> bool:
        """Send one line and stream the answer; True if a Ctrl-C stopped it (the
        first of the two that leave)."""
        view = self.view
        if conv.running:  # a stopped answer whose stream has not ended yet
            self.say("(the last answer is still stopping; send that again soon)")
            return False
        try:
            handle = conv.start_send(
                text, on_thinking=view.thinking, on_content=view.content
            )
            result, stopped = _answer_or_stop(
                handle, view, conv.model, conv.client.close_timeout
            )
        except StreamError as exc:
            view.end()
            sys.stderr.write(f"error: {explain(exc)}\n")
            return False
        if result is None:
            view.note("[stopped; the stream did not end in time]")
        elif result.cancelled:
            kept = len(result.content)
            view.note(f"[stopped; the {kept} characters so far stay in the history]")
        else:
            view.note(result_summary(result))
        if stopped:
            self.say(LEAVE_HINT)
        return stopped

    def _slash(self, conv: Conversation, text: str) -> tuple[Conversation, bool]:
        """Run a /command; return the conversation to go on with, and leave or not."""
        name, _, rest = text.partition(" ")
        path = Path(rest.strip()).expanduser() if rest.strip() else None
        if name in ("/exit", "/quit", "/bye"):
            return conv, True
        if name in ("/help", "/?"):
            self.say(KEYS.rstrip())
        elif name in ("/save", "/load") and path is None:
            self.say(f"usage: {name} FILE")
        elif name == "/save" and path is not None:
            try:
                path.write_text(conv.to_json() + "\n", encoding="utf-8")
            except OSError as exc:
                self.say(f"could not save to {path}: {exc.strerror or exc}")
            else:
                self.say(f"saved {len(conv.messages)} messages to {path}")
        elif name == "/load" and path is not None:
            conv = self._load(conv, path)
        else:
            self.say(f"unknown command {name}; /help lists them")
        return conv, False

    def _load(self, conv: Conversation, path: Path) -> Conversation:
        try:
            loaded = Conversation.from_json(
                conv.client, path.read_text(encoding="utf-8")
            )
        except OSError as exc:
            self.say(f"could not read {path}: {exc.strerror or exc}")
            return conv
        except (ValueError, KeyError, TypeError) as exc:
            self.say(f"{path} is not a chat saved with /save ({exc})")
            return conv
        saved_model = loaded.model
        # The command line says which model to talk to now, and whether it thinks.
        loaded.model, loaded.think = conv.model, conv.think
        note = f" (saved with {saved_model})" if saved_model != conv.model else ""
        self.say(f"loaded {len(loaded.messages)} messages from {path}{note}")
        return loaded


def _check(client: StreamingClient, url: str, model: str) -> None:
    """Fail before the first prompt if the server or the model is missing."""
    try:
        client.loaded_models()
    except (ConnectionFailed, StreamTimeout):
        raise
    except StreamError:
        pass  # it answered: reachable (an old server may lack /api/ps)
    try:
        listed = client.sdk.list().models
    except (ollama.ResponseError, httpx.HTTPError, ConnectionError):
        return  # the list is only a courtesy: the first answer will tell
    names = {m.model for m in listed if m.model}
    if not names or model in names or f"{model}:latest" in names:
        return
    raise Failure(
        f"model {model!r} is not on the Ollama at {url}; pull it with "
        f"'ollama pull {model}', or choose one it has with --model: "
        + ", ".join(sorted(names)[:8])
    )


def _answer_or_stop(
    handle: StreamHandle, view: Transcript, model: str, grace: float
) -> tuple[ChatResult | None, bool]:
    """Wait for the answer, showing its phase; a Ctrl-C cancels it. Returns the
    result (None if a cancelled stream outlasts ``grace``), and whether Ctrl-C came."""
    try:
        follow(handle, view, model)  # a Ctrl-C in here cancels the stream
        return handle.result(), False
    except KeyboardInterrupt:
        pass
    # What arrived before the cancel is still shown; more Ctrl-C (people press
    # it twice) must not cut that short or leave the chat.
    while True:
        try:
            return handle.result(timeout=grace), True
        except concurrent.futures.TimeoutError:
            return None, True
        except KeyboardInterrupt:
            continue
