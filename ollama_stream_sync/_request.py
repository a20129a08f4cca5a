"""Bodies for /api/chat and /api/generate, built and checked on the caller's thread.

Not through the SDK's pydantic models, which drop fields a conversation needs (a
tool call's ``id``, a tool message's ``tool_call_id``); the SDK's own public pieces
convert images, Python functions as tools and ``Options``.
"""

from __future__ import annotations

import difflib
import inspect
import json
import sys
import threading
import typing
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ollama
from pydantic import BaseModel

from ._hosts import same_model
from ._result import ChatResult
from ._structured import FormatSpec
from ._transports._compat import function_tool

MessageLike = Mapping[str, Any] | ollama.Message
ToolLike = Mapping[str, Any] | ollama.Tool | Callable[..., Any]
ImageLike = str | bytes | ollama.Image | Any


def drop_none(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None}


def _dump(model: BaseModel) -> Any:
    return model.model_dump(exclude_none=True, by_alias=True)


def encode_images(images: Sequence[ImageLike]) -> list[str]:
    """Images as base64 strings via the SDK's ``Image`` (paths, bytes, base64)."""
    if isinstance(images, (str, bytes)):
        raise TypeError("images must be a list of paths, bytes or base64 strings")
    return [
        str((i if isinstance(i, ollama.Image) else ollama.Image(value=i)).model_dump())
        for i in images
    ]


def encode_message(message: MessageLike) -> dict[str, Any]:
    """One history message as Ollama expects it, keeping every field given."""
    if isinstance(message, BaseModel):
        data: dict[str, Any] = _dump(message)
    elif isinstance(message, Mapping):
        data = drop_none(message)
    else:
        raise TypeError(
            f"a message must be a dict or ollama.Message, not {type(message).__name__}"
        )
    role = data.get("role")
    if not isinstance(role, str) or not role:
        raise ValueError(f"every message needs a 'role' string: {data!r:.200}")
    if data.get("images"):
        data["images"] = encode_images(data["images"])
    calls = data.get("tool_calls")
    if calls:
        data["tool_calls"] = [
            _dump(c) if isinstance(c, BaseModel) else dict(c) for c in calls
        ]
    return data


class ToolSchemaWarning(UserWarning):
    """A tool function lacks the type hints or docstring its schema is built from."""


class UnknownOptionWarning(UserWarning):
    """An ``options`` key that no Ollama model option has (a typo?)."""


class ServedModelWarning(UserWarning):
    """The answer names another model than the one asked for: something on the
    way (a gateway, a proxy with model aliases) swapped it."""


for _warning in (ToolSchemaWarning, UnknownOptionWarning, ServedModelWarning):
    _warning.__module__ = "ollama_stream_sync"

# Guards _warned: calls build requests on many threads.
_warned_lock = threading.Lock()
_warned: set[object] = set()


def _warn_once(key: object, message: str, category: type[Warning]) -> None:
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    warn_at(caller(), message, category)


Where = tuple[str, int, dict[str, Any]]
"""A line of the caller's code: file, line number, its module's globals."""


def caller() -> Where:
    """Where the caller's own code called us, so that a warning found later,
    on a worker thread, can point there (``warn_at``)."""
    frame = sys._getframe(1)
    package = __name__.rsplit(".", 1)[0]
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith(
        package
    ):
        frame = frame.f_back
    return frame.f_code.co_filename, frame.f_lineno, frame.f_globals


def warn_at(where: Where, message: str, category: type[Warning]) -> None:
    """Warn as if from ``where``: its module's filters and "once" registry apply."""
    filename, lineno, module_globals = where
    warnings.warn_explicit(
        message,
        category,
        filename,
        lineno,
        module=module_globals.get("__name__"),
        registry=module_globals.setdefault("__warningregistry__", {}),
        module_globals=module_globals,
    )


