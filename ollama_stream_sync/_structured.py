"""Structured output: the ``format`` a request sends, partial values as the answer
streams, and the validated value at the end. Plus the prompt-size estimate that
tells a silently truncated prompt.

Partial JSON is parsed by pydantic-core's ``from_json(..., allow_partial=...)``
(pydantic comes with the SDK), not by a parser of our own.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pydantic
import pydantic_core

from ._errors import OutputValidationError
from ._result import ChatResult
from ._state import ChatState

log = logging.getLogger("ollama_stream_sync")

FormatArg = str | Mapping[str, Any] | type[pydantic.BaseModel] | None
"""``"json"``, a JSON schema (dict), or a pydantic model class."""


class FormatSpec:
    """One request's ``format``: what to send, and how to read the answer."""

    __slots__ = ("model", "wire")

    def __init__(self, format: FormatArg) -> None:
        self.model: type[pydantic.BaseModel] | None = None
        self.wire: Any
        if isinstance(format, type) and issubclass(format, pydantic.BaseModel):
            self.model = format
            self.wire = format.model_json_schema()
        elif isinstance(format, Mapping):
            self.wire = dict(format)
        elif format == "json":
            self.wire = "json"
        else:
            raise TypeError(
                "format must be 'json', a JSON schema (dict) or a pydantic model "
                f"class, not {format!r:.80}"
            )

    def parser(self) -> PartialJson:
        """A fresh parser of partial values for one answer."""
        return PartialJson()

    def parse(self, result: ChatResult) -> Any:
        """The validated value of a complete answer.

        Raises:
            OutputValidationError: not JSON, or not valid for the model; the
                result (with its raw ``content``) is ``.partial``.
        """
        try:
            if self.model is not None:
                return self.model.model_validate_json(result.content)
            return json.loads(result.content)
        except (ValueError, pydantic.ValidationError) as exc:
            kind = self.model.__name__ if self.model is not None else "JSON"
            error = OutputValidationError(
                f"the answer is not valid {kind}: {exc}".splitlines()[0],
                partial=result,
                model=result.model or None,
            )
            raise error from exc


_NOTHING = object()


class PartialJson:
    """Parses the answer so far as partial JSON; reports each change."""

    __slots__ = ("_last", "_parts")

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._last: Any = _NOTHING

    def feed(self, text: str) -> tuple[bool, Any]:
        """Add a content delta; return (changed, value so far)."""
        self._parts.append(text)
        joined = "".join(self._parts)
        self._parts = [joined]
        if not joined.strip():
            return False, None
        try:
            value = pydantic_core.from_json(joined, allow_partial="trailing-strings")
        except ValueError:
            return False, None  # not JSON (yet): nothing to show
        if value == self._last:
            return False, value
        self._last = value
        return True, value


CHARS_PER_TOKEN = 4.0
"""The prompt-size estimate: about four characters a token, for English text."""

TRUNCATION_RATIO = 0.5
"""A prompt is taken as truncated when the server read fewer tokens than this
share of the estimate..."""

MIN_ESTIMATE = 256
"""...and the estimate is at least this many tokens (short prompts are noisy)."""


def estimate_prompt_tokens(
    messages: Sequence[Mapping[str, Any]] | None, *texts: Any
) -> int:
    """A rough token count of what a request sends (see ``CHARS_PER_TOKEN``)."""
    chars = 0
    for message in messages or ():
        for key in ("content", "thinking"):
            value = message.get(key)
            if isinstance(value, str):
                chars += len(value)
        calls = message.get("tool_calls")
        if calls:
            chars += len(json.dumps(calls, default=str))
    for text in texts:
        if isinstance(text, str):
            chars += len(text)
    return int(chars / CHARS_PER_TOKEN)


def looks_truncated(estimate: int, prompt_eval_count: int | None) -> bool:
    """Whether the server evidently read far less of the prompt than was sent."""
    return (
        prompt_eval_count is not None
        and estimate >= MIN_ESTIMATE
        and prompt_eval_count < estimate * TRUNCATION_RATIO
    )


def finish(
    state: ChatState, result: ChatResult, fmt: FormatSpec | None, estimate: int | None
) -> ChatResult:
    """Finish a complete answer: flag a silently truncated prompt, parse ``format``.

    Raises:
        OutputValidationError: the answer does not match ``format``.
    """
    if result.cancelled or not result.done:
        return result
    fields: dict[str, Any] = {}
    if estimate is not None and looks_truncated(estimate, result.prompt_eval_count):
        log.warning(
            "the server read %s prompt tokens of about %d sent: the prompt was "
            "probably truncated to the model's context (raise options num_ctx)",
            result.prompt_eval_count,
            estimate,
        )
        fields["prompt_truncated"] = True
    if fmt is not None:
        fields["parsed"] = fmt.parse(result)
    if not fields:
        return result
    state.set_fields(**fields)
    return state.snapshot()
