"""The command line: ``ollama-stream-sync`` and ``python -m ollama_stream_sync``.

Each subcommand is one function registered with ``@command``: its name, its
arguments (``arg(...)``, as ``ArgumentParser.add_argument`` takes them) and its
docstring, whose first line is the summary in the command list and whose whole
text is the description in ``COMMAND --help``. To add one::

    @command("pull", arg("model", help="the model to download"), HOST)
    def _pull(args: argparse.Namespace) -> int:
        \"\"\"Download a model, with a progress bar.\"\"\"
        with explained(args.host, args.model):
            ...
        return EXIT_OK

The function returns an exit status. A ``StreamError`` raised inside
``explained(...)`` becomes one line on stderr saying what went wrong and what to
do, and exit status 1; ``Failure("...")`` does the same with a line of your own.
Anything else escaping a command is a bug, and shows its traceback.

Terminal output (``Transcript``) is shared by the commands: thinking in grey and
the answer in plain text on a terminal, labelled sections when piped or when
``NO_COLOR`` is set, and text word-wrapped at the terminal width as it streams.
On a terminal, ``follow`` shows where a stream is ("loading qwen3…") on a line
that the answer then replaces; piped output has no such line.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import os
import shutil
import sys
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:  # the real imports happen in the commands: --help stays instant
    from ._client import StreamingClient
    from ._conversation import Conversation
    from ._handle import ProgressHandle, StreamHandle
    from ._result import ChatResult, ModelResult, Progress

EXIT_OK = 0
EXIT_FAILURE = 1
"""An expected failure (no server, unknown model, timeout): one line on stderr."""
EXIT_USAGE = 2
"""A usage error, as argparse reports it."""
EXIT_INTERRUPTED = 130
"""Ctrl-C in a command that is not interactive (128 + SIGINT, as shells report it)."""

NAME = "ollama-stream-sync"
PROJECT_URL = "https://github.com/ollama-stream-sync/ollama-stream-sync"
DEFAULT_MODEL = "qwen3"
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


# -- failures -----------------------------------------------------------------


class Failure(Exception):
    """An expected failure: ``main`` prints its one line and exits with status 1."""


class UsageError(Failure):
    """A value the user gave cannot work (a --host naming the API path): status 2."""


def open_client(host: str | None, **options: Any) -> StreamingClient:
    """A ``StreamingClient`` for ``--host``; a URL it refuses is a usage error.

    Raises:
        UsageError: the host (from --host or OLLAMA_HOST) is not a server's URL.
    """
    from ._client import StreamingClient  # noqa: PLC0415  # --help stays instant

    try:
        return StreamingClient(host, **options)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def describe(exc: BaseException, url: str | None, model: str | None) -> str:  # noqa: PLR0911
    """One line for a ``StreamError``: what went wrong, then what to do.

    Built from the error's attributes (its URL, model and detail), with the
    advice in terms of this command line's options.
    """
    from ._errors import (  # noqa: PLC0415  # --help stays instant
        ConnectionFailed,
        ModelNotFound,
        ServerError,
        StreamError,
        StreamTimeout,
    )

    if not isinstance(exc, StreamError):
        return " ".join(str(exc).split()) or type(exc).__name__
    url = exc.url or url
    model = exc.model or model
    where = f"Ollama at {url}" if url else "Ollama"
    detail = " ".join(exc.message.split()) or type(exc).__name__
    if isinstance(exc, ConnectionFailed) and exc.during_connect:
        return (
            f"could not connect to {where}: {detail}; is Ollama running? Start it "
            "with 'ollama serve', or point --host (or OLLAMA_HOST) at it"
        )
    if isinstance(exc, ModelNotFound):
        name = model or "<model>"
        return (
            f"model {name!r} not found on {where} ({detail}); pull it with "
            f"'ollama pull {name}', or choose another with --model"
        )
    if isinstance(exc, ConnectionFailed):
        return f"{where}: the connection broke ({detail}); try again"
    if isinstance(exc, StreamTimeout):
        hint = (
            "the model may still be loading, or the server is busy; try again"
            if exc.which == "first_token"
            else "the server is busy or stuck; try again, or check its log"
        )
        return f"{where}: {detail}; {hint}"
    if isinstance(exc, ServerError):
        status = f"HTTP {exc.status_code}" if exc.status_code else "in-stream error"
        if "does not support thinking" in detail:
            hint = "leave out --think, or choose a model that thinks with --model"
        elif "does not support tools" in detail:
            hint = "choose a model that supports tools with --model"
        else:
            hint = "check the Ollama server's log"
        return f"{where}: {detail} ({status}); {hint}"
    return f"{where}: {detail}"


@contextlib.contextmanager
def explained(url: str | None, model: str | None = None) -> Iterator[None]:
    """Turn a ``StreamError`` raised inside into a ``Failure`` with one clear line."""
    from ._errors import StreamError  # noqa: PLC0415  # --help stays instant

    try:
        yield
    except StreamError as exc:
        raise Failure(describe(exc, url, model)) from exc


def _broken_pipe(exc: BaseException | None) -> bool:
    """Whether ``exc`` is, or was caused by, writing to a closed pipe."""
    while exc is not None:
        if isinstance(exc, BrokenPipeError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


# -- terminal output --------------------------------------------------------------


def color_wanted(stream: TextIO) -> bool:
    """Colour on a terminal, unless ``NO_COLOR`` is set (https://no-color.org)."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _cells(text: str) -> int:
    """Terminal columns ``text`` takes: wide East Asian characters take two."""
    width = 0
    for char in text:
        if unicodedata.combining(char):
            continue
        width += 2 if unicodedata.east_asian_width(char) in "WF" else 1
    return width


class StreamWrapper:
    """Word-wraps text that arrives in pieces, on a terminal ``width`` columns wide.

    Each character is shown as soon as it arrives. A word split across pieces
    (``"umbr"``, ``"ella"``) is never broken in two: when its end would pass the
    edge, the part already shown is blanked out (backspaces and spaces) and the
    whole word moves to the next line. The spaces before a word are dropped
    when it starts a line, and kept otherwise (indented code stays indented).
    Lines stop one column short of the edge, so the cursor never sits in the
    terminal's pending-wrap state, where a backspace is unreliable.
    ``width=0`` writes straight through (not a terminal).
    """

    def __init__(self, out: TextIO, width: int = 0) -> None:
        self.out = out
        self.width = width
        self.column = 0
        self._spaces = ""  # whitespace after the last word, not written yet
        self._word: list[str] = []  # the word being received, all of it shown
        self._word_start = 0  # the column where the shown word begins

    def write(self, text: str) -> None:
        """Write a piece of the stream."""
        if self.width <= 0:
            self.out.write(text)
            newline = text.rfind("\n")
            if newline >= 0:
                self.column = len(text) - newline - 1
            else:
                self.column += len(text)
            return
        for char in text:
            if char == "\n":
                self._break()
            elif char in " \t":
                self._word.clear()
                self._spaces += " " if char == " " else "    "
            elif char != "\r":
                self._add(char)

    def newline(self) -> None:
        """End the current line, if anything is on it."""
        self._word.clear()
        self._spaces = ""
        if self.column:
            self._break()

    def _break(self) -> None:
        self.out.write("\n")
        self.column = 0
        self._spaces = ""
        self._word.clear()

    def _fits(self, cells: int) -> bool:
        return self.column + cells < self.width

    def _add(self, char: str) -> None:
        cells = _cells(char)
        if not self._word:  # a new word: after its spaces, or on a new line
            spaces = _cells(self._spaces)
            if self.column and not self._fits(spaces + cells):
                self._break()
            elif self._fits(spaces + cells):
                self.out.write(self._spaces)
                self.column += spaces
            self._spaces = ""
            self._word_start = self.column
        elif not self._fits(cells):
            if self._word_start:  # blank the word out, show it on a line of its own
                word = "".join(self._word)
                shown = self.column - self._word_start
                self.out.write("\b" * shown + " " * shown)
                self._break()
                self._word = list(word)
                self.out.write(word)
                self.column, self._word_start = shown, 0
            if not self._fits(cells):  # longer than a line (a URL): cut it
                self.out.write("\n")
                self.column = 0
        self._word.append(char)
        self.out.write(char)
        self.column += cells


_STREAMED = ("Thinking", "Answer")
"""Sections whose text arrives in pieces: no status line interrupts them."""

_GREY = "\x1b[90m"
_BOLD = "\x1b[1m"
_RESET = "\x1b[0m"


@dataclass
class Transcript:
    """Shows a streamed chat: labelled sections, thinking apart from the answer.

    On a terminal (``color``) thinking is grey and labels are bold; otherwise
    the text is plain. ``wrap`` word-wraps at the terminal width as text arrives.
    On a terminal, ``status`` shows a transient line ("loading qwen3…") that the
    next output replaces. The stream's callbacks write from its worker while
    the main thread updates the status: a lock keeps their writes apart.
    """

    out: TextIO
    color: bool = False
    wrap: bool = False
    section: str = ""
    _text: StreamWrapper = field(init=False)
    # Reentrant: the writing methods call one another.
    _lock: threading.RLock = field(default_factory=threading.RLock, init=False)
    _status: str = field(default="", init=False)

    def __post_init__(self) -> None:
        self._text = StreamWrapper(self.out)

    @classmethod
    def for_stream(cls, out: TextIO) -> Transcript:
        """Colour and wrapping when ``out`` is a terminal, as the user expects."""
        tty = bool(getattr(out, "isatty", None) and out.isatty())
        return cls(out, color=color_wanted(out), wrap=tty)

    def _style(self, code: str) -> None:
        if self.color:
            self.out.write(code)

    def _measure(self) -> None:
        """Wrap at the terminal's width now (it may have been resized)."""
        if self.wrap:
            self._text.width = max(20, shutil.get_terminal_size().columns)

    def status(self, text: str) -> None:
        """Show ``text`` as the status line, or clear it with ``""``.

        Only on a terminal, on a line of its own, and never inside text that
        is streaming (thinking, the answer). Written over with spaces, not
        erased with escape codes, so ``NO_COLOR`` output stays plain.
        """
        with self._lock:
            if not self.wrap or text == self._status:
                return
            self._clear_status()
            if not text or self.section in _STREAMED:
                return
            self._text.newline()
            room = max(20, shutil.get_terminal_size().columns) - 1
            while _cells(text) > room:
                text = text[:-2] + "…"
            self._style(_GREY)
            self.out.write(text)
            self._style(_RESET)
            self.out.flush()
            self._status = text

    def _clear_status(self) -> None:
        if self._status:
            blank = " " * _cells(self._status)
            self.out.write(f"\r{blank}\r")
            self._status = ""

    def enter(self, section: str, *, dim: bool = False) -> None:
        """Start a labelled section (``"Thinking"``), unless it is the current one."""
        with self._lock:
            self._clear_status()
            if self.section == section:
                return
            self._style(_RESET)
            self._text.newline()
            if self.section:
                self.out.write("\n")
            self.section = section
            self._measure()
            self._style(_GREY if dim else _BOLD)
            self.out.write(f"{section}:\n")
            self._style(_RESET)
            if dim:
                self._style(_GREY)

    def thinking(self, delta: str) -> None:
        """``on_thinking``: grey on a terminal."""
        with self._lock:
            self.enter("Thinking", dim=True)
            self._text.write(delta)
            self.out.flush()

    def content(self, delta: str) -> None:
        """``on_content``: plain text."""
        with self._lock:
            self.enter("Answer")
            self._text.write(delta)
            self.out.flush()

    def text(self, section: str, text: str) -> None:
        """A whole section at once (a tool call, a tool result, the question)."""
        with self._lock:
            self.enter(section)
            self._text.write(text)
            self.out.flush()

    def note(self, text: str) -> None:
        """A grey line of its own after the current section (stats, "[stopped]")."""
        with self._lock:
            self.end()
            self._measure()
            self._style(_GREY)
            self._text.write(text)
            self._text.newline()
            self._style(_RESET)
            self.out.flush()

    def end(self) -> None:
        """Close the section: clear the status, reset the style, end the line."""
        with self._lock:
            self._clear_status()
            self._style(_RESET)
            self._text.newline()
            self.section = ""
            self.out.flush()

    def paragraph(self, text: str) -> None:
        """Plain prose on lines of its own, wrapped like the stream."""
        with self._lock:
            self.end()
            self._measure()
            self._text.write(text)
            self._text.newline()
            self.out.flush()

    def heading(self, text: str) -> None:
        """A bold line, for a block of plain lines that follows."""
        with self._lock:
            self.end()
            self._style(_BOLD)
            self.out.write(text + "\n")
            self._style(_RESET)
            self.out.flush()


def phase_status(phase: str, model: str) -> str:
    """The status line for a stream's phase ("" when its text speaks for itself)."""
    return {
        "connecting": "connecting…",
        "waiting": f"waiting for {model}…",
        "loading": f"loading {model}…",
        "thinking": "thinking…",
        "tool_call": "calling a tool…",
        "retrying": "retrying…",
    }.get(phase, "")


SHOW_SECONDS_AFTER = 2.0
"""A status line counts the seconds of its phase once it has lasted this long."""


def follow(
    handle: StreamHandle,
    view: Transcript,
    model: str,
    until: Callable[[ChatResult], bool] | None = None,
) -> None:
    """Show ``handle``'s phase on ``view``'s status line until the stream ends.

    Runs on the main thread while the callbacks write the text from the worker.
    Woken by every phase change (``handle.wait_for``); while a status shows, it
    also wakes once a second to count the seconds of a long wait ("loading
    qwen3… 12 s": a big model takes a while). Returns when the stream ended, or
    as soon as ``until(snapshot)`` holds. Ctrl-C propagates: the caller cancels.
    """
    phase, since = "", time.monotonic()
    try:
        while not handle.done() and not (until and until(handle.snapshot())):
            now = handle.phase
            if now != phase:
                phase, since = now, time.monotonic()
            label = phase_status(phase, model)
            waited = time.monotonic() - since
            if label and waited >= SHOW_SECONDS_AFTER:
                label += f" {waited:.0f} s"
            view.status(label)

            def moved(result: ChatResult, shown: str = phase) -> bool:
                return handle.phase != shown or bool(until and until(result))

            handle.wait_for(moved, 1.0 if label else None)
    finally:
        view.status("")


def result_summary(result: ChatResult) -> str:
    """``[qwen3 · 42 tokens · 35 tokens/s]``: a short line after an answer."""
    parts = [result.model or "?"]
    if result.eval_count is not None:
        parts.append(f"{result.eval_count} tokens")
    if result.tokens_per_second:
        parts.append(f"{result.tokens_per_second:.0f} tokens/s")
    return "[" + " · ".join(parts) + "]"


# -- how the user ran us ---------------------------------------------------------


def _shown_path(path: str) -> str:
    """``path`` relative to the working directory when it lies inside it."""
    with contextlib.suppress(ValueError):
        relative = Path(path).absolute().relative_to(Path.cwd())
        return str(relative) if relative.parent != Path() else f"./{relative}"
    return path


def invocation(module: bool) -> str:
    """The command the user typed to run us, to repeat in usage and next steps.

    ``python -m ollama_stream_sync`` (with the venv's path to python when another
    python comes first on PATH), or the console script as it was found.
    """
    if module:
        exe = sys.executable or "python"
        for name in ("python", "python3"):
            found = shutil.which(name)
            if found and Path(found).parent == Path(exe).parent:
                return f"{name} -m ollama_stream_sync"
        return f"{_shown_path(exe)} -m ollama_stream_sync"
    script = sys.argv[0] if sys.argv and sys.argv[0] else NAME
    name = Path(script).name
    found = shutil.which(name)
    if found and Path(found).absolute() == Path(script).absolute():
        return name
    return _shown_path(script) if os.sep in script else name


def _version() -> str:
    from importlib import metadata  # noqa: PLC0415  # only for --version

    def of(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    python = ".".join(str(n) for n in sys.version_info[:3])
    return f"{NAME} {of(NAME)} (ollama {of('ollama')}, Python {python})"


# -- the command registry ---------------------------------------------------------


@dataclass(frozen=True)
class Argument:
    """One ``add_argument`` call: its flags and options."""

    flags: tuple[str, ...]
    options: dict[str, Any]


def arg(*flags: str, **options: Any) -> Argument:
    """An argument of a command, spelled as ``ArgumentParser.add_argument`` takes it."""
    return Argument(flags, options)


Runner = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Command:
    """A subcommand: its name, arguments, the function that runs it, extra help."""

    name: str
    run: Runner
    arguments: tuple[Argument, ...]
    epilog: str = ""

    @property
    def description(self) -> str:
        return inspect.cleandoc(self.run.__doc__ or "")

    @property
    def summary(self) -> str:
        return self.description.splitlines()[0] if self.description else ""


COMMANDS: dict[str, Command] = {}
"""The subcommands, in the order ``--help`` lists them."""


def command(
    name: str, *arguments: Argument, epilog: str = ""
) -> Callable[[Runner], Runner]:
    """Register ``fn`` as the subcommand ``name``; its docstring is its help."""

    def register(fn: Runner) -> Runner:
        if name in COMMANDS:
            raise ValueError(f"two commands are named {name!r}")
        COMMANDS[name] = Command(name, fn, arguments, epilog)
        return fn

    return register


HOST = arg(
    "--host",
    metavar="URL",
    help=f"Ollama's URL (default: $OLLAMA_HOST, or {DEFAULT_HOST})",
)


# -- demo ---------------------------------------------------------------------------


@command(
    "demo",
    arg(
        "--host",
        metavar="URL",
        help="run against this real Ollama instead of the built-in fake one",
    ),
    arg(
        "--model",
        metavar="NAME",
        default=None,
        help=f"the model to ask (default: {DEFAULT_MODEL})",
    ),
    arg(
        "--delay",
        type=float,
        default=0.03,
        metavar="SECONDS",
        help="pause between the fake server's chunks, to watch it stream "
        "(default: 0.03)",
    ),
)
def _demo(args: argparse.Namespace) -> int:
    """Watch a chat stream, with thinking, a tool call and Stop; no Ollama needed.

    Starts a fake Ollama on loopback (or uses --host) and asks two questions: the
    first runs a tool and answers; the second is stopped mid-answer with
    handle.cancel(), keeping the partial text. Ends with the next steps.
    """
    from ._demo import run_demo  # noqa: PLC0415  # --help stays instant

    run_demo(
        host=args.host,
        model=args.model or DEFAULT_MODEL,
        delay=args.delay,
        view=Transcript.for_stream(sys.stdout),
        prog=args.prog,
    )
    return EXIT_OK


# -- chat ---------------------------------------------------------------------------

CHAT_HELP = """\
in the chat:
  Enter        send the line
  Ctrl-C       stop the answer being written (the partial answer stays in
               the history); at the prompt, press it twice to leave
  Ctrl-D       leave
  /save FILE   save the chat (settings and history) as JSON
  /load FILE   continue a chat saved with /save
  /help        list these
  /exit        leave
"""


@command(
    "chat",
    arg("--model", "-m", required=True, metavar="NAME", help="the model to chat with"),
    HOST,
    arg("--think", action="store_true", help="ask the model to think before answering"),
    arg("--system", metavar="TEXT", help="a system prompt"),
    epilog=CHAT_HELP,
)
def _chat(args: argparse.Namespace) -> int:
    """Chat with a model on your Ollama, streamed, history kept.

    Thinking (with --think) is shown apart from the answer. Ctrl-C stops an
    answer without leaving the chat.
    """
    return _Repl(args).run()


class _Repl:
    """The chat loop: read a line, stream the answer, keep the history."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.view = Transcript.for_stream(sys.stdout)
        self.interactive = sys.stdin.isatty()
        self.url = ""

    def say(self, line: str) -> None:
        """A line of the chat's own (not the model's)."""
        self.view.end()
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def run(self) -> int:
        from ._conversation import Conversation  # noqa: PLC0415

        args = self.args
        if self.interactive:
            with contextlib.suppress(ImportError):
                import readline  # noqa: F401, PLC0415  # line editing and history in input()
        # probe_loading: a cold model says "loading qwen3…", not just "waiting".
        with open_client(args.host, probe_loading=True) as client:
            self.url = client.hosts[0]
            self._check(client)
            conv = Conversation(
                client, args.model, system=args.system, think=bool(args.think)
            )
            thinking = ", thinking on" if args.think else ""
            self.view.paragraph(
                f"Chatting with {args.model} at {self.url}{thinking}. Ctrl-C stops "
                "an answer, Ctrl-D leaves, /help lists the commands."
            )
            try:
                return self._loop(conv)
            finally:
                self.view.end()  # never leave the terminal grey

    def _check(self, client: StreamingClient) -> None:
        """Fail before the first prompt if the server or the model is missing."""
        import httpx  # noqa: PLC0415  # --help stays instant
        import ollama  # noqa: PLC0415

        from ._errors import ConnectionFailed, StreamError, StreamTimeout  # noqa: PLC0415

        model = self.args.model
        try:
            client.loaded_models()
        except (ConnectionFailed, StreamTimeout) as exc:
            raise Failure(describe(exc, self.url, model)) from exc
        except StreamError:
            pass  # it answered: reachable (an old server may lack /api/ps)
        try:
            listed = client.sdk.list().models
        except (ollama.ResponseError, httpx.HTTPError, ConnectionError):
            return  # the list is only a courtesy: the first answer will tell
        names = {m.model for m in listed if m.model}
        if not names or model in names or f"{model}:latest" in names:
            return
        some = ", ".join(sorted(names)[:8])
        raise Failure(
            f"model {model!r} is not on the Ollama at {self.url}; pull it with "
            f"'ollama pull {model}', or choose one it has with --model: {some}"
        )

    def _loop(self, conv: Conversation) -> int:
        prompt = ">>> " if self.interactive else ""
        interrupted = False  # the last thing at the prompt was a Ctrl-C
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
                self.say(
                    "\n(Ctrl-C again, or Ctrl-D, leaves; /save FILE keeps the chat)"
                )
                continue
            interrupted = False
            text = line.strip()
            if not text:
                continue
            if text.startswith("/"):
                conv, leave = self._slash(conv, text)
                if leave:
                    return EXIT_OK
                continue
            self._turn(conv, line)

    def _turn(self, conv: Conversation, text: str) -> None:
        """Send one line and stream the answer; Ctrl-C stops it, errors print."""
        from ._errors import StreamError  # noqa: PLC0415  # --help stays instant

        view = self.view
        if conv.running:  # a stopped answer whose stream has not ended yet
            self.say("(the last answer is still stopping; send that again soon)")
            return
        try:
            handle = conv.start_send(
                text, on_thinking=view.thinking, on_content=view.content
            )
            result = _answer_or_stop(
                handle, view, conv.model, conv.client.close_timeout
            )
        except StreamError as exc:
            view.end()
            sys.stderr.write(f"error: {describe(exc, self.url, conv.model)}\n")
            return
        if result is None:
            view.note("[stopped; the stream did not end in time]")
        elif result.cancelled:
            kept = len(result.content)
            view.note(f"[stopped; the {kept} characters so far stay in the history]")
        else:
            view.note(result_summary(result))

    def _slash(self, conv: Conversation, text: str) -> tuple[Conversation, bool]:
        """Run a /command; return the conversation to go on with, and leave or not."""
        name, _, rest = text.partition(" ")
        path = Path(rest.strip()).expanduser() if rest.strip() else None
        if name in ("/exit", "/quit", "/bye"):
            return conv, True
        if name in ("/help", "/?"):
            self.say(CHAT_HELP.rstrip())
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
        from ._conversation import Conversation  # noqa: PLC0415  # --help stays instant

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


def _answer_or_stop(
    handle: StreamHandle, view: Transcript, model: str, grace: float
) -> ChatResult | None:
    """Wait for the answer, showing its phase; the first Ctrl-C cancels it.

    Returns the result (``cancelled`` after a Ctrl-C), or ``None`` if the stream
    did not end within ``grace`` seconds of the cancel.
    """
    import concurrent.futures  # noqa: PLC0415  # --help stays instant

    try:
        follow(handle, view, model)
        return handle.result()
    except KeyboardInterrupt:
        handle.cancel()
    # What arrived before the cancel is still shown; more Ctrl-C (people press
    # it twice) must not cut that short or leave the chat.
    while True:
        try:
            return handle.result(timeout=grace)
        except concurrent.futures.TimeoutError:
            return None
        except KeyboardInterrupt:
            continue


# -- pull ---------------------------------------------------------------------------

STAGE_LABELS: dict[str, str] = {
    "manifest": "manifest",
    "downloading": "downloading",
    "uploading": "uploading",
    "verifying": "verifying",
    "writing": "writing manifest",
    "cleanup": "cleaning up",
    "creating": "creating",
    "success": "done",
}
"""What the bar says the server is doing, by ``Progress.stage``."""

REDRAW_INTERVAL = 0.1
"""Seconds between redraws: faster progress lines are coalesced to the latest."""

PLAIN_STEP = 10
"""Piped, a "downloading" line is printed each time this many more percent are done."""

BAR_RESOLUTION = 1000
"""The bar counts in thousandths of the whole, fed from ``Progress.fraction``."""


def human_bytes(count: float) -> str:
    """``2.0 GB``: decimal units, as Ollama shows sizes."""
    units = ("B", "KB", "MB", "GB", "TB")
    index = 0
    while count >= 1000 and index < len(units) - 1:
        count /= 1000
        index += 1
    return f"{count:.0f} B" if index == 0 else f"{count:.1f} {units[index]}"


def clock(seconds: float) -> str:
    """``0:42``, ``12:05``, ``1:02:03``: a time left, as a clock shows it."""
    hours, rest = divmod(round(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


def percent(progress: Progress) -> int:
    """Whole percent done, rounded down: 100 only once everything is there."""
    return int((progress.fraction or 0.0) * 100)


def stage_label(progress: Progress) -> str:
    """The stage in words ("downloading"); an unknown stage shows Ollama's text."""
    return STAGE_LABELS.get(progress.stage, progress.status or progress.stage)


def progress_detail(progress: Progress, *, unknown_speed: str = "speed n/a") -> str:
    """``840.0 MB / 2.0 GB · 35.1 MB/s · ETA 0:24``: what is known so far.

    Speed and time left are shown while downloading; ``unknown_speed`` until
    the speed is steady enough to tell ("" leaves it out).
    """
    if progress.total is None:
        return ""
    parts = [f"{human_bytes(progress.completed)} / {human_bytes(progress.total)}"]
    if progress.stage == "downloading":
        speed = progress.bytes_per_second
        parts.append(unknown_speed if speed is None else f"{human_bytes(speed)}/s")
        if progress.eta is not None:
            parts.append(f"ETA {clock(progress.eta)}")
    return " · ".join(part for part in parts if part)


class PullLines:
    """Pull progress as plain lines: one per stage, one per ``PLAIN_STEP`` percent.

    For output that is not a terminal (a pipe, a log file), and for a terminal
    when the bar's library (tqdm, the ``cli`` extra) is not installed.
    """

    coalesce_interval: float | None = None
    """Every line: a stage that passes in a blink still gets its line."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.last: Progress | None = None
        self._said = ""
        self._step = -1

    def show(self, progress: Progress) -> None:
        """``on_progress``: print a line if this one says something new."""
        self.last = progress
        if progress.done:
            return  # the command's own last line says so
        if progress.stage == "downloading":
            step = percent(progress) // PLAIN_STEP
            if self._said == "downloading" and step <= self._step:
                return
            self._said, self._step = "downloading", step
            line = f"downloading {percent(progress):3d}%"
            detail = progress_detail(progress, unknown_speed="")
            if detail:
                line += f"  ({detail})"
        else:
            if progress.status == self._said:
                return
            self._said = line = progress.status
        self.out.write(line + "\n")
        self.out.flush()

    def close(self, *, keep: bool) -> None:
        """Nothing to tidy: every line is already whole."""


class PullBar:
    """One tqdm bar for the whole pull: the stage, percent, bytes, speed, ETA.

    tqdm draws it (redrawing the line with a carriage return, as wide as the
    terminal is now, in ASCII where the terminal cannot show blocks); the
    figures are the library's own ``Progress``, not tqdm's estimates, so the
    bar never goes back when a new layer grows the total.
    """

    coalesce_interval: float | None = REDRAW_INTERVAL
    """Redraw with the latest figures at most this often."""

    def __init__(self, out: TextIO, bar_class: Any) -> None:
        self.out = out
        self.last: Progress | None = None
        self._class = bar_class
        self._bar: Any = None

    def show(self, progress: Progress) -> None:
        """``on_progress``: redraw the bar (at most every ``REDRAW_INTERVAL``)."""
        self.last = progress
        if self._bar is None:  # drawn from the first line: a failed connect shows none
            self._bar = self._class(
                total=BAR_RESOLUTION,
                file=self.out,
                bar_format="{desc:<11} {percentage:3.0f}% |{bar}| {detail}",
                dynamic_ncols=True,
                disable=False,  # we chose to draw it: a terminal, tqdm installed
            )
        bar = self._bar
        bar.n = int((progress.fraction or 0.0) * BAR_RESOLUTION)
        bar.set_description_str(stage_label(progress), refresh=False)
        bar.detail = progress_detail(progress)
        bar.refresh()

    def close(self, *, keep: bool) -> None:
        """End the bar: ``keep`` leaves it on screen, else its line is cleared."""
        if self._bar is not None:
            self._bar.leave = keep
            self._bar.close()
            self._bar = None


def _bar_class() -> Any:
    """tqdm's bar with our figures in its format, or None without tqdm."""
    try:
        from tqdm import tqdm  # noqa: PLC0415  # optional: the `cli` extra
    except ImportError:
        return None

    class Bar(tqdm):  # type: ignore[type-arg]  # tqdm[T]: T is what it iterates
        """``{detail}`` in ``bar_format``: tqdm's documented way to add a field."""

        monitor_interval = 0  # no monitor thread: every update redraws
        detail = ""

        @property
        def format_dict(self) -> Any:
            return {**super().format_dict, "detail": self.detail}

    return Bar


def pull_view(out: TextIO) -> PullLines | PullBar:
    """A bar on a terminal (with tqdm installed), plain lines otherwise."""
    tty = bool(getattr(out, "isatty", None) and out.isatty())
    if tty and os.environ.get("TERM") != "dumb":
        bar_class = _bar_class()
        if bar_class is not None:
            return PullBar(out, bar_class)
    return PullLines(out)


def _pulled(model: str, result: ModelResult) -> str:
    last = result.progress
    size = f" ({human_bytes(last.total)})" if last and last.total else ""
    return f"pulled {model}{size} in {result.seconds:.1f} s"


def _where(last: Progress | None) -> str:
    if last is None or last.total is None:
        return ""
    done, total = human_bytes(last.completed), human_bytes(last.total)
    return f" at {percent(last)}% ({done} of {total})"


@command(
    "pull",
    arg("model", metavar="MODEL", help="the model to download, e.g. qwen3:8b"),
    HOST,
    arg(
        "--insecure",
        action="store_true",
        help="allow a registry without a verified TLS certificate",
    ),
)
def _pull(args: argparse.Namespace) -> int:
    """Download a model to your Ollama, with a progress bar.

    On a terminal: one bar for the whole model, with the stage, speed and time
    left (the bar needs tqdm: pip install 'ollama-stream-sync[cli]'; without
    it, plain lines). Piped: a line per stage and per 10% downloaded. Ctrl-C
    cancels the pull; Ollama keeps the layers it has, so pulling again
    resumes.
    """
    from ._dispatch import QueueDispatcher  # noqa: PLC0415
    from ._errors import ModelNotFound, StreamError  # noqa: PLC0415

    model: str = args.model
    if not model.strip():
        raise Failure("the model name is empty; name one, e.g. qwen3")
    view = pull_view(sys.stdout)
    # Callbacks run here, on the main thread, as this thread pumps the queue:
    # the bar is drawn by one thread only, and the bar's coalescing (flushed by
    # the client's timer during a pause, which a queue allows) always shows the
    # latest figures.
    queue = QueueDispatcher()
    ended = threading.Event()
    with open_client(args.host) as client:
        url = client.hosts[0]
        handle = client.start_pull(
            model,
            insecure=bool(args.insecure),
            on_progress=view.show,
            on_done=lambda _: ended.set(),
            on_error=lambda _: ended.set(),
            dispatcher=queue,
            coalesce_interval=view.coalesce_interval,
        )
        try:
            queue.pump_until(ended.is_set, None)
        except KeyboardInterrupt:
            return _pull_interrupted(handle, queue, ended, view, model)
        try:
            result = handle.result()
        except ModelNotFound as exc:
            view.close(keep=False)
            name = exc.model or model
            raise Failure(
                f"model {name!r} was not found ({' '.join(exc.message.split())}); "
                "check its name and tag, e.g. on https://ollama.com/library"
            ) from exc
        except StreamError as exc:
            view.close(keep=bool(view.last and view.last.completed))
            raise Failure(describe(exc, url, model)) from exc
        view.close(keep=True)
    sys.stdout.write(_pulled(model, result) + "\n")
    return EXIT_OK


def _pull_interrupted(
    handle: ProgressHandle,
    queue: Any,
    ended: threading.Event,
    view: PullLines | PullBar,
    model: str,
) -> int:
    """Ctrl-C: cancel the pull (its socket closes), say where it stopped."""
    import concurrent.futures  # noqa: PLC0415  # --help stays instant

    from ._errors import StreamError  # noqa: PLC0415

    handle.cancel()
    grace = 5.0
    # What arrived before the cancel is still delivered: the bar shows it.
    # More Ctrl-C (people press it twice) must not cut that short.
    while True:
        try:
            queue.pump_until(ended.is_set, grace)
            break
        except KeyboardInterrupt:
            continue
    try:
        result: ModelResult | None = handle.result(0)
    except (StreamError, concurrent.futures.TimeoutError):
        result = None  # cancelled mid-callback, or still closing: stopped all the same
    if result is not None and not result.cancelled:  # it finished first
        view.close(keep=True)
        sys.stdout.write(_pulled(model, result) + "\n")
        return EXIT_OK
    last = view.last
    view.close(keep=bool(last and last.completed))
    _flush_quietly()
    sys.stderr.write(
        f"{NAME}: pull cancelled{_where(last)}; Ollama keeps the layers it has "
        f"downloaded, so pulling {model} again resumes\n"
    )
    return EXIT_INTERRUPTED


# -- main ---------------------------------------------------------------------------


def build_parser(prog: str) -> argparse.ArgumentParser:
    """The parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Stream Ollama chats from synchronous Python code. "
        f"Start with '{prog} demo' (no Ollama needed).",
        epilog=EXIT_STATUS_HELP + f"\nmore: {PROJECT_URL}#readme",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(
        title="commands", metavar="COMMAND", dest="command"
    )
    for cmd in COMMANDS.values():
        sub = commands.add_parser(
            cmd.name,
            help=cmd.summary,
            description=cmd.description,
            epilog=(cmd.epilog + "\n" if cmd.epilog else "") + EXIT_STATUS_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        for argument in cmd.arguments:
            sub.add_argument(*argument.flags, **argument.options)
        sub.set_defaults(run=cmd.run)
    parser.set_defaults(prog=prog)
    return parser


def main(argv: list[str] | None = None, *, module: bool = False) -> int:
    """Run the command line; return the exit status.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).
        module: run as ``python -m ollama_stream_sync`` (shown in usage lines).
    """
    prog = invocation(module)
    parser = build_parser(prog)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    """Run the chosen command; expected failures become one line and status 1."""
    from ._errors import StreamError  # noqa: PLC0415  # --help stays instant

    try:
        status: int = args.run(args)
    except (Failure, StreamError) as exc:
        if _broken_pipe(exc):
            return _stdout_gone()
        _flush_quietly()
        line = str(exc) if isinstance(exc, Failure) else describe(exc, None, None)
        sys.stderr.write(f"{NAME}: error: {line}\n")
        return EXIT_USAGE if isinstance(exc, UsageError) else EXIT_FAILURE
    except KeyboardInterrupt:
        _flush_quietly()
        sys.stderr.write(f"\n{NAME}: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `... | head`: the reader has gone, so stop quietly
        return _stdout_gone()
    return status


def _flush_quietly() -> None:
    with contextlib.suppress(OSError):
        sys.stdout.flush()


def _stdout_gone() -> int:
    # Point stdout at /dev/null so the interpreter's final flush does not fail
    # again (the recipe in the signal module's documentation).
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_FAILURE