def checking_served(job: Callable[[Any], Any], asked: str) -> Callable[[Any], Any]:
    """``job``, warning (``ServedModelWarning``, at the caller's line) when its
    answer names another model than ``asked`` (not a ``:cloud`` name answered
    by its base name)."""
    where = caller()

    def checked(ctx: Any) -> Any:
        result = job(ctx)
        served = getattr(result, "model", "")
        if isinstance(result, ChatResult) and served and not same_model(asked, served):
            warn_at(
                where,
                f"asked for model {asked!r} but {served!r} answered "
                f"({result.host or 'the host'}): something on the way swapped it",
                ServedModelWarning,
            )
        return result

    return checked


def _check_tool_function(fn: Callable[..., Any]) -> None:
    """Warn (once per function) when its schema would tell the model nothing."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return
    untyped = ", ".join(
        p.name
        for p in params
        if p.annotation is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    )
    problems = []
    if untyped:
        problems.append(f"no type hints for {untyped} (each is sent as a string)")
    if not inspect.getdoc(fn):
        problems.append("no docstring (the model gets no description of it)")
    if problems:
        name = getattr(fn, "__name__", repr(fn))
        _warn_once(
            ("tool", fn),
            f"tool function {name!r} has {' and '.join(problems)}; add them "
            "so the model knows how to call it",
            ToolSchemaWarning,
        )


def encode_tool(tool: ToolLike) -> dict[str, Any]:
    """A tool schema: dicts pass verbatim; functions use the SDK's conversion."""
    if isinstance(tool, Mapping):
        return dict(tool)
    if isinstance(tool, BaseModel):
        return dict(_dump(tool))
    if callable(tool):
        _check_tool_function(tool)
        return function_tool(tool)
    raise TypeError(
        f"a tool must be a dict, ollama.Tool or function, not {type(tool).__name__}"
    )


KNOWN_OPTIONS = frozenset(ollama.Options.model_fields) | {"min_p", "draft_num_predict"}
"""Model options Ollama knows: the SDK's ``Options`` fields, plus the server's own
(``api/types.go``) that this SDK version lacks."""
_KNOWN_KEYS_HINT = "known keys include temperature, top_p, num_ctx, seed"


def encode_options(options: Mapping[str, Any] | ollama.Options | None) -> Any:
    """Model options as sent; unknown keys are sent too, with a warning once each."""
    if options is None:
        return None
    if isinstance(options, BaseModel):
        return _dump(options)
    if not isinstance(options, Mapping):
        raise TypeError(
            "options must be a dict of model options (or ollama.Options), "
            f"not {type(options).__name__}"
        )
    for key, value in options.items():
        if key not in KNOWN_OPTIONS:
            near = difflib.get_close_matches(key, KNOWN_OPTIONS, n=1)
            hint = f"did you mean {near[0]!r}?" if near else _KNOWN_KEYS_HINT
            _warn_once(
                ("option", key),
                f"options has an unknown key {key!r} (sent anyway); {hint}",
                UnknownOptionWarning,
            )
        elif not _option_type_ok(key, value):
            raise TypeError(
                f"options[{key!r}] must be {_OPTION_TYPES[key].__name__}, "
                f"not {type(value).__name__} {value!r:.40}"
            )
    return dict(options)


_OPTION_TYPES: dict[str, type] = {
    name: kind
    for name, field in ollama.Options.model_fields.items()
    for kind in (float, int, bool)
    if kind in typing.get_args(field.annotation)
} | {"stop": list, "min_p": float}


def _option_type_ok(key: str, value: Any) -> bool:
    kind = _OPTION_TYPES.get(key)
    if kind is None or not isinstance(value, (str, int, float, list)):
        return True  # None, or what JSON cannot send (said by encode_body)
    if kind in (int, float) and isinstance(value, bool):
        return False
    return isinstance(value, (int, float) if kind is float else kind)


