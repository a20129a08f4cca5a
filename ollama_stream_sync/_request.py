"""Request bodies for /api/chat and /api/generate, built once, on the caller's thread.

We encode requests ourselves rather than through the SDK's pydantic models
because those drop fields a conversation needs (a tool call's ``id``, a tool
message's ``tool_call_id``). Where the SDK's conversion is the reference (images,
Python functions as tools, ``Options``) we use the SDK's own public pieces.
Mistakes raise ``TypeError``/``ValueError`` here, before any thread starts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ollama
from pydantic import BaseModel

MessageLike = Mapping[str, Any] | ollama.Message
ToolLike = Mapping[str, Any] | ollama.Tool | Callable[..., Any]
ImageLike = str | bytes | ollama.Image | Any


def _drop_none(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None}


def _dump(model: BaseModel) -> Any:
    return model.model_dump(exclude_none=True, by_alias=True)


def encode_images(images: Sequence[ImageLike]) -> list[str]:
    """Images as base64 strings via the SDK's ``Image`` (paths, bytes, base64)."""
    if isinstance(images, (str, bytes)):
        raise TypeError("images must be a list of paths, bytes or base64 strings")
    out: list[str] = []
    for image in images:
        img = image if isinstance(image, ollama.Image) else ollama.Image(value=image)
        out.append(str(img.model_dump()))
    return out


def encode_message(message: MessageLike) -> dict[str, Any]:
    """One history message as Ollama expects it, keeping every field given."""
    if isinstance(message, BaseModel):
        data: dict[str, Any] = _dump(message)
    elif isinstance(message, Mapping):
        data = _drop_none(message)
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


def encode_tool(tool: ToolLike) -> dict[str, Any]:
    """A tool schema: dicts pass verbatim; functions use the SDK's conversion."""
    if isinstance(tool, Mapping):
        return dict(tool)
    if isinstance(tool, BaseModel):
        return dict(_dump(tool))
    if callable(tool):
        # The SDK's own function-to-schema conversion (public only via Client.chat).
        from ollama._utils import convert_function_to_tool  # noqa: PLC0415

        return dict(_dump(convert_function_to_tool(tool)))
    raise TypeError(
        f"a tool must be a dict, ollama.Tool or function, not {type(tool).__name__}"
    )


def _options(options: Mapping[str, Any] | ollama.Options | None) -> Any:
    if isinstance(options, BaseModel):
        return _dump(options)
    return None if options is None else dict(options)


def _check_model(model: str) -> None:
    if not isinstance(model, str) or not model:
        raise ValueError("model must be a non-empty string, e.g. 'qwen3'")


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
) -> dict[str, Any]:
    """The JSON body of a streaming /api/chat request."""
    _check_model(model)
    if isinstance(messages, (str, Mapping)):
        raise TypeError("messages must be a list of message dicts")
    body: dict[str, Any] = {
        "model": model,
        "messages": [encode_message(m) for m in messages or ()],
        "stream": True,
    }
    if tools:
        body["tools"] = [encode_tool(t) for t in tools]
    return body | _drop_none(
        {
            "think": think,
            "format": format,
            "options": _options(options),
            "keep_alive": keep_alive,
            "logprobs": logprobs,
            "top_logprobs": top_logprobs,
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
) -> dict[str, Any]:
    """The JSON body of a streaming /api/generate request."""
    _check_model(model)
    return {"model": model, "stream": True} | _drop_none(
        {
            "prompt": prompt,
            "suffix": suffix,
            "system": system,
            "template": template,
            "context": list(context) if context is not None else None,
            "think": think,
            "raw": raw,
            "format": format,
            "images": encode_images(images) if images else None,
            "options": _options(options),
            "keep_alive": keep_alive,
            "logprobs": logprobs,
            "top_logprobs": top_logprobs,
            "width": width,
            "height": height,
            "steps": steps,
        }
    )
