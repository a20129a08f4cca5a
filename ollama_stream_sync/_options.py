"""The per-call callbacks and settings (``**options``), defined once as TypedDicts.

A typo such as ``on_contnet=`` is a type error under mypy and pyright, and a
``TypeError`` at run time (``check``); each key's ``Annotated`` text is the line
``help()`` shows for it (``documented``).
"""

from __future__ import annotations

import difflib
import functools
import inspect
import typing
from collections.abc import Callable, Mapping
from typing import Annotated, Any, TypedDict, TypeVar

from typing_extensions import Unpack

from ._dispatch import Dispatcher, check_dispatcher
from ._errors import StreamError
from ._result import ChatResult, EmbedResult, ModelResult, Progress
from ._retry import RetryArg, check_retry
from ._validate import check_headers, seconds

__all__ = [
    "CallOptions",
    "ConversationOptions",
    "EmbedOptions",
    "MapOptions",
    "ModelOptions",
    "Settings",
    "Unpack",
]

Seconds = float | None
F = TypeVar("F", bound=Callable[..., Any])


class Settings(TypedDict, total=False):
    """Per-call settings (every key optional; a key left out uses the client's)."""

    retry: Annotated[RetryArg, "a RetryPolicy, a tenacity.Retrying, or None"]
    connect_timeout: Annotated[Seconds, "seconds to connect (None: no limit)"]
    first_token_timeout: Annotated[Seconds, "seconds to wait for the first output"]
    read_timeout: Annotated[Seconds, "the longest silence between chunks"]
    deadline: Annotated[Seconds, "seconds for the whole call, retries included"]
    headers: Annotated[
        Mapping[str, str], "HTTP headers for this call, over the client's"
    ]


class _Delivery(Settings, total=False):
    dispatcher: Annotated[Dispatcher | None, "where the callbacks run"]
    coalesce_interval: Annotated[Seconds, "merge deltas arriving within this many s"]
    on_error: Annotated[
        Callable[[StreamError], object] | None, "once, with the error, on failure"
    ]
    on_retry: Annotated[
        Callable[[int, StreamError, float], object] | None,
        "(attempt, error, delay) before each retry's wait",
    ]
    on_phase: Annotated[
        Callable[[str], object] | None,
        'each phase change: "connecting", "waiting", "thinking"...',
    ]


class CallOptions(_Delivery, total=False):
    """Callbacks and per-call settings of a chat or generate call; all optional.

    Callbacks run in order, one at a time, through the stream's dispatcher.
    """

    on_thinking: Annotated[Callable[[str], object] | None, "each thinking delta"]
    on_content: Annotated[Callable[[str], object] | None, "each answer delta"]
    on_tool_call: Annotated[
        Callable[[dict[str, Any]], object] | None, "each complete tool call (a dict)"
    ]
    on_partial: Annotated[
        Callable[[Any], object] | None, "with format=: the answer parsed so far"
    ]
    on_reset: Annotated[
        Callable[[int, StreamError], object] | None,
        "(attempt, error) when a retry after output voids what was shown",
    ]
    on_done: Annotated[
        Callable[[ChatResult], object] | None,
        "once, with the result (also on cancel: result.cancelled)",
    ]
    on_warning: Annotated[
        Callable[[Warning], object] | None,
        "a ContextTruncatedWarning (else warnings.warn)",
    ]
    probe_loading: Annotated[bool, 'ask /api/ps so a cold model reports "loading"']
    check_capabilities: Annotated[
        bool, "refuse think/tools/images the model lacks, by /api/show (cached)"
    ]


class ConversationOptions(CallOptions, total=False):
    """``CallOptions`` plus what a conversation adds."""

    on_tool_result: Annotated[
        Callable[[dict[str, Any], str], object] | None, "(call, result) after each tool"
    ]
    on_trim: Annotated[
        Callable[[list[dict[str, Any]]], object] | None,
        "the oldest messages dropped to fit history_limit",
    ]


class ModelOptions(_Delivery, total=False):
    """Callbacks and settings of ``pull``, ``push`` and ``create``; all optional."""

    on_progress: Annotated[
        Callable[[Progress], object] | None, "each progress line, as a Progress"
    ]
    on_done: Annotated[
        Callable[[ModelResult], object] | None,
        "once, with the ModelResult (also on cancel)",
    ]


class EmbedOptions(_Delivery, total=False):
    """Callbacks and settings of ``embed`` and ``start_embed``; all optional."""

    on_progress: Annotated[Callable[[int, int], object] | None, "(done, total) texts"]
    on_done: Annotated[Callable[[EmbedResult], object] | None, "once, the EmbedResult"]


class MapOptions(TypedDict, total=False):
    """The options of ``map_chat`` and ``map_generate``; all optional."""

    max_concurrency: Annotated[int, "requests at once (default 4)"]
    on_result: Annotated[Callable[[int, ChatResult], object] | None, "(index, result)"]
    on_error: Annotated[Callable[[int, StreamError], object] | None, "(index, error)"]
    stop_on_error: Annotated[bool, "raise the first error, once the rest stop"]


@functools.cache  # each call checks its options against these
def _hints(options: type) -> dict[str, Any]:
    return typing.get_type_hints(options, include_extras=True)


def documented(options: type) -> Callable[[F], F]:
    """A decorator: append a line per key of ``options`` (callbacks first) to a
    call's docstring, so ``help()`` lists its callbacks and settings."""
    lines = [
        f"    {name}: {getattr(hint, '__metadata__', [''])[0]}"
        for name, hint in _hints(options).items()
    ]
    described = "\n".join(
        sorted(lines, key=lambda line: not line.startswith("    on_"))
    )

    def add(method: F) -> F:
        method.__doc__ = (
            f"{inspect.cleandoc(method.__doc__ or '')}\n\n"
            f"Callbacks and settings (``**{options.__name__}``):\n{described}\n"
        )
        return method

    return add


def check(options: Mapping[str, Any], allowed: type) -> None:
    """Reject unknown keys and wrong values on the caller's thread, naming them."""
    known = _hints(allowed).keys()
    for key in options.keys() - known:
        near = difflib.get_close_matches(key, known, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        if key in _MODEL_OPTIONS:
            hint = f"; model options go in options={{{key!r}: ...}}"
        raise TypeError(f"unexpected keyword argument {key!r}{hint}")
    for key, value in options.items():
        if key.startswith("on_"):
            if value is not None and not callable(value):
                raise TypeError(
                    f"{key} must be callable or None, not {type(value).__name__}"
                )
        elif key.endswith(("_timeout", "deadline")):
            seconds(key, value)
        elif key == "coalesce_interval":
            seconds(key, value, zero=True)
    if "retry" in options:
        check_retry(options["retry"])
    if "dispatcher" in options:
        check_dispatcher(options["dispatcher"])
    for key in ("probe_loading", "check_capabilities"):
        if key in options and not isinstance(options[key], bool):
            raise TypeError(f"{key} must be True or False")
    if "headers" in options:
        check_headers(options["headers"])


_MODEL_OPTIONS = frozenset(
    "temperature top_p top_k seed num_ctx num_predict stop min_p repeat_penalty "
    "num_keep mirostat presence_penalty frequency_penalty".split()
)
