"""The user-facing client: builds requests, starts handles, owns the transport."""

from __future__ import annotations

import concurrent.futures
import functools
import ipaddress
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Concatenate, ParamSpec

import httpx
import ollama

from ._dispatch import Dispatcher, InlineDispatcher
from ._errors import StreamError
from ._handle import StreamHandle
from ._ndjson import DEFAULT_MAX_LINE_BYTES
from ._request import ImageLike, MessageLike, ToolLike, chat_body, generate_body
from ._result import ChatResult
from ._transports._base import Transport
from ._transports._httpx import CancellableTransport, HttpxStreamTransport
from ._worker import Callbacks, StreamRequest

P = ParamSpec("P")

DEFAULT_CONNECT_TIMEOUT = 10.0
"""Seconds to establish a connection (the SDK's default is no limit at all)."""

_TRANSPORT_KWARGS = ("verify", "cert", "http1", "http2", "limits", "socket_options")
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


def _blocking(
    start: Callable[Concatenate[StreamingClient, P], StreamHandle],
) -> Callable[Concatenate[StreamingClient, P], ChatResult]:
    """The blocking twin of a ``start_*`` method: same arguments, waits for the end."""

    def run(self: StreamingClient, /, *args: P.args, **kwargs: P.kwargs) -> ChatResult:
        handle = start(self, *args, **kwargs)
        try:
            return handle.result()
        except StreamError:
            raise
        except BaseException:
            # Ctrl-C (or any interruption of the wait): stop the stream, then re-raise.
            handle.cancel()
            handle.join(self.close_timeout)
            raise

    functools.update_wrapper(run, start)  # keeps the signature for inspect and IDEs
    return run


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class StreamingClient:
    """A blocking Ollama client that streams on worker threads with callbacks.

    Wraps an ``ollama.Client``; keyword arguments go to it (and so to httpx).
    One client may be shared between threads. Close it (or use ``with``) to
    cancel running streams and release connections.

    Example::

        with StreamingClient() as client:
            result = client.chat("qwen3", messages, on_content=print)
            messages.append(result.to_message())
    """

    def __init__(
        self,
        host: str | None = None,
        *,
        client: ollama.Client | None = None,
        retry: object | None = None,
        connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        dispatcher: Dispatcher | None = None,
        close_timeout: float = 5.0,
        **client_kwargs: Any,
    ) -> None:
        """Create a client.

        Args:
            host: Ollama's URL; ``None`` reads ``OLLAMA_HOST`` or uses the SDK default.
            client: an existing ``ollama.Client`` to stream through (not closed by us).
            retry: the retry policy; ``None`` means no retry.
            connect_timeout: seconds to connect; ``None`` waits forever.
            max_line_bytes: the longest NDJSON line accepted (else ``ProtocolError``).
            dispatcher: where callbacks run; the worker thread by default.
            close_timeout: seconds ``close()`` waits for each cancelled worker.
            **client_kwargs: for ``ollama.Client`` (headers, transport, verify...).

        Raises:
            TypeError: ``client`` is not an ``ollama.Client``, or both it and
                ``host``/``client_kwargs`` were given.
        """
        if client is not None and (host is not None or client_kwargs):
            raise TypeError("pass either client= or host/client options, not both")
        self.retry = retry
        self.connect_timeout = connect_timeout
        self.max_line_bytes = max_line_bytes
        self.dispatcher: Dispatcher = dispatcher or InlineDispatcher()
        self.close_timeout = close_timeout
        self._owns_sdk = client is None
        self._sdk = (
            client if client is not None else self._make_sdk(host, client_kwargs)
        )
        http = getattr(self._sdk, "_client", None)
        if not isinstance(http, httpx.Client):
            raise TypeError(
                "client must be a synchronous ollama.Client (its httpx.Client is used)"
            )
        self._transport: Transport = HttpxStreamTransport(http)
        # Guards _handles and _closed: streams start and end on many threads.
        self._lock = threading.Lock()
        self._handles: set[StreamHandle] = set()
        self._closed = False

    def _make_sdk(self, host: str | None, kwargs: dict[str, Any]) -> ollama.Client:
        kwargs.setdefault("timeout", httpx.Timeout(None, connect=self.connect_timeout))
        if "transport" in kwargs:
            return ollama.Client(host, **kwargs)
        transport_kwargs = {k: kwargs.pop(k) for k in _TRANSPORT_KWARGS if k in kwargs}
        trust_env = kwargs.get("trust_env", True)
        transport = CancellableTransport(trust_env=trust_env, **transport_kwargs)
        sdk = ollama.Client(host, transport=transport, **kwargs)
        url = sdk._client.base_url  # the SDK's parsed host
        if (
            trust_env
            and _is_loopback(url.host)
            and any(os.environ.get(v) or os.environ.get(v.lower()) for v in _PROXY_VARS)
        ):
            # httpx would send loopback traffic to the proxy (a known SDK trap);
            # a mount for this exact host outranks the proxy mounts.
            sdk._client.close()
            mounts = dict(kwargs.pop("mounts", None) or {})
            mounts.setdefault(f"all://{url.netloc.decode('ascii')}", transport)
            sdk = ollama.Client(host, transport=transport, mounts=mounts, **kwargs)
        return sdk

    @property
    def sdk(self) -> ollama.Client:
        """The wrapped ``ollama.Client``, for calls we do not stream (list, pull...)."""
        return self._sdk

    # -- starting streams ------------------------------------------------

    def _start(
        self,
        path: str,
        body: dict[str, Any],
        callbacks: Callbacks,
        dispatcher: Dispatcher | None,
    ) -> StreamHandle:
        request = StreamRequest(
            transport=self._transport,
            path=path,
            body=body,
            connect_timeout=self.connect_timeout,
            max_line_bytes=self.max_line_bytes,
        )
        handle = StreamHandle(request, callbacks, dispatcher or self.dispatcher)
        with self._lock:
            if self._closed:
                raise RuntimeError("this StreamingClient is closed")
            self._handles.add(handle)
        handle.add_done_callback(self._forget)
        return handle._start()  # the handle's owner starts it

    def _forget(self, handle: concurrent.futures.Future[ChatResult]) -> None:
        with self._lock:
            self._handles.discard(handle)

    def start_chat(
        self,
        model: str,
        messages: Sequence[MessageLike] | None = None,
        *,
        tools: Sequence[ToolLike] | None = None,
        think: bool | str | None = None,
        format: str | Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | ollama.Options | None = None,
        keep_alive: float | str | None = None,
        logprobs: bool | None = None,
        top_logprobs: int | None = None,
        on_thinking: Callable[[str], object] | None = None,
        on_content: Callable[[str], object] | None = None,
        on_tool_call: Callable[[dict[str, Any]], object] | None = None,
        on_done: Callable[[ChatResult], object] | None = None,
        on_error: Callable[[StreamError], object] | None = None,
        dispatcher: Dispatcher | None = None,
    ) -> StreamHandle:
        """Start streaming a chat on a worker thread and return its handle at once.

        Args:
            model: the model name, e.g. ``"qwen3"``.
            messages: the history, dicts or ``ollama.Message``.
            tools: tool schemas (dicts), ``ollama.Tool`` or Python functions.
            think: ``True``/``False`` or a level ``"low"``/``"medium"``/``"high"``.
            format: ``"json"`` or a JSON schema.
            options: model options (``temperature``, ``num_ctx``...).
            keep_alive: how long the model stays loaded.
            logprobs: return log probabilities (collected in ``result.logprobs``).
            top_logprobs: alternatives per position (0-20).
            on_thinking: called with each thinking delta.
            on_content: called with each answer delta.
            on_tool_call: called once per complete tool call (a dict).
            on_done: called once with the final ``ChatResult`` (also on cancel).
            on_error: called once with the ``StreamError`` on failure.
            dispatcher: where the callbacks run (default: the client's).

        Returns:
            The ``StreamHandle``.

        Raises:
            TypeError, ValueError: the arguments cannot form a request.
            RuntimeError: the client is closed.
        """
        body = chat_body(
            model,
            messages,
            tools=tools,
            think=think,
            format=format,
            options=options,
            keep_alive=keep_alive,
            logprobs=logprobs,
            top_logprobs=top_logprobs,
        )
        callbacks = Callbacks(on_thinking, on_content, on_tool_call, on_done, on_error)
        return self._start("/api/chat", body, callbacks, dispatcher)

    def start_generate(
        self,
        model: str,
        prompt: str | None = None,
        suffix: str | None = None,
        *,
        system: str | None = None,
        template: str | None = None,
        context: Sequence[int] | None = None,
        think: bool | str | None = None,
        raw: bool | None = None,
        format: str | Mapping[str, Any] | None = None,
        images: Sequence[ImageLike] | None = None,
        options: Mapping[str, Any] | ollama.Options | None = None,
        keep_alive: float | str | None = None,
        logprobs: bool | None = None,
        top_logprobs: int | None = None,
        width: int | None = None,
        height: int | None = None,
        steps: int | None = None,
        on_thinking: Callable[[str], object] | None = None,
        on_content: Callable[[str], object] | None = None,
        on_tool_call: Callable[[dict[str, Any]], object] | None = None,
        on_done: Callable[[ChatResult], object] | None = None,
        on_error: Callable[[StreamError], object] | None = None,
        dispatcher: Dispatcher | None = None,
    ) -> StreamHandle:
        """Start streaming ``/api/generate``; its ``response`` text feeds ``content``.

        Arguments are those of ``ollama.Client.generate`` plus the callbacks of
        ``start_chat``. Returns the ``StreamHandle``.
        """
        body = generate_body(
            model,
            prompt,
            suffix,
            system=system,
            template=template,
            context=context,
            think=think,
            raw=raw,
            format=format,
            images=images,
            options=options,
            keep_alive=keep_alive,
            logprobs=logprobs,
            top_logprobs=top_logprobs,
            width=width,
            height=height,
            steps=steps,
        )
        callbacks = Callbacks(on_thinking, on_content, on_tool_call, on_done, on_error)
        return self._start("/api/generate", body, callbacks, dispatcher)

    chat = _blocking(start_chat)
    chat.__doc__ = """Stream a chat and block until it ends; arguments as start_chat.

    Callbacks fire on the worker thread as chunks arrive. Ctrl-C cancels the
    stream and raises ``KeyboardInterrupt``.

    Returns:
        The final ``ChatResult`` (``cancelled`` is true if another thread cancelled).

    Raises:
        StreamError: the failure, with ``.partial``.
    """
    generate = _blocking(start_generate)
    generate.__doc__ = """Stream ``/api/generate`` and block until it ends.

    The arguments of ``start_generate``; returns the final ``ChatResult``.
    """

    # -- lifecycle -------------------------------------------------------

    def active_streams(self) -> list[StreamHandle]:
        """The handles of the streams still running."""
        with self._lock:
            return list(self._handles)

    def close(self) -> None:
        """Cancel running streams, wait for their workers, release connections."""
        with self._lock:
            self._closed = True
            handles = list(self._handles)
        for handle in handles:
            handle.cancel()
        for handle in handles:
            handle.join(self.close_timeout)
        if self._owns_sdk:
            self._sdk.close()  # type: ignore[no-untyped-call]  # the SDK is untyped here

    def __enter__(self) -> StreamingClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        url = self._sdk._client.base_url
        return f"<StreamingClient {url} active={len(self._handles)}>"
