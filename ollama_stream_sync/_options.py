"""The per-call callbacks and settings, defined once and shared by every call.

``chat``, ``start_chat``, ``stream_chat``, ``generate``, ``start_generate``,
``stream_generate`` and ``Conversation.send``/``start_send``/``stream_send``
take them as ``**options: Unpack[CallOptions]``, so a typo such as
``on_contnet=`` is a type error under mypy and pyright, and a ``TypeError`` at
run time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypedDict

from typing_extensions import Unpack

from . import _validate
from ._dispatch import Dispatcher, check_dispatcher
from ._errors import StreamError
from ._progress import ModelResult, Progress
from ._result import ChatResult
from ._retry import RetryArg, check_retry

__all__ = [
    "CallOptions",
    "ConversationOptions",
    "ModelOptions",
    "Settings",
    "Unpack",
]


class CallOptions(TypedDict, total=False):
    """Callbacks and per-call settings; every key is optional.

    Callbacks run in order, one at a time, through the stream's dispatcher.
    A setting left out uses the client's.
    """

    on_thinking: Callable[[str], object] | None
    """Each thinking delta."""
    on_content: Callable[[str], object] | None
    """Each answer delta."""
    on_tool_call: Callable[[dict[str, Any]], object] | None
    """Each complete tool call (a dict with ``function`` and ``id``)."""
    on_done: Callable[[ChatResult], object] | None
    """Once, with the final result (also on cancel: ``result.cancelled``)."""
    on_error: Callable[[StreamError], object] | None
    """Once, with the error, on failure."""
    on_retry: Callable[[int, StreamError, float], object] | None
    """``(attempt, error, delay)`` before each retry's wait."""
    on_reset: Callable[[int, StreamError], object] | None
    """``(attempt, error)`` when a retry after output voids what was shown."""
    on_phase: Callable[[str], object] | None
    """Each phase change: "connecting", "waiting", "loading", "thinking"..."""
    on_partial: Callable[[Any], object] | None
    """With ``format=``: the answer parsed so far, whenever it changes."""
    dispatcher: Dispatcher | None
    """Where the callbacks run (default: the client's)."""
    retry: RetryArg
    """A ``RetryPolicy``, a ``tenacity.Retrying`` or ``None``."""
    connect_timeout: float | None
    first_token_timeout: float | None
    read_timeout: float | None
    deadline: float | None
    coalesce_interval: float | None
    probe_loading: bool
    """Ask ``/api/ps`` whether the model is loaded, to report "loading"."""


class ConversationOptions(CallOptions, total=False):
    """``CallOptions`` plus what a conversation adds."""

    on_tool_result: Callable[[dict[str, Any], str], object] | None
    """``(call, result)`` after each tool ran."""


class Settings(TypedDict, total=False):
    """Per-call settings without callbacks (``preload``, ``unload``)."""

    retry: RetryArg
    connect_timeout: float | None
    first_token_timeout: float | None
    read_timeout: float | None
    deadline: float | None


class ModelOptions(Settings, total=False):
    """Callbacks and settings of ``pull``, ``push`` and ``create``."""

    on_progress: Callable[[Progress], object] | None
    """Each progress line as a ``Progress`` (coalesced to the latest)."""
    on_done: Callable[[ModelResult], object] | None
    """Once, with the ``ModelResult`` (also on cancel: ``result.cancelled``)."""
    on_error: Callable[[StreamError], object] | None
    """Once, with the error (its ``.partial`` is the last ``Progress``)."""
    on_retry: Callable[[int, StreamError, float], object] | None
    on_phase: Callable[[str], object] | None
    dispatcher: Dispatcher | None
    coalesce_interval: float | None


CALLBACK_KEYS = (
    "on_thinking",
    "on_content",
    "on_tool_call",
    "on_done",
    "on_error",
    "on_retry",
    "on_reset",
    "on_phase",
    "on_partial",
)
SETTING_KEYS = (
    "retry",
    "connect_timeout",
    "first_token_timeout",
    "read_timeout",
    "deadline",
    "coalesce_interval",
    "probe_loading",
)
"""The client settings a single call may override."""
CALL_KEYS = frozenset({*CALLBACK_KEYS, *SETTING_KEYS, "dispatcher"})
CONVERSATION_KEYS = CALL_KEYS | {"on_tool_result"}
SETTINGS_KEYS = frozenset(Settings.__annotations__)
MODEL_KEYS = frozenset(
    {*SETTINGS_KEYS, "on_progress", "on_done", "on_error", "on_retry", "on_phase"}
    | {"dispatcher", "coalesce_interval"}
)
MODEL_CALLBACK_KEYS = ("on_progress", "on_done", "on_error", "on_retry", "on_phase")


def check_call(options: Mapping[str, Any], allowed: frozenset[str] = CALL_KEYS) -> None:
    """Reject unknown keys and wrong values, in the caller's thread.

    Raises:
        TypeError, ValueError: naming the argument.
    """
    unknown = set(options) - allowed
    if unknown:
        names = ", ".join(sorted(unknown))
        raise TypeError(f"unexpected keyword argument(s): {names}")
    for key in (*CALLBACK_KEYS, "on_tool_result", "on_progress"):
        if key in options:
            _validate.callable_or_none(key, options[key])
    _validate.settings(options)
    if "retry" in options:
        check_retry(options["retry"])
    if "dispatcher" in options:
        check_dispatcher(options["dispatcher"])
    if "probe_loading" in options and not isinstance(options["probe_loading"], bool):
        raise TypeError("probe_loading must be True or False")
