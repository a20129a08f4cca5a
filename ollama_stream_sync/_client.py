"""The user-facing client: builds requests, starts handles, owns the transport."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import enum
import functools
import itertools
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar

import httpx
import ollama
import requests

from ._dispatch import Dispatcher, InlineDispatcher
from ._errors import StreamError
from ._handle import StreamHandle, result_or_cancel
from ._hosts import DEFAULT_COOLDOWN, Host, HostHealth, HostPool
from ._ndjson import DEFAULT_MAX_LINE_BYTES
from ._request import ImageLike, MessageLike, ToolLike, chat_body, generate_body
from ._result import ChatResult
from ._retry import RetryArg, check_retry
from ._transports._base import Transport, is_loopback
from ._transports._httpx import CancellableTransport, HttpxStreamTransport
from ._transports._requests import RequestsStreamTransport
from ._watchdog import Watchdog
from ._worker import Callbacks, Job, StreamRequest, stream_job

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_CONNECT_TIMEOUT = 10.0
"""Seconds to establish a connection (the SDK's default is no limit at all)."""
DEFAULT_FIRST_TOKEN_TIMEOUT = 300.0
"""Seconds to wait for the first chunk: generous, it covers loading a large model."""
DEFAULT_READ_TIMEOUT = 120.0
"""Seconds of silence tolerated between chunks once a stream has started."""

_clients = itertools.count(1)


class _Default(enum.Enum):
    DEFAULT = "DEFAULT"


DEFAULT = _Default.DEFAULT
"""Per-call argument default: use the client's setting."""
Default = Literal[_Default.DEFAULT]


OVERRIDE_KEYS = (
    "retry",
    "connect_timeout",
    "first_token_timeout",
    "read_timeout",
    "deadline",
    "coalesce_interval",
)
"""The client settings a single call may override."""


def _overrides(args: Mapping[str, Any]) -> dict[str, Any]:
    """A call's overrides, taken from its arguments by name."""
    return {key: args[key] for key in OVERRIDE_KEYS}


def _callbacks(args: Mapping[str, Any]) -> Callbacks:
    """A call's callbacks, taken from its arguments by name."""
    return Callbacks(**{f.name: args[f.name] for f in dataclasses.fields(Callbacks)})


def _pick(value: T | Default, fallback: T) -> T:
    return fallback if value is DEFAULT else value


_TRANSPORT_KWARGS = ("verify", "cert", "http1", "http2", "limits", "socket_options")
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


def _blocking(
    start: Callable[Concatenate[StreamingClient, P], StreamHandle],
) -> Callable[Concatenate[StreamingClient, P], ChatResult]:
    """The blocking twin of a ``start_*`` method: same arguments, waits for the end."""

    def run(self: StreamingClient, /, *args: P.args, **kwargs: P.kwargs) -> ChatResult:
        return result_or_cancel(start(self, *args, **kwargs), self.close_timeout)

    functools.update_wrapper(run, start)  # keeps the signature for inspect and IDEs
    return run


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
        hosts: Sequence[str] | None = None,
        client: ollama.Client | None = None,
        session: requests.Session | None = None,
        retry: RetryArg = None,
        connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
        first_token_timeout: float | None = DEFAULT_FIRST_TOKEN_TIMEOUT,
        read_timeout: float | None = DEFAULT_READ_TIMEOUT,
        deadline: float | None = None,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        dispatcher: Dispatcher | None = None,
        coalesce_interval: float | None = None,
        host_cooldown: float = DEFAULT_COOLDOWN,
        close_timeout: float = 5.0,
        **client_kwargs: Any,
    ) -> None:
        """Create a client.

        Args:
            host: Ollama's URL; ``None`` reads ``OLLAMA_HOST`` or uses the SDK default.
            hosts: several Ollama URLs: streams are spread over them, and a retry
                moves to the next healthy one.
            client: an existing ``ollama.Client`` to stream through (not closed by us).
            session: a ``requests.Session`` to stream through instead of httpx
                (its proxies, CA bundle, auth and adapters apply; not closed by us).
            retry: a ``RetryPolicy``, a ``tenacity.Retrying``, or ``None`` (no retry).
            connect_timeout: seconds to connect; ``None`` waits forever.
            first_token_timeout: seconds to wait for the first chunk (model loading).
            read_timeout: the longest silence between chunks once streaming.
            deadline: seconds for the whole call, retries included.
            max_line_bytes: the longest NDJSON line accepted (else ``ProtocolError``).
            dispatcher: where callbacks run; the worker thread by default.
            coalesce_interval: merge consecutive deltas of one field arriving
                within this many seconds into one callback (``None``: off).
            host_cooldown: seconds a host that refused a connection is skipped.
            close_timeout: seconds ``close()`` waits for each cancelled worker.
            **client_kwargs: for ``ollama.Client`` (headers, transport, verify...).

        Raises:
            TypeError: ``client`` is not an ``ollama.Client``, or it was combined
                with ``host``/``hosts``/``client_kwargs``; or both ``host`` and
                ``hosts`` were given.
        """
        if client is not None and (host is not None or hosts or client_kwargs):
            raise TypeError("pass either client= or host/hosts/client options")
        if host is not None and hosts:
            raise TypeError("pass host= or hosts=, not both")
        check_retry(retry)
        self.retry = retry
        self.connect_timeout = connect_timeout
        self.first_token_timeout = first_token_timeout
        self.read_timeout = read_timeout
        self.deadline = deadline
        self.max_line_bytes = max_line_bytes
        self.dispatcher: Dispatcher = dispatcher or InlineDispatcher()
        self.coalesce_interval = coalesce_interval
        self.close_timeout = close_timeout
        self._owns_sdk = client is None
        if client is not None:
            sdks = [client]
        else:
            sdks = [
                self._make_sdk(h, dict(client_kwargs))
                for h in (hosts if hosts else [host])
            ]
        if session is not None and not isinstance(session, requests.Session):
            raise TypeError("session must be a requests.Session")
        self.session = session
        pool_hosts = []
        for sdk in sdks:
            http = getattr(sdk, "_client", None)
            if not isinstance(http, httpx.Client):
                raise TypeError(
                    "client must be a synchronous ollama.Client "
                    "(its httpx.Client is used)"
                )
            transport: Transport = (
                HttpxStreamTransport(http)
                if session is None
                else RequestsStreamTransport(session, str(http.base_url), http.headers)
            )
            pool_hosts.append(Host(str(http.base_url), transport))
        self._sdks = sdks
        self._sdk = sdks[0]
        self._pool = HostPool(pool_hosts, cooldown=host_cooldown)
        self._watchdog = Watchdog(f"ollama-stream-timers-{next(_clients)}")
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
            and is_loopback(url.host)
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
        """The wrapped ``ollama.Client``, for calls we do not stream (list, pull...).

        With several hosts, the first one's.
        """
        return self._sdk

    @property
    def hosts(self) -> list[str]:
        """The base URLs this client streams from."""
        return [h.url for h in self._pool.hosts]

    def health(self, timeout: float | None = None) -> list[HostHealth]:
        """Ask every host for ``/api/version``, in parallel.

        Args:
            timeout: seconds per host (default: the connect timeout, or 10).

        Returns:
            One ``HostHealth`` per host: reachable, version, latency, cool-down.
        """
        limit = timeout or self.connect_timeout or DEFAULT_CONNECT_TIMEOUT

        def probe(host: Host) -> HostHealth:
            cooling = self._pool.cooling_down(host)
            start = time.monotonic()
            try:
                data = host.transport.get_json("/api/version", timeout=limit)
            except StreamError as exc:
                return HostHealth(host.url, False, cooling_down=cooling, error=str(exc))
            latency = time.monotonic() - start
            version = str(data.get("version", "")) if isinstance(data, dict) else None
            return HostHealth(host.url, True, version, latency, cooling_down=cooling)

        hosts = self._pool.hosts
        with concurrent.futures.ThreadPoolExecutor(
            max_workers=len(hosts), thread_name_prefix="ollama-health"
        ) as pool:
            return list(pool.map(probe, hosts))

    # -- starting streams ------------------------------------------------

    def _request(
        self, path: str, body: dict[str, Any], overrides: dict[str, Any]
    ) -> StreamRequest:
        """A request with this client's settings, overridden per call."""
        check_retry(overrides["retry"] if overrides["retry"] is not DEFAULT else None)
        return StreamRequest(
            pool=self._pool,
            path=path,
            body=body,
            max_line_bytes=self.max_line_bytes,
            connect_timeout=_pick(overrides["connect_timeout"], self.connect_timeout),
            first_token_timeout=_pick(
                overrides["first_token_timeout"], self.first_token_timeout
            ),
            read_timeout=_pick(overrides["read_timeout"], self.read_timeout),
            deadline=_pick(overrides["deadline"], self.deadline),
            retry=_pick(overrides["retry"], self.retry),
            watchdog=self._watchdog,
            coalesce_interval=_pick(
                overrides["coalesce_interval"], self.coalesce_interval
            ),
        )

    def _start_job(
        self,
        job: Job,
        callbacks: Callbacks,
        dispatcher: Dispatcher | None,
        label: str,
    ) -> StreamHandle:
        """Run ``job`` on a new handle's worker thread, tracked until it ends."""
        handle = StreamHandle(
            job, callbacks, dispatcher or self.dispatcher, label=label
        )
        with self._lock:
            if self._closed:
                raise RuntimeError("this StreamingClient is closed")
            self._handles.add(handle)
        handle.add_done_callback(self._forget)
        return handle._start()  # the handle's owner starts it

    def _start(  # internal
        self,
        path: str,
        body: dict[str, Any],
        callbacks: Callbacks,
        dispatcher: Dispatcher | None,
        overrides: dict[str, Any],
    ) -> StreamHandle:
        request = self._request(path, body, overrides)
        label = f"model={body.get('model', '')!r}"
        job = stream_job(request, callbacks)
        return self._start_job(job, callbacks, dispatcher, label)

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
        on_retry: Callable[[int, StreamError, float], object] | None = None,
        on_reset: Callable[[int, StreamError], object] | None = None,
        dispatcher: Dispatcher | None = None,
        retry: RetryArg | Default = DEFAULT,
        connect_timeout: float | Default | None = DEFAULT,
        first_token_timeout: float | Default | None = DEFAULT,
        read_timeout: float | Default | None = DEFAULT,
        deadline: float | Default | None = DEFAULT,
        coalesce_interval: float | Default | None = DEFAULT,
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
            on_retry: ``(attempt, error, delay)`` before each retry's wait.
            on_reset: ``(attempt, error)`` when a retry discards output already
                delivered (only with ``retry_after_output``): clear what you showed.
            dispatcher: where the callbacks run (default: the client's).
            retry, connect_timeout, first_token_timeout, read_timeout, deadline,
                coalesce_interval: override the client's settings for this call.

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
        args = locals()
        return self._start(
            "/api/chat", body, _callbacks(args), dispatcher, _overrides(args)
        )

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
        on_retry: Callable[[int, StreamError, float], object] | None = None,
        on_reset: Callable[[int, StreamError], object] | None = None,
        dispatcher: Dispatcher | None = None,
        retry: RetryArg | Default = DEFAULT,
        connect_timeout: float | Default | None = DEFAULT,
        first_token_timeout: float | Default | None = DEFAULT,
        read_timeout: float | Default | None = DEFAULT,
        deadline: float | Default | None = DEFAULT,
        coalesce_interval: float | Default | None = DEFAULT,
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
        args = locals()
        return self._start(
            "/api/generate", body, _callbacks(args), dispatcher, _overrides(args)
        )

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
        self._watchdog.close(self.close_timeout)
        if self._owns_sdk:
            for sdk in self._sdks:
                sdk.close()  # type: ignore[no-untyped-call]  # the SDK is untyped here

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
        hosts = ", ".join(self.hosts)
        return f"<StreamingClient {hosts} active={len(self._handles)}>"
