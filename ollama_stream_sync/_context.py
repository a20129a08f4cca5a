"""Context windows: what a model holds, and never losing a prompt's beginning silently.

Without the server's tokenizer, a ``Window`` plans with a conservative estimate and
sends ``truncate: false``: a server that would drop old messages (server/prompt.go)
refuses, and the window learns from the refusal, trims or resizes, and resends
before any output. Other requests are checked afterwards for signs of a cut prompt.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ._errors import CapabilityError, ContextLengthExceeded, ProtocolError
from ._events import Trim, Warn
from ._result import ChatResult
from ._run import StreamContext
from ._validate import positive_int

ContextArg = int | Literal["auto"] | None
"""``context=`` and ``history_limit=``: ``None``, tokens, or ``"auto"``."""

DEFAULT_NUM_CTX = 4096  # the server's when neither request nor model says
ANSWER_TOKENS = 1024  # room for the answer, unless num_predict says (max 1/4)
MESSAGE_TOKENS = 4  # a template's markers around each message
IMAGE_TOKENS = 768  # what server/prompt.go counts per image, to plan
ESTIMATE_SLACK = 1.5  # the estimate's most above a real tokenizer (JSON, short words)
MIN_SCALE = 0.5  # below: a count without its cached tokens (older runners)
TRUNCATION_RATIO, MIN_ESTIMATE = 0.5, 256  # "far below" the estimate
_PIECES = re.compile(r"[A-Za-z0-9_]{1,4}|\S")


class ContextTruncatedWarning(UserWarning):
    """The server cut a prompt to fit the model's context: the model did not read
    its beginning. Sent to ``on_warning`` (else ``warnings.warn``); avoid it with
    ``context="auto"`` or a ``Conversation``'s ``history_limit``."""


ContextTruncatedWarning.__module__ = "ollama_stream_sync"


@dataclass(frozen=True)
class ModelInfo:
    """What ``/api/show`` says of a model: its context and what it can do.

    Attributes:
        name: the model, as asked for.
        context_length: the longest context it supports (``None``: not said).
        num_ctx: the context it runs with by default, from its parameters
            (``None``: the server's default).
        capabilities: ``"completion"``, ``"tools"``, ``"thinking"``, ``"vision"``,
            ``"insert"``, ``"embedding"``...; ``None``: not said (nothing refused).
        family, parameter_size, quantization: ``"qwen3"``, ``"8.2B"``, ``"Q4_K_M"``.
    """

    name: str
    context_length: int | None = None
    num_ctx: int | None = None
    capabilities: tuple[str, ...] | None = None
    family: str = ""
    parameter_size: str = ""
    quantization: str = ""

    @classmethod
    def from_show(cls, name: str, data: Any) -> ModelInfo:
        """Parse an ``/api/show`` answer."""
        if not isinstance(data, dict):
            raise ProtocolError(f"/api/show answered no object: {data!r:.200}")
        info, details, caps = (
            data.get(k) for k in ("model_info", "details", "capabilities")
        )
        lengths = [
            v for k, v in dict(info or {}).items() if k.endswith(".context_length")
        ]
        num_ctx = re.search(r"^num_ctx\s+(\d+)", str(data.get("parameters")), re.M)
        details = dict(details or {})
        return cls(
            name,
            next((n for n in lengths if isinstance(n, int) and n > 0), None),
            int(num_ctx[1]) if num_ctx else None,
            tuple(map(str, caps)) if isinstance(caps, list) else None,
            *(
                str(details.get(k) or "")
                for k in ("family", "parameter_size", "quantization_level")
            ),
        )


def estimate_tokens(text: str) -> int:
    """A conservative token count: one per four letters or digits of a word, one
    per other character (punctuation, symbols, CJK). Above real tokenizers for
    prose (about 1.3 a word), near them for code, rarely below."""
    return len(_PIECES.findall(text))


def message_tokens(message: Mapping[str, Any]) -> int:
    """The estimate of one message as a template renders it (past thinking is
    left out, as templates leave it out)."""
    content = message.get("content")
    tokens = MESSAGE_TOKENS
    if isinstance(content, str):
        tokens += estimate_tokens(content)
    if message.get("tool_calls"):
        tokens += estimate_tokens(json.dumps(message["tool_calls"], default=str))
    return tokens


def estimate_prompt(
    messages: Sequence[Mapping[str, Any]], tools: Sequence[Any] | None = None
) -> int:
    """The estimate of a whole prompt: tools, messages, the answer's header."""
    tools_tokens = estimate_tokens(json.dumps(list(tools), default=str)) if tools else 0
    return tools_tokens + sum(map(message_tokens, messages)) + MESSAGE_TOKENS


