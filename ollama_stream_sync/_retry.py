"""Retry policy: which failures are retried, how long to wait, built from tenacity.

``RetryPolicy`` composes tenacity's own pieces (``stop_after_attempt``,
``wait_exponential`` plus ``wait_random``, ``retry_if_exception``) into a
``tenacity.Retrying``;
callers may hand in a ``Retrying`` of their own instead. The worker adds what
only it knows (whether output was already shown, an event-aware sleep so a
cancel cuts a backoff short) in ``for_stream``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import tenacity

from ._errors import (
    CallbackError,
    ConnectionFailed,
    ModelNotFound,
    ServerError,
    StreamError,
    StreamTimeout,
)

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
"""Statuses that mean "try again": timeouts, rate limits, busy or broken upstreams."""


def is_retryable(exc: BaseException, statuses: frozenset[int] = RETRY_STATUSES) -> bool:
    """Whether a failure may succeed on another attempt (ignoring output shown).

    Connection failures, connect/first-token/read timeouts, the listed statuses
    and in-band error lines are; 400, 401, 403, 404, protocol errors, callback
    errors and the deadline are not.
    """
    if isinstance(exc, (CallbackError, ModelNotFound)):
        return False
    if isinstance(exc, ServerError):
        return exc.status_code is None or exc.status_code in statuses
    if isinstance(exc, StreamTimeout):
        return exc.which in ("connect", "first_token", "read")
    return isinstance(exc, ConnectionFailed)


class wait_retry_after(tenacity.wait.wait_base):  # tenacity's naming
    """Honour a server's ``Retry-After`` (capped); otherwise use ``fallback``."""

    def __init__(self, fallback: tenacity.wait.wait_base, cap: float) -> None:
        self.fallback = fallback
        self.cap = cap

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        after = getattr(exc, "retry_after", None)
        if isinstance(after, (int, float)) and after >= 0:
            return float(min(after, self.cap))
        return float(self.fallback(retry_state))


@dataclass(frozen=True)
class RetryPolicy:
    """When and how often a failed stream is tried again.

    Example::

        client = StreamingClient(retry=RetryPolicy(max_attempts=5))
        client.chat("qwen3", messages, retry=RetryPolicy(retry_after_output=True))

    Args:
        max_attempts: attempts in all, the first included.
        initial_delay: the first backoff, in seconds; it doubles per attempt.
        max_delay: the longest backoff.
        jitter: add up to ``initial_delay`` of random jitter to each wait
            (so a wait may exceed ``max_delay`` by that much).
        retry_after_output: also retry after text reached a callback; then
            ``on_reset`` fires first and the result holds the new stream only.
        retry_statuses: the HTTP statuses worth another attempt.
        max_retry_after: the cap on a server's ``Retry-After``, in seconds.
    """

    max_attempts: int = 3
    initial_delay: float = 0.5
    max_delay: float = 8.0
    jitter: bool = True
    retry_after_output: bool = False
    retry_statuses: frozenset[int] = RETRY_STATUSES
    max_retry_after: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_delay < 0 or self.max_delay < 0 or self.max_retry_after < 0:
            raise ValueError("delays must not be negative")

    def to_tenacity(self) -> tenacity.Retrying:
        """This policy as a ``tenacity.Retrying`` built from tenacity's pieces."""
        backoff: tenacity.wait.wait_base = tenacity.wait_exponential(
            multiplier=self.initial_delay, max=self.max_delay
        )
        if self.jitter and self.initial_delay > 0:
            backoff = backoff + tenacity.wait_random(0, self.initial_delay)
        statuses = frozenset(self.retry_statuses)
        return tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.max_attempts),
            wait=wait_retry_after(backoff, self.max_retry_after),
            retry=tenacity.retry_if_exception(lambda e: is_retryable(e, statuses)),
            reraise=True,
        )


RetryArg = RetryPolicy | tenacity.Retrying | None


def check_retry(retry: object) -> None:
    """Raise ``TypeError`` on the caller's thread for a retry of the wrong kind."""
    if retry is not None and not isinstance(retry, (RetryPolicy, tenacity.Retrying)):
        raise TypeError(
            "retry must be a RetryPolicy, a tenacity.Retrying or None, "
            f"not {type(retry).__name__}"
        )


def for_stream(
    retry: RetryArg,
    *,
    output_shown: Callable[[], bool],
    stopped: Callable[[], bool],
    sleep: Callable[[float], Any],
    before_sleep: Callable[[tenacity.RetryCallState], None],
) -> tuple[tenacity.Retrying | None, bool]:
    """The ``Retrying`` one stream uses, and whether it retries after output.

    Whatever the caller's policy, a failure after output is retried only when
    the policy says so, nothing is retried once the stream was stopped (cancel,
    deadline, a callback error), the sleep wakes on cancel, and the last real
    error is re-raised (never ``tenacity.RetryError``).
    """
    if retry is None:
        return None, False
    if isinstance(retry, RetryPolicy):
        base, after_output = retry.to_tenacity(), retry.retry_after_output
    elif isinstance(retry, tenacity.Retrying):
        base, after_output = retry, False
    else:
        raise TypeError("retry must be a RetryPolicy, a tenacity.Retrying or None")
    safe = tenacity.retry_if_exception(
        lambda e: (
            isinstance(e, StreamError)
            and not isinstance(e, CallbackError)
            and not stopped()
            and (after_output or not output_shown())
        )
    )
    return (
        base.copy(
            retry=safe & base.retry,
            sleep=sleep,
            before_sleep=before_sleep,
            reraise=True,
        ),
        after_output,
    )
