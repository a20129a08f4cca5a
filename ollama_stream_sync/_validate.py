"""Argument checks in the caller's thread: a mistake is a ``TypeError`` or
``ValueError`` naming the argument, never a ``StreamError`` on a worker."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping


def seconds(
    name: str, value: object, *, allow_none: bool = True, zero: bool = False
) -> None:
    """A duration: a positive real number (``None`` for "no limit" where allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name} must be a number of seconds{' or None' if allow_none else ''}, "
            f"not {type(value).__name__} {value!r:.40}"
        )
    if value < 0 or (value == 0 and not zero) or math.isnan(value):
        raise ValueError(
            f"{name} must be {'0 or more' if zero else 'more than 0'} seconds, "
            f"got {value!r}"
        )


def positive_int(name: str, value: object) -> None:
    """A count: an int of at least 1."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")


def check_headers(headers: object) -> None:
    """HTTP headers: a mapping of strings to strings."""
    if not isinstance(headers, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise TypeError("headers must be a dict of str to str")