def check_capabilities(info: ModelInfo | None, body: Mapping[str, Any]) -> None:
    """Raise ``CapabilityError`` when ``body`` asks what the model lacks; an
    unknown model or list of capabilities refuses nothing."""
    if info is None or info.capabilities is None:
        return
    messages = body.get("messages") or ()
    wanted = {
        "completion": True,
        "thinking": body.get("think") not in (None, False),
        "tools": bool(body.get("tools")),
        "vision": bool(body.get("images")) or any(m.get("images") for m in messages),
        "insert": bool(body.get("suffix")),
    }
    for capability, wants in wanted.items():
        if wants and capability not in info.capabilities:
            error = CapabilityError(
                f'"{info.name}" does not support {capability}', model=info.name
            )
            error.capability, error.before_sending = capability, True
            raise error


def report_truncation(
    ctx: StreamContext, result: ChatResult, estimate: int, options: Any
) -> bool:
    """Whether the server evidently cut the prompt: its own signs first (a
    ``prompt_eval_count`` at the context-shift limit, ``num_ctx - (num_ctx -
    num_keep) / 2`` with or without a BOS token), then a count far below the
    estimate. If so, tell ``on_warning``, else ``warnings.warn``."""
    count, options = result.prompt_eval_count, options or {}
    num_ctx, keep = options.get("num_ctx"), options.get("num_keep", 4)
    if not count or not result.done or result.cancelled:
        return False
    how = None
    if isinstance(num_ctx, int) and isinstance(keep, int) and keep >= 0:
        ends = {
            num_ctx - max((num_ctx - min(k, num_ctx - 1)) // 2, 1)
            for k in (keep, keep + 1)
        }
        if count in ends and estimate > count:
            how = f"it kept the last {count} tokens of num_ctx {num_ctx}"
    if how is None and estimate >= MIN_ESTIMATE and count < estimate * TRUNCATION_RATIO:
        how = f"it read {count} tokens of about {estimate} sent"
    if how is None:
        return False
    warning = ContextTruncatedWarning(
        f"the prompt did not fit the model's context and the server cut it ({how}): "
        "the model did not read its beginning; use context='auto' or a "
        "Conversation's history_limit"
    )
    ctx.delivery.emit(Warn(warning))
    if "on_warning" not in ctx.delivery.callbacks:
        warnings.warn(warning, stacklevel=1)
    return True


def turns(messages: Sequence[Mapping[str, Any]]) -> list[list[int]]:
    """The indexes of the messages other than system ones, by turn: a user
    message and what follows it (tool calls, their results, the answer)."""
    groups: list[list[int]] = []
    for i, message in enumerate(messages):
        if message.get("role") == "system":
            continue
        if message.get("role") == "user" or not groups:
            groups.append([])
        groups[-1].append(i)
    return groups


class Window:
    """How one chat or conversation keeps its prompt inside the model's context.

    Each request is planned (the ``num_ctx`` to ask for, the old turns to drop)
    from the estimate times ``scale``, the server's tokens per estimated token
    as its refusals and its answers' ``prompt_eval_count`` tell. ``num_ctx``
    is the context asked for last (``"auto"`` only grows it: each change
    reloads the model), ``window`` the one the server is believed to have,
    ``ceiling`` a smaller one than asked that the server said it has.
    """

    def __init__(
        self,
        model: str,
        context: ContextArg = None,
        history_limit: ContextArg = None,
        *,
        truncate: bool | None = None,
    ) -> None:
        for name, value in (("context", context), ("history_limit", history_limit)):
            if value is not None and value != "auto":
                positive_int(name, value)
        if truncate and (context is not None or history_limit is not None):
            raise ValueError("truncate=True lets the server cut what context= keeps")
        self.model, self.context, self.history_limit = model, context, history_limit
        self.managed = context is not None or history_limit is not None
        """Whether requests go with ``truncate: false`` and are fitted here."""
        self.needs_info = "auto" in (context, history_limit)
        """Whether planning needs the model's ``/api/show``."""
        self.num_ctx = context if isinstance(context, int) else None
        self.scale: float | None = None
        self.ceiling: int | None = None
        self.window: int | None = None

    def plan(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Any] | None,
        info: ModelInfo | None,
        options: Mapping[str, Any],
    ) -> tuple[list[int], int | None, int]:
        """The messages to drop, the ``num_ctx`` to send, and the estimate of
        the prompt that is left.

        Raises:
            ContextLengthExceeded: even the largest context cannot hold it.
        """
        scale, asked = self.scale or 1.0, options.get("num_ctx")
        known = (info.context_length if info else None, self.ceiling)
        maximum = min((n for n in known if n), default=None)
        default = (info.num_ctx if info else None) or DEFAULT_NUM_CTX
        window = maximum if self.context == "auto" else self.num_ctx or asked or default
        window = min(window, self.ceiling) if window and self.ceiling else window
        self.window = window
        predict = options.get("num_predict")
        room = predict if isinstance(predict, int) and predict > 0 else None
        basis = default if self.context == "auto" else window or default
        room = room or min(ANSWER_TOKENS, basis // 4)
        limit = self.history_limit
        if limit == "auto":
            limit = window - room if window else None
        if isinstance(limit, int) and self.ceiling:
            limit = min(limit, self.ceiling - room)
        costs = [
            message_tokens(m) + IMAGE_TOKENS * len(m.get("images") or ())
            for m in messages
        ]
        total = estimate_prompt([], tools) + sum(costs)
        drop: list[int] = []
        for group in turns(messages)[:-1]:
            if not isinstance(limit, int) or total * scale <= limit:
                break
            drop += group
            total -= sum(costs[i] for i in group)
        if self.context == "auto":
            size = self.num_ctx or default
            while size < total * scale + room:
                size *= 2
            self.num_ctx = min(size, maximum) if maximum else size
        cap = maximum if self.context == "auto" else self.num_ctx
        low = total * (self.scale or 1 / ESTIMATE_SLACK)
        if cap and low > cap:
            error = ContextLengthExceeded(
                f"the prompt (about {int(low)} tokens) does not fit the model's "
                f"context ({cap} tokens)",
                model=self.model,
            )
            error.prompt_tokens, error.context_length = int(low), cap
            error.before_sending = True
            raise error
        return drop, self.num_ctx, total

    def learn(
        self, error: ContextLengthExceeded, sent: int, num_ctx: int | None
    ) -> None:
        """The server refused a prompt of ``sent`` estimated tokens: scale up."""
        if error.context_length and (num_ctx is None or error.context_length < num_ctx):
            self.ceiling = error.context_length
        if error.prompt_tokens:
            self.scale = error.prompt_tokens / sent
        else:  # an older server's refusal, without counts: over the window
            window = num_ctx or self.window or DEFAULT_NUM_CTX
            self.scale = max((self.scale or 1.0) * 1.25, window * 1.05 / sent)

    def sized(self, body: dict[str, Any], num_ctx: int | None) -> dict[str, Any]:
        """``body`` as this window sends it: ``truncate: false`` when managed,
        and ``num_ctx`` in its options when one was planned."""
        if not self.managed:
            return body
        sized = body | {"truncate": False}
        if num_ctx:
            sized["options"] = {**body.get("options", {}), "num_ctx": num_ctx}
        return sized

    def send(
        self,
        ctx: StreamContext,
        build: Callable[[int | None], dict[str, Any]],
        send: Callable[[dict[str, Any]], ChatResult],
        info: ModelInfo | None,
        trim: Callable[[list[int]], Sequence[Mapping[str, Any]]] | None = None,
    ) -> tuple[ChatResult, bool]:
        """Send what ``build(num_ctx)`` makes; return the result and whether the
        server cut its prompt.

        Managed: plan, ``trim(indexes)`` (which returns the history left),
        send; after a refusal before any output, learn and resend while the
        plan changes, else raise the refusal.
        """
        body = build(None)
        if not self.managed:
            result = send(body)
            texts = [body.get(k) for k in ("system", "prompt", "suffix")]
            messages = body.get("messages") or [{"content": t} for t in texts if t]
            estimate = estimate_prompt(messages, body.get("tools"))
            return result, report_truncation(ctx, result, estimate, body.get("options"))
        messages, options = body["messages"], body.get("options") or {}
        refused: ContextLengthExceeded | None = None
        while True:
            before = self.num_ctx
            drop, num_ctx, tokens = self.plan(
                messages, body.get("tools"), info, options
            )
            if drop and trim is not None:
                gone = tuple(dict(messages[i]) for i in drop)
                messages = trim(drop)
                ctx.delivery.emit(Trim(gone))
            elif refused is not None and num_ctx == before:
                raise refused
            try:
                result = send(build(num_ctx))
            except ContextLengthExceeded as error:
                if ctx.state.has_output:
                    raise
                self.learn(error, tokens, num_ctx)
                refused = error
                continue
            if result.prompt_eval_count and result.done:
                self.scale = max(result.prompt_eval_count / tokens, MIN_SCALE)
            return result, False
