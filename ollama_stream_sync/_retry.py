"""Which failures are retried and how long to wait, composed from tenacity's pieces.

A caller hands in a ``RetryPolicy`` or a ``tenacity.Retrying`` of their own;
``for_stream`` adds what only the worker knows (output already shown, a sleep a
cancel cuts short, failover, its own hooks chained before the caller's).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import tenacity

from ._errors import (
    AuthenticationRequired,
    CallbackError,
    CapabilityError,
    ConnectionFailed,
    ContextLengthExceeded,
    DispatchError,
    ModelNotFound,
    OutputValidationError,
    ProtocolError,
    RateLimited,
    ServerError,
    StreamError,
    StreamTimeout,
    ToolRoundsExceeded,
)
from ._validate import positive_int, seconds

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
"""Statuses that mean "try again": timeouts, rate limits, busy or broken upstreams."""

NEVER_RETRIED_STATUSES = frozenset({400, 401, 403, 404})
"""Statuses no policy retries: the request itself is wrong, or not allowed."""


_NEVER = (
    *(CallbackError, DispatchError, ProtocolError, OutputValidationError),
    *(ToolRoundsExceeded, ModelNotFound, ContextLengthExceeded),
    *(AuthenticationRequired, CapabilityError),  # whatever their status
)


def never_retried(exc: BaseException) -> bool:
    """Failures no policy may retry: retrying cannot succeed, or would act twice (a
    rejected request, a missing model, output that is not Ollama's, a failed
    callback or dispatcher, a usage limit with no time to wait, the deadline)."""
    if isinstance(exc, _NEVER):
        return True
    if isinstance(exc, RateLimited):
        return exc.retry_after is None
    if isinstance(exc, ServerError):
        return exc.status_code in NEVER_RETRIED_STATUSES or (
            exc.status_code is None and type(exc) is not ServerError
        )
    if isinstance(exc, StreamTimeout):
        return exc.which == "deadline"
    return not isinstance(exc, (ConnectionFailed, StreamError))


def is_retryable(exc: BaseException, statuses: Iterable[int] = RETRY_STATUSES) -> bool:
    """Whether a failure may succeed on another attempt (ignoring output shown):
    connection failures, timeouts but the deadline, ``statuses``, in-band errors."""
    if never_retried(exc):
        return False
    if isinstance(exc, ServerError):
        return exc.status_code is None or exc.status_code in frozenset(statuses)
    if isinstance(exc, StreamTimeout):
        return exc.which in ("connect", "write", "first_token", "read")
    return isinstance(exc, ConnectionFailed)


FAILOVER_STATUSES = frozenset({502, 503, 504})
"""A gateway that cannot reach Ollama, a full queue, a gateway that gave up."""


def fails_over(exc: BaseException) -> bool:
    """Failures before output that another host may not have, so an attempt
    there may start at once: no connection, a connect or write timeout, a 502,
    503 or 504, a model this host lacks, a 429 that says when to come back."""
    if isinstance(exc, ModelNotFound):
        return True
    if isinstance(exc, ServerError):
        return exc.status_code in FAILOVER_STATUSES or (
            exc.status_code == 429 and exc.retry_after is not None
        )
    if isinstance(exc, StreamTimeout):
        return exc.which in ("connect", "write") or exc.status_code == 504
    return isinstance(exc, ConnectionFailed)


class wait_retry_after(tenacity.wait.wait_base):  # tenacity's naming
    """Honour a server's ``Retry-After`` (capped); otherwise use ``fallback``."""

    def __init__(self, fallback: tenacity.wait.wait_base, cap: float) -> None:
        self.fallback = fallback
        self.cap = cap

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        after = getattr(failure(retry_state), "retry_after", None)
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
        retry_statuses: the HTTP statuses worth another attempt (any iterable;
            400, 401, 403 and 404 are never retried).
        max_retry_after: the cap on a server's ``Retry-After``, in seconds.
    """

    max_attempts: int = 3
    initial_delay: float = 0.5
    max_delay: float = 8.0
    jitter: bool = True
    retry_after_output: bool = False
    retry_statuses: frozenset[int] = field(default=RETRY_STATUSES)
    max_retry_after: float = 30.0

    def __init__(  # noqa: PLR0917  # the dataclass fields, in order, as before
        self,
        max_attempts: int = 3,
        initial_delay: float = 0.5,
        max_delay: float = 8.0,
        jitter: bool = True,
        retry_after_output: bool = False,
        retry_statuses: Iterable[int] = RETRY_STATUSES,
        max_retry_after: float = 30.0,
    ) -> None:
        positive_int("max_attempts", max_attempts)
        for name, value in (
            ("initial_delay", initial_delay),
            ("max_delay", max_delay),
            ("max_retry_after", max_retry_after),
        ):
            seconds(name, value, allow_none=False, zero=True)
        if isinstance(retry_statuses, (str, bytes)) or not isinstance(
            retry_statuses, Iterable
        ):
            raise TypeError("retry_statuses must be a set of HTTP status codes")
        statuses = frozenset(retry_statuses)
        if not all(isinstance(s, int) and not isinstance(s, bool) for s in statuses):
            raise TypeError("retry_statuses must contain int HTTP status codes")
        setter = object.__setattr__
        setter(self, "max_attempts", max_attempts)
        setter(self, "initial_delay", float(initial_delay))
        setter(self, "max_delay", float(max_delay))
        setter(self, "jitter", bool(jitter))
        setter(self, "retry_after_output", bool(retry_after_output))
        setter(self, "retry_statuses", statuses)
        setter(self, "max_retry_after", float(max_retry_after))

    def to_tenacity(self) -> tenacity.Retrying:
        """This policy as a ``tenacity.Retrying`` built from tenacity's pieces."""
        backoff: tenacity.wait.wait_base = tenacity.wait_exponential(
            multiplier=self.initial_delay, max=self.max_delay
        )
        if self.jitter and self.initial_delay > 0:
            backoff = backoff + tenacity.wait_random(0, self.initial_delay)
        statuses = self.retry_statuses
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
    failover: Callable[[StreamError], bool] | None = None,
) -> tenacity.Retrying | None:
    """The ``Retrying`` one stream uses, or None when it does not retry.

    Whatever the caller's policy: after output only if it says so, never a
    ``never_retried`` failure nor a stopped stream, the last real error re-raised
    (never ``tenacity.RetryError``). With several hosts, ``failover(error)`` says
    whether an untried host may take a failure before output: the next attempt
    goes there at once, policy or not.
    """
    if retry is None and failover is None:
        return None
    if isinstance(retry, RetryPolicy):
        base, after_output = retry.to_tenacity(), retry.retry_after_output
    else:  # its type was checked on the caller's thread; None: only failovers
        base = retry or tenacity.Retrying(stop=tenacity.stop_after_attempt(1))
        after_output = False

    def moves(exc: BaseException | None) -> bool:
        return (
            failover is not None
            and isinstance(exc, StreamError)
            and fails_over(exc)
            and not stopped()
            and not output_shown()
            and failover(exc)
        )

    safe = tenacity.retry_if_exception(
        lambda e: (
            isinstance(e, StreamError)
            and not never_retried(e)
            and not stopped()
            and (after_output or not output_shown())
        )
    )
    base_stop, base_wait, theirs = base.stop, base.wait, base.before_sleep
    their_give_up = base.retry_error_callback

    def stop(state: tenacity.RetryCallState) -> bool:
        return bool(base_stop(state)) and not moves(failure(state))

    def wait(state: tenacity.RetryCallState) -> float:
        return 0.0 if moves(failure(state)) else float(base_wait(state))

    def ours_then_theirs(state: tenacity.RetryCallState) -> None:
        before_sleep(state)
        if theirs is not None:
            theirs(state)

    def give_up(state: tenacity.RetryCallState) -> Any:
        # tenacity would return the value of their retry_error_callback, and the
        # stream end truncated with no error: theirs runs, the error stands.
        if their_give_up is not None:
            their_give_up(state)
        return state.outcome.result() if state.outcome is not None else None

    return base.copy(
        retry=(safe & base.retry) | tenacity.retry_if_exception(moves),
        stop=stop,
        wait=wait,
        sleep=sleep,
        before_sleep=ours_then_theirs,
        reraise=True,
        retry_error_callback=give_up if their_give_up is not None else None,
    )


def failure(state: tenacity.RetryCallState) -> BaseException | None:
    """The exception the attempt ``state`` describes ended with, if any."""
    return state.outcome.exception() if state.outcome is not None else None
