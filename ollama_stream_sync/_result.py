"""The immutable results: ``ChatResult``, a pull's ``Progress``, ``ModelResult``,
``EmbedResult`` and a batch call's ``BatchProgress``."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal


class Headers(Mapping[str, str]):
    """Read-only HTTP headers; names are matched without regard to case."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items = {name.lower(): value for name, value in items}

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


NO_HEADERS = Headers()


@dataclass(frozen=True)
class ChatResult:
    """What one chat or generate stream produced, as of one moment (frozen, so it
    crosses threads freely).

    Example::

        result = client.chat("qwen3", messages)
        messages.append(result.to_message())
        print(result.content, result.tokens_per_second)
    """

    model: str = ""
    thinking: str = ""
    content: str = ""
    tool_calls: tuple[dict[str, Any], ...] = ()
    done: bool = False
    """True once the server's ``done: true`` line arrived."""
    done_reason: str | None = None
    cancelled: bool = False
    prompt_eval_count: int | None = None
    eval_count: int | None = None
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_duration: int | None = None
    eval_duration: int | None = None
    time_to_first_token: float | None = None
    """Seconds from sending the request to the first chunk with output."""
    tokens_per_second: float | None = None
    """Output tokens per second as seen by this client (see README)."""
    context: tuple[int, ...] | None = None
    """``/api/generate`` only: the token context the server returned."""
    logprobs: tuple[dict[str, Any], ...] = ()
    chunk_count: int = 0
    """How many NDJSON lines were processed."""
    remote_model: str | None = None
    """The upstream model that answered, for Ollama cloud models."""
    remote_host: str | None = None
    """The upstream Ollama host that answered, for Ollama cloud models."""
    prompt_truncated: bool = False
    """The server read far fewer prompt tokens than were sent (see README)."""
    host: str | None = None
    """The base URL of the host that served the last attempt."""
    response_headers: Mapping[str, str] = field(
        default_factory=lambda: NO_HEADERS, compare=False
    )
    """The last attempt's response headers (read-only; names in lower case)."""
    parsed: Any = field(default=None, compare=False)
    """With ``format=``: the parsed answer (a model instance for a model class)."""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    """Fields of the final chunk this library does not model (forward compatible)."""

    @property
    def stopped_by_length(self) -> bool:
        """True when the answer was cut at ``num_predict`` (done_reason "length")."""
        return self.done_reason == "length"

    def to_message(self) -> dict[str, Any]:
        """Return the assistant message for the history.

        Returns:
            ``{"role": "assistant", "content": ...}`` plus ``thinking`` and
            ``tool_calls`` only when present, as Ollama expects them back.
        """
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.thinking:
            message["thinking"] = self.thinking
        if self.tool_calls:
            message["tool_calls"] = copy.deepcopy(list(self.tool_calls))
        return message


Stage = Literal[
    "manifest",
    "downloading",
    "uploading",
    "verifying",
    "writing",
    "cleanup",
    "creating",
    "success",
    "other",
]
"""What the server is doing, read from its status text."""


@dataclass(frozen=True)
class Progress:
    """Where a pull, push or create is, as of one progress line.

    Attributes:
        status: Ollama's own text ("pulling 8eeb52dfb3bb", "verifying sha256
            digest", "writing manifest", "success"...).
        stage: what that means: "manifest", "downloading", "uploading",
            "verifying", "writing", "cleanup", "creating", "success", "other".
        digest: the layer the line is about, when it is about one.
        layer_completed, layer_total: that layer's bytes.
        completed, total: bytes across every layer seen so far (``total`` is
            ``None`` until a layer's size is known).
        fraction: ``completed / total`` in 0..1; never goes backwards, even
            when a new layer grows the total; ``None`` while no total is known.
        bytes_per_second: the transfer speed, smoothed; ``None`` until stable.
        eta: seconds left at that speed; ``None`` until stable.
        elapsed: seconds since the operation started.
        done: the server said "success".
    """

    status: str = ""
    stage: Stage = "other"
    digest: str | None = None
    layer_completed: int | None = None
    layer_total: int | None = None
    completed: int = 0
    total: int | None = None
    fraction: float | None = None
    bytes_per_second: float | None = None
    eta: float | None = None
    elapsed: float = 0.0
    done: bool = False


@dataclass(frozen=True)
class ModelResult:
    """The outcome of a pull, push, create, preload or unload.

    Attributes:
        model: the model it concerned.
        operation: "pull", "push", "create", "preload" or "unload".
        status: the server's last status ("success"; for preload/unload the
            ``done_reason``).
        seconds: how long it took, as seen by this client.
        cancelled: a ``cancel()`` stopped it (the server keeps what it
            downloaded, and a later pull resumes).
        done_reason: for preload/unload: "load" or "unload".
        progress: the last ``Progress`` (pull, push, create).
    """

    model: str
    operation: str
    status: str = ""
    seconds: float = 0.0
    cancelled: bool = False
    done_reason: str | None = None
    progress: Progress | None = None


@dataclass(frozen=True)
class BatchProgress:
    """Where a batch call (``embed``, ``map_chat``) is: ``done`` of ``total``.

    The latest is ``handle.snapshot()``; ``embed`` counts inputs, ``map_chat``
    requests.
    """

    done: int
    total: int


@dataclass(frozen=True)
class EmbedResult:
    """The vectors of an ``embed`` call, in input order.

    Attributes:
        model: the model that embedded them.
        embeddings: one vector per input (lists of floats, or with
            ``compact=True`` one ``array.array("f")`` each: 4 bytes a value).
            A cancelled call keeps the vectors of the leading inputs done.
        prompt_eval_count: tokens read over every batch (``None`` when a
            batch's answer lacked it, as Ollama's may).
        seconds: how long the call took, as seen by this client.
        cancelled: a ``cancel()`` stopped it.
    """

    model: str = ""
    embeddings: Sequence[Sequence[float]] = ()
    prompt_eval_count: int | None = None
    seconds: float = 0.0
    cancelled: bool = False