def encode_body(body: Mapping[str, Any]) -> bytes:
    """A request body as JSON bytes; ``TypeError`` on the caller's thread for a
    value JSON cannot encode (bytes content, a datetime...)."""
    try:
        return json.dumps(body, ensure_ascii=False).encode()
    except (TypeError, ValueError) as exc:
        raise TypeError(f"the request cannot be sent as JSON: {exc}") from exc


def encode_format(format: Any) -> Any:
    """The wire value of ``format`` (a pydantic model class becomes its schema)."""
    return None if format is None else FormatSpec(format).wire


THINK_LEVELS = ("low", "medium", "high", "max")
"""The reasoning levels Ollama takes for ``think``."""


def check_model(model: object) -> None:
    """A model name: a non-empty string."""
    if not isinstance(model, str) or not model:
        raise ValueError("model must be a non-empty string, e.g. 'qwen3'")


def _check_settings(think: object, keep_alive: object) -> None:
    """The scalar settings whose wrong types would only fail on the worker."""
    if think is not None and not isinstance(think, bool) and think not in THINK_LEVELS:
        raise ValueError(
            f"think must be True, False or a level ({', '.join(THINK_LEVELS)}), "
            f"not {think!r:.40}"
        )
    if keep_alive is not None and (
        isinstance(keep_alive, bool) or not isinstance(keep_alive, (int, float, str))
    ):
        raise TypeError(
            "keep_alive must be seconds or a duration string like '5m', "
            f"not {type(keep_alive).__name__}"
        )


def chat_body(
    model: str,
    messages: Sequence[MessageLike] | None,
    *,
    tools: Sequence[ToolLike] | None = None,
    think: bool | str | None = None,
    format: Any = None,
    options: Mapping[str, Any] | ollama.Options | None = None,
    keep_alive: float | str | None = None,
    logprobs: bool | None = None,
    top_logprobs: int | None = None,
    truncate: bool | None = None,
    shift: bool | None = None,
) -> dict[str, Any]:
    """The JSON body of a streaming /api/chat request."""
    check_model(model)
    _check_settings(think, keep_alive)
    if isinstance(messages, (str, Mapping)):
        raise TypeError("messages must be a list of message dicts")
    body: dict[str, Any] = {
        "model": model,
        "messages": [encode_message(m) for m in messages or ()],
        "stream": True,
    }
    if tools:
        body["tools"] = [encode_tool(t) for t in tools]
    return body | drop_none(
        {
            "think": think,
            "format": encode_format(format),
            "options": encode_options(options),
            "keep_alive": keep_alive,
            "logprobs": logprobs,
            "top_logprobs": top_logprobs,
            "truncate": truncate,
            "shift": shift,
        }
    )


def generate_body(
    model: str,
    prompt: str | None = None,
    suffix: str | None = None,
    *,
    system: str | None = None,
    template: str | None = None,
    context: Sequence[int] | None = None,
    think: bool | str | None = None,
    raw: bool | None = None,
    format: Any = None,
    images: Sequence[ImageLike] | None = None,
    options: Mapping[str, Any] | ollama.Options | None = None,
    keep_alive: float | str | None = None,
    logprobs: bool | None = None,
    top_logprobs: int | None = None,
    width: int | None = None,
    height: int | None = None,
    steps: int | None = None,
    truncate: bool | None = None,
    shift: bool | None = None,
) -> dict[str, Any]:
    """The JSON body of a streaming /api/generate request."""
    check_model(model)
    _check_settings(think, keep_alive)
    return {"model": model, "stream": True} | drop_none(
        {
            "prompt": prompt,
            "suffix": suffix,
            "system": system,
            "template": template,
            "context": list(context) if context is not None else None,
            "think": think,
            "raw": raw,
            "format": encode_format(format),
            "images": encode_images(images) if images else None,
            "options": encode_options(options),
            "keep_alive": keep_alive,
            "logprobs": logprobs,
            "top_logprobs": top_logprobs,
            "width": width,
            "height": height,
            "steps": steps,
            "truncate": truncate,
            "shift": shift,
        }
    )
