"""Structured output: the ``format`` sent, partial values as the answer streams
(pydantic-core's ``from_json(allow_partial=...)``, not a parser of our own), and
the validated value at the end.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pydantic
import pydantic_core

from ._errors import OutputValidationError
from ._result import ChatResult
from ._state import ChatState

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
        """The validated value of a complete answer, or ``OutputValidationError``
        (the result, with its raw ``content``, as ``.partial``)."""
        try:
            if self.model is not None:
                return self.model.model_validate_json(result.content)
            return json.loads(result.content)
        except ValueError as exc:  # pydantic's ValidationError is one
            kind = self.model.__name__ if self.model is not None else "JSON"
            raise OutputValidationError(
                f"the answer is not valid {kind}: {exc}".splitlines()[0],
                partial=result,
                model=result.model or None,
            ) from exc


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


def finish(
    state: ChatState, result: ChatResult, fmt: FormatSpec | None, truncated: bool
) -> ChatResult:
    """Finish a complete answer: flag a truncated prompt, parse ``format``."""
    if result.cancelled or not result.done:
        return result
    fields: dict[str, Any] = {"prompt_truncated": True} if truncated else {}
    if fmt is not None:
        fields["parsed"] = fmt.parse(result)
    if not fields:
        return result
    state.set_fields(**fields)
    return state.snapshot()
