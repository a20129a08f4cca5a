"""The one error tree of the library, and the one place lower-level errors map into it.

    StreamError                 every failure; ``.partial`` is the result so far
    ├── ConnectionFailed        could not connect, or the connection broke
    ├── ServerError             the server answered with an error (``.status_code``)
    │   └── ModelNotFound       404: the model is not pulled
    ├── ProtocolError           not Ollama's NDJSON, or it ends without ``done``
    ├── StreamTimeout           a timeout expired (``.which`` names it)
    ├── CallbackError           a user callback raised (the original is ``__cause__``)
    └── ToolRoundsExceeded      a Conversation's model kept calling tools

``translate()`` turns ollama, httpx, requests and socket errors into this tree,
no caller ever sees the SDK's inconsistent mix.
"""

from __future__ import annotations

import sys
from typing import Literal

import httpx
import ollama

from ._result import ChatResult

TimeoutKind = Literal["connect", "first_token", "read", "write", "deadline"]


class StreamError(Exception):
    """Root of every error this library raises for a stream.

    Attributes:
        partial: the ``ChatResult`` accumulated before the failure; never lost.
    """

    def __init__(self, message: str, *, partial: ChatResult | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.partial: ChatResult = partial if partial is not None else ChatResult()

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), self.__dict__.copy()))


def _rebuild(cls: type[StreamError], state: dict[str, object]) -> StreamError:
    err = cls.__new__(cls)
    Exception.__init__(err, state.get("message", ""))
    err.__dict__.update(state)
    return err


class ConnectionFailed(StreamError):
    """The server could not be reached, or the connection broke mid-stream.

    Attributes:
        during_connect: True when no connection was made (refused, unreachable):
            nothing reached the server, and another host may be tried at once.
    """

    def __init__(
        self,
        message: str,
        *,
        during_connect: bool = False,
        partial: ChatResult | None = None,
    ) -> None:
        super().__init__(message, partial=partial)
        self.during_connect = during_connect


class ServerError(StreamError):
    """The server reported an error, by HTTP status or by an in-band error line.

    Attributes:
        status_code: the HTTP status, or ``None`` for an error line inside a 200 stream.
        server_message: the server's own text.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        partial: ChatResult | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, partial=partial)
        self.status_code = status_code
        self.server_message = message
        self.retry_after = retry_after

    def __str__(self) -> str:
        if self.status_code is None:
            return f"{self.server_message} (in-stream error)"
        return f"{self.server_message} (HTTP {self.status_code})"


class ModelNotFound(ServerError):
    """404: the model is not available on the server (``ollama pull`` it)."""


class ProtocolError(StreamError):
    """The response is not a well-formed Ollama stream (bad JSON, missing ``done``)."""


class StreamTimeout(StreamError):
    """A timeout expired; ``which`` names it (connect, first_token, read, deadline)."""

    def __init__(
        self,
        message: str,
        *,
        which: TimeoutKind,
        partial: ChatResult | None = None,
    ) -> None:
        super().__init__(message, partial=partial)
        self.which: TimeoutKind = which


class CallbackError(StreamError):
    """A user callback raised; the stream was stopped. The original is ``__cause__``."""


class ToolRoundsExceeded(StreamError):
    """A ``Conversation`` hit ``max_tool_rounds``; the history is kept and valid."""


def server_error(
    message: str,
    status_code: int | None,
    *,
    retry_after: float | None = None,
) -> ServerError:
    """Build the right ``ServerError`` subclass for a status and message."""
    cls = ModelNotFound if status_code == 404 else ServerError
    return cls(message, status_code=status_code, retry_after=retry_after)


def translate(exc: BaseException) -> StreamError:  # noqa: PLR0911  # one case each
    """Map any lower-level exception into the tree; the caller chains it as cause."""
    if isinstance(exc, StreamError):
        return exc
    if isinstance(exc, ollama.ResponseError):
        code = None if exc.status_code == -1 else exc.status_code
        return server_error(str(exc.error), code)
    if isinstance(exc, httpx.ConnectTimeout):
        return StreamTimeout(f"connect timed out: {exc}", which="connect")
    if isinstance(exc, httpx.ReadTimeout):
        return StreamTimeout(f"read timed out: {exc}", which="read")
    if isinstance(exc, httpx.WriteTimeout):
        return StreamTimeout(f"write timed out: {exc}", which="write")
    if isinstance(exc, httpx.PoolTimeout):
        return StreamTimeout(f"no free connection: {exc}", which="connect")
    if isinstance(exc, (httpx.ConnectError, ConnectionRefusedError)):
        return ConnectionFailed(f"could not connect: {exc}", during_connect=True)
    if isinstance(exc, (httpx.TransportError, ConnectionError)):
        return ConnectionFailed(f"connection failed: {exc or type(exc).__name__}")
    mapped = _translate_requests(exc)
    if mapped is not None:
        return mapped
    if isinstance(exc, TimeoutError):
        return StreamTimeout(f"timed out: {exc}", which="read")
    if isinstance(exc, OSError):
        return ConnectionFailed(f"connection failed: {exc}")
    return StreamError(f"{type(exc).__name__}: {exc}")


def _translate_requests(exc: BaseException) -> StreamError | None:  # noqa: PLR0911
    """requests' and urllib3's errors, if those libraries are in use at all."""
    requests = sys.modules.get("requests")
    urllib3 = sys.modules.get("urllib3")
    if requests is not None and isinstance(exc, requests.RequestException):
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            return StreamTimeout(f"connect timed out: {exc}", which="connect")
        if isinstance(exc, requests.exceptions.ReadTimeout):
            return StreamTimeout(f"read timed out: {exc}", which="read")
        inner = exc.args[0] if exc.args else None
        inner = getattr(inner, "reason", inner)  # MaxRetryError wraps the cause
        if isinstance(inner, BaseException) and inner is not exc:
            mapped = _translate_requests(inner)
            if mapped is not None:
                return mapped
        return ConnectionFailed(f"connection failed: {exc}")
    if urllib3 is not None and isinstance(exc, urllib3.exceptions.HTTPError):
        errors = urllib3.exceptions
        # NewConnectionError subclasses ConnectTimeoutError: test it first.
        if isinstance(exc, errors.NewConnectionError):
            return ConnectionFailed(f"could not connect: {exc}", during_connect=True)
        if isinstance(exc, errors.ConnectTimeoutError):
            return StreamTimeout(f"connect timed out: {exc}", which="connect")
        if isinstance(exc, errors.ReadTimeoutError):
            return StreamTimeout(f"read timed out: {exc}", which="read")
        if isinstance(exc, errors.MaxRetryError) and exc.reason is not None:
            return _translate_requests(exc.reason) or translate(exc.reason)
        return ConnectionFailed(f"connection failed: {exc}")
    return None
