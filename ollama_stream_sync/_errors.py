"""The one error tree (drawn in docs/reference/errors.md) and the one reading of a
server's error answer into it (``error_from_body``); the transports map lower
libraries' errors into it where they meet the network (``_transports._base``).
Every error carries ``.url`` and, where one applies, ``.model``, and says what to do.
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import Mapping
from typing import Any, Literal

from ._result import ChatResult, Headers

TimeoutKind = Literal["connect", "first_token", "read", "write", "deadline"]


class StreamError(Exception):
    """Root of every error this library raises for a stream.

    Attributes:
        partial: what was accumulated before the failure, never lost: the
            ``ChatResult`` of a chat or generate stream, the last ``Progress``
            of a pull, push or create.
        url: the URL of the server the failure concerns, when known.
        model: the model the request named, when one applies.
        message: the detail, without the URL and advice ``str()`` adds.
    """

    def __init__(
        self,
        message: str,
        *,
        partial: Any = None,
        url: str | None = None,
        model: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.partial: Any = partial if partial is not None else ChatResult()
        self.url = url
        self.model = model

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), self.__dict__.copy()))


def _rebuild(cls: type[StreamError], state: dict[str, object]) -> StreamError:
    err = cls.__new__(cls)
    Exception.__init__(err, state.get("message", ""))
    err.__dict__.update(state)
    return err


_NO_SERVER_HINT = (
    ". Is Ollama running? Start it with 'ollama serve', or set OLLAMA_HOST "
    "(or host=) to where it runs."
)


class ConnectionFailed(StreamError, ConnectionError):
    """The server could not be reached, or the connection broke mid-stream.

    Also a builtin ``ConnectionError``, so existing network handlers catch it.

    Attributes:
        during_connect: True when no connection was made (refused, unreachable,
            a name that does not resolve, a TLS handshake that failed): nothing
            reached the server, and another host may be tried at once.
    """

    def __init__(
        self,
        message: str,
        *,
        during_connect: bool = False,
        partial: Any = None,
        url: str | None = None,
        model: str | None = None,
    ) -> None:
        super().__init__(message, partial=partial, url=url, model=model)
        self.during_connect = during_connect

    def __str__(self) -> str:
        where = f" to {self.url}" if self.url else ""
        if self.during_connect:
            hint = "" if "TLS" in self.message else _NO_SERVER_HINT
            return f"could not connect{where}: {self.message}{hint}"
        return f"the connection{where} broke ({self.message}); try again"


class ServerError(StreamError):
    """The server reported an error, by HTTP status or by an in-band error line.

    Attributes:
        status_code: the HTTP status, or ``None`` for an error line inside a
            200 stream (Ollama's way of failing mid-stream).
        server_message: the server's own text (for a non-JSON body, the body
            as text).
        retry_after: seconds from a ``Retry-After`` header, if one was sent.
        before_sending: the client found it before sending anything (from the
            model's ``/api/show``, or a prompt that cannot fit).
    """

    before_sending: bool = False

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        partial: Any = None,
        retry_after: float | None = None,
        url: str | None = None,
        model: str | None = None,
    ) -> None:
        super().__init__(message, partial=partial, url=url, model=model)
        self.status_code = status_code
        self.server_message = message
        self.retry_after = retry_after

    def __str__(self) -> str:
        where = f" from {self.url}" if self.url else ""
        if self.status_code is None and self.before_sending:
            return f"{self.server_message} (found before sending)"
        if self.status_code is None:
            return f"{self.server_message} (in-stream error{where})"
        text = f"{self.server_message} (HTTP {self.status_code}{where})"
        if type(self) is ServerError and self.status_code >= 500:
            return f"{text}; check the Ollama server's log"
        return text


class ModelNotFound(ServerError):
    """The model is not on the server: ``ollama pull`` it."""

    def __str__(self) -> str:
        name = self.model or _model_in(self.server_message) or "<model>"
        where = f" on {self.url}" if self.url else ""
        advice = (
            "check its name and tag, e.g. on https://ollama.com/library"
            if "manifest" in self.server_message  # the registry's, to a pull
            else f"pull it with 'ollama pull {name}'"
        )
        return f"model {name!r} not found{where} ({self.server_message}); {advice}"


class ContextLengthExceeded(ServerError):
    """The prompt is longer than the model's context (HTTP 400 from Ollama).

    Attributes:
        prompt_tokens: the prompt's length in tokens, when the message says.
        context_length: the model's context length, when the message says.
    """

    prompt_tokens: int | None = None
    context_length: int | None = None

    def __str__(self) -> str:
        return (
            f"{super().__str__()}: shorten the history (a Conversation's "
            "history_limit= does it), or raise the context (context='auto', "
            "or options={'num_ctx': ...})"
        )


class CapabilityError(ServerError):
    """The model lacks a capability the request needs (thinking, tools, vision...).

    Attributes:
        capability: what it lacks: "thinking", "tools", "vision", "completion"...
    """

    capability: str = ""

    def __str__(self) -> str:
        advice = {
            "thinking": "leave out think=, or choose a model that thinks",
            "tools": "leave out tools=, or choose a model that supports tools",
            "vision": "send no images, or choose a model with vision",
        }.get(self.capability, "choose a model that can")
        return f"{super().__str__()}: {advice}"


class AuthenticationRequired(ServerError):
    """401: the server (an Ollama cloud model) wants you to sign in.

    Attributes:
        signin_url: where to sign in, when the server sent one.
    """

    signin_url: str | None = None

    def __str__(self) -> str:
        where = f" at {self.signin_url}" if self.signin_url else " ('ollama signin')"
        return f"{super().__str__()}: sign in{where}"


class RateLimited(ServerError):
    """429 for a usage limit (hourly, weekly...); retried only given ``retry_after``."""


class ProtocolError(StreamError):
    """The response is not a well-formed Ollama stream (bad JSON, missing ``done``)."""


class StreamTimeout(StreamError, TimeoutError):
    """A timeout expired. Also a builtin ``TimeoutError``.

    Attributes:
        which: ``"connect"`` (connecting, resolving, the TLS handshake),
            ``"write"`` (sending the request), ``"first_token"`` (no output
            yet: the model loading or the prompt being read), ``"read"`` (the
            stream went silent) or ``"deadline"`` (the whole call).
        status_code: 504 when a gateway answered that it timed out waiting
            for Ollama (``which`` is then ``"first_token"``), else ``None``.
    """

    status_code: int | None = None

    def __init__(
        self,
        message: str,
        *,
        which: TimeoutKind,
        partial: Any = None,
        url: str | None = None,
        model: str | None = None,
    ) -> None:
        super().__init__(message, partial=partial, url=url, model=model)
        self.which: TimeoutKind = which

    def __str__(self) -> str:
        where = f" ({self.url})" if self.url else ""
        advice = {
            "first_token": "; the model may still be loading, or the server is busy",
            "read": "; the server is busy or stuck: try again, or check its log",
        }.get(self.which, "")
        return f"{self.message}{where}{advice}"


class CallbackError(StreamError):
    """A user callback raised; the stream was stopped. The original is ``__cause__``."""


class DispatchError(StreamError):
    """The dispatcher could not take a callback (it raised, or its toolkit is gone);
    the stream was stopped and its socket closed. The original is ``__cause__``."""


class OutputValidationError(StreamError):
    """The answer does not parse or validate against the requested ``format``:
    ``partial.content`` is the raw answer, the JSON or pydantic error ``__cause__``."""


class ToolRoundsExceeded(StreamError):
    """A ``Conversation`` hit ``max_tool_rounds``; the history is kept and valid."""


for _cls in list(globals().values()):  # tracebacks show the public path
    if isinstance(_cls, type) and issubclass(_cls, StreamError):
        _cls.__module__ = "ollama_stream_sync"

_MISSING_MODEL = re.compile(
    r"model ['\"]?(?P<name>[^'\"\s]*)['\"]? not found"
    r"|file does not exist",  # a pull's manifest, too
    re.IGNORECASE,
)
_CONTEXT = re.compile(
    r"longer than the context"
    r"|exceeds (?:the |the model's )?(?:maximum )?context length"
    r"|exceeds the available context size",
    re.IGNORECASE,
)
_CAPABILITY = re.compile(r"does not support (?P<what>[a-z]+)", re.IGNORECASE)
_USAGE_LIMIT = re.compile(
    r"usage limit|rate limit|hourly|weekly|daily|session limit|limit reached",
    re.IGNORECASE,
)


def _model_in(message: str) -> str | None:
    match = _MISSING_MODEL.search(message)
    return match.group("name") if match and match.group("name") else None


def _numbers(message: str) -> tuple[int | None, int | None]:
    found = [int(n) for n in re.findall(r"\d+", message)]
    if len(found) >= 2:
        return found[0], found[1]
    return None, (found[0] if found else None)


def error_for_status(
    message: str,
    status_code: int | None,
    *,
    retry_after: float | None = None,
    fields: dict[str, Any] | None = None,
    url: str | None = None,
    model: str | None = None,
) -> ServerError:
    """The right ``ServerError`` for a status, the server's text and its fields.

    ``ModelNotFound`` only when the text names a missing model: a 404 from a
    wrong URL path ("404 page not found") is a plain ``ServerError``.
    """
    kwargs: dict[str, Any] = {
        "status_code": status_code,
        "retry_after": retry_after,
        "url": url,
        "model": model,
    }
    if status_code in (None, 400, 404, 500) and _MISSING_MODEL.search(message):
        return ModelNotFound(message, **kwargs | {"model": model or _model_in(message)})
    if status_code in (None, 400, 500) and _CONTEXT.search(message):
        ctx = ContextLengthExceeded(message, **kwargs)
        ctx.prompt_tokens, ctx.context_length = _numbers(message)
        return ctx
    capability = _CAPABILITY.search(message)
    if status_code in (None, 400) and capability:
        cap = CapabilityError(message, **kwargs)
        cap.capability = capability.group("what").lower()
        return cap
    if status_code == 401:
        auth = AuthenticationRequired(message, **kwargs)
        signin = (fields or {}).get("signin_url")
        auth.signin_url = str(signin) if signin else None
        return auth
    if status_code == 429 and _USAGE_LIMIT.search(message):
        return RateLimited(message, **kwargs)
    return ServerError(message, **kwargs)


def server_message(error: Any) -> str:
    """The text of an ``error`` field: a string, or the nested object newer
    servers relay from llama-server (``{"error": {"message": ...}}``, possibly
    as a JSON string)."""
    if isinstance(error, str) and error.lstrip().startswith("{"):
        try:
            error = json.loads(error)
        except ValueError:
            return str(error)
    if isinstance(error, dict):
        inner = error.get("error", error)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        return str(server_message(inner)) if inner is not error else json.dumps(error)
    return str(error)


def error_from_body(
    status_code: int,
    body: bytes,
    reason: str = "",
    retry_after: str | None = None,
    *,
    url: str | None = None,
    model: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> StreamError:
    """Build the error for a non-2xx response from its (possibly non-JSON) body.

    A 504 is a gateway that gave up waiting for Ollama's first byte: a
    ``StreamTimeout``. The response's ``headers`` go into ``.partial``.
    """
    fields: dict[str, Any] = {}
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text) if text.count("{") + text.count("[") < 256 else None
    except ValueError:
        data = None
    if isinstance(data, dict) and data.get("error"):
        message, fields = server_message(data["error"]), data
    elif text:
        message = _folded(text)
    else:
        message = reason or f"HTTP {status_code}"
    error: StreamError
    if status_code == 504:
        error = StreamTimeout(
            f"the gateway timed out waiting for Ollama (HTTP 504: {message}); a "
            "model loading or a long prompt can outlast a proxy's read timeout "
            "(nginx: proxy_read_timeout)",
            which="first_token",
            url=url,
            model=model,
        )
        error.status_code = 504
    else:
        error = error_for_status(
            message,
            status_code,
            retry_after=parse_retry_after(retry_after),
            fields=fields,
            url=url,
            model=model,
        )
    if headers:
        error.partial = ChatResult(response_headers=Headers(headers.items()))
    return error


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def preview(data: bytes, limit: int = 200) -> str:
    """A short, printable view of raw bytes for an error message."""
    text = data[:limit].decode("utf-8", "replace")
    return repr(text) + (f" … ({len(data)} bytes)" if len(data) > limit else "")


def _folded(text: str, limit: int = 500) -> str:
    """A non-JSON error body as readable text: whitespace folded, bounded."""
    folded = " ".join(text.split())
    return folded if len(folded) <= limit else folded[:limit] + " …"
