"""The user-facing client: builds requests, starts handles, owns the transport."""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import ollama
import requests

from . import _validate
from ._dispatch import Dispatcher, InlineDispatcher, check_dispatcher
from ._errors import StreamError
from ._handle import BaseHandle, ProgressHandle, StreamHandle, wait_result
from ._hosts import DEFAULT_COOLDOWN, Host, HostHealth, HostPool
from ._models import LoadedModel, LoadedModels, ResidencyProbe
from ._ndjson import DEFAULT_MAX_LINE_BYTES
from ._options import (
    CALL_KEYS,
    CALLBACK_KEYS,
    MODEL_CALLBACK_KEYS,
    MODEL_KEYS,
    SETTINGS_KEYS,
    CallOptions,
    ModelOptions,
    Settings,
    Unpack,
    check_call,
)
from ._progress import ModelResult, ProgressTracker
from ._request import (
    ImageLike,
    MessageLike,
    ToolLike,
    chat_body,
    encode_body,
    encode_message,
    encode_options,
    generate_body,
)
from ._result import ChatResult
from ._retry import RetryArg, check_retry
from ._stream import ChatStream
from ._structured import FormatArg, FormatSpec, estimate_prompt_tokens
from ._transports._base import Transport, is_loopback
from ._transports._httpx import CancellableTransport, HttpxStreamTransport
from ._transports._requests import RequestsStreamTransport
from ._watchdog import Watchdog
from ._worker import (
    Callbacks,
    Job,
    StreamContext,
    StreamRequest,
    complete,
    run_stream,
)

H = TypeVar("H", bound=BaseHandle[Any, Any])

log = logging.getLogger("ollama_stream_sync")

DEFAULT_CONNECT_TIMEOUT = 10.0
"""Seconds to establish a connection (the SDK's default is no limit at all)."""
DEFAULT_FIRST_TOKEN_TIMEOUT = 300.0
"""Seconds to wait for the first output: generous, it covers loading a large model."""
DEFAULT_READ_TIMEOUT = 120.0
"""Seconds of silence tolerated between chunks once a stream has started."""

_clients_count = itertools.count(1)
_clients: weakref.WeakSet[StreamingClient] = weakref.WeakSet()

_TRANSPORT_KWARGS = ("verify", "cert", "http1", "http2", "limits", "socket_options")
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
_API_PATHS = ("/api", "/v1")


def _after_fork_in_child() -> None:
    for client in list(_clients):
        client._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def check_host_url(url: str) -> None:
    """Reject a host URL that names an API path instead of the server.

    ``http://h:11434/api`` would send ``POST /api/api/chat`` (and its 404 would
    look like a missing model). A path prefix of a reverse proxy is kept.

    Raises:
        ValueError: the URL ends in ``/api`` or ``/v1`` (or a path under them).
    """
    path = urlsplit(url if "://" in url else f"http://{url}").path.rstrip("/")
    for api in _API_PATHS:
        if path == api or path.endswith(api) or f"{api}/" in f"{path}/":
            base = url[: url.rfind(api)] if api in url else url
            raise ValueError(
                f"host {url!r} includes the API path {api!r}: give the server's "
                f"base URL, e.g. {base.rstrip('/')!r} (this client adds /api/chat)"
            )


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
        probe_loading: bool = False,
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
            first_token_timeout: seconds to wait for the first output (model loading).
            read_timeout: the longest silence between chunks once streaming.
            deadline: seconds for the whole call, retries included.
            max_line_bytes: the longest NDJSON line accepted (else ``ProtocolError``).
            dispatcher: where callbacks run; the worker thread by default.
            coalesce_interval: merge consecutive deltas of one field arriving
                within this many seconds into one callback (``None``: off).
            host_cooldown: seconds a host that refused a connection is skipped.
            close_timeout: seconds ``close()`` waits for each cancelled worker.
            probe_loading: ask ``/api/ps`` at the start of each stream, so a
                model that is not loaded yet reports the phase "loading".
            **client_kwargs: for ``ollama.Client`` (headers, transport, verify...).

        Raises:
            TypeError, ValueError: an argument is of the wrong type or out of
                range (the message names it); ``client`` combined with
                ``host``/``hosts``/``client_kwargs``; both ``host`` and ``hosts``.
        """
        if client is not None and (host is not None or hosts or client_kwargs):
            raise TypeError("pass either client= or host/hosts/client options")
        if host is not None and hosts:
            raise TypeError("pass host= or hosts=, not both")
        if hosts is not None and (isinstance(hosts, str) or not hosts):
            raise TypeError("hosts must be a non-empty list of URLs")
        check_retry(retry)
        check_dispatcher(dispatcher)
        _validate.settings(
            {
                "connect_timeout": connect_timeout,
                "first_token_timeout": first_token_timeout,
                "read_timeout": read_timeout,
                "deadline": deadline,
                "coalesce_interval": coalesce_interval,
            }
        )
        _validate.positive_int("max_line_bytes", max_line_bytes)
        _validate.seconds("host_cooldown", host_cooldown, allow_none=False, zero=True)
        _validate.seconds("close_timeout", close_timeout, allow_none=False, zero=True)
        if not isinstance(probe_loading, bool):
            raise TypeError("probe_loading must be True or False")
        if session is not None and not isinstance(session, requests.Session):
            raise TypeError("session must be a requests.Session")
        for url in [host] if host is not None else list(hosts or ()):
            if not isinstance(url, str):
                raise TypeError(
                    f"a host must be a URL string, not {type(url).__name__}"
                )
            check_host_url(url)
        self.retry = retry
        self.connect_timeout = connect_timeout
        self.first_token_timeout = first_token_timeout
        self.read_timeout = read_timeout
        self.deadline = deadline
        self.max_line_bytes = max_line_bytes
        self.dispatcher: Dispatcher = dispatcher or InlineDispatcher()
        self.coalesce_interval = coalesce_interval
        self.close_timeout = close_timeout
        self.probe_loading = probe_loading
        self._owns_sdk = client is None
        if client is not None:
            sdks = [client]
        else:
            sdks = [
                self._make_sdk(h, dict(client_kwargs))
                for h in (hosts if hosts else [host])
            ]
        self.session = session
        pool_hosts = []
        for sdk in sdks:
            http = getattr(sdk, "_client", None)
            if not isinstance(http, httpx.Client):
                raise TypeError(
                    "client must be a synchronous ollama.Client "
                    "(its httpx.Client is used)"
                )
            check_host_url(str(http.base_url))
            transport: Transport = (
                HttpxStreamTransport(http)
                if session is None
                else RequestsStreamTransport(session, str(http.base_url), http.headers)
            )
            pool_hosts.append(Host(str(http.base_url).rstrip("/"), transport))
        self._sdks = sdks
        self._sdk = sdks[0]
        self._pool = HostPool(pool_hosts, cooldown=host_cooldown)
        self._watchdog = Watchdog(f"ollama-stream-timers-{next(_clients_count)}")
        self._loaded = LoadedModels()
        # Guards _handles and _closed: streams start and end on many threads,
        # and close() may race them.
        self._lock = threading.Lock()
        self._handles: set[BaseHandle[Any, Any]] = set()
        self._closed = False
        _clients.add(self)

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

    def _after_fork(self) -> None:
        """In a forked child: none of the parent's streams or threads are ours."""
        self._lock = threading.Lock()
        self._handles = set()
        self._watchdog.after_fork()
        self._loaded = LoadedModels()

    @property
    def sdk(self) -> ollama.Client:
        """The wrapped ``ollama.Client``, for calls we do not stream (list, show...).

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
        _validate.seconds("timeout", timeout)
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

    def loaded_models(
        self, *, host: str | None = None, timeout: float | None = None
    ) -> list[LoadedModel]:
        """The models loaded in the server's memory now (``GET /api/ps``).

        One answer serves every caller for ``PS_CACHE_SECONDS`` (1 s): two
        immediate calls send one request.

        Args:
            host: which of ``hosts`` to ask (default: the first).
            timeout: seconds to wait (default: the connect timeout).

        Raises:
            StreamError: the server could not be asked.
        """
        _validate.seconds("timeout", timeout)
        return self._loaded.get(
            self._host(host), timeout or self.connect_timeout or DEFAULT_CONNECT_TIMEOUT
        )

    def _host(self, url: str | None) -> Host:
        if url is None:
            return self._pool.hosts[0]
        for host in self._pool.hosts:
            if host.url == url.rstrip("/"):
                return host
        raise ValueError(f"{url!r} is not one of this client's hosts: {self.hosts}")

    # -- starting streams ------------------------------------------------

    def _request(
        self,
        path: str,
        body: dict[str, Any],
        options: Mapping[str, Any],
        *,
        deadline_at: float | None = None,
        seal_on_done: Callable[[Any], bool] | None = None,
    ) -> StreamRequest:
        """A request with this client's settings, overridden per call."""

        def pick(key: str, fallback: Any) -> Any:
            return options.get(key, fallback)

        deadline = pick("deadline", self.deadline)
        probe: Callable[[Host], ResidencyProbe] | None = None
        model = body.get("model")
        if pick("probe_loading", self.probe_loading) and isinstance(model, str):
            wait = self.connect_timeout or DEFAULT_CONNECT_TIMEOUT

            def probe(host: Host) -> ResidencyProbe:
                return ResidencyProbe(self._loaded, host, model, wait)

        return StreamRequest(
            pool=self._pool,
            path=path,
            body=body,
            payload=encode_body(body),
            max_line_bytes=self.max_line_bytes,
            connect_timeout=pick("connect_timeout", self.connect_timeout),
            first_token_timeout=pick("first_token_timeout", self.first_token_timeout),
            read_timeout=pick("read_timeout", self.read_timeout),
            deadline=deadline,
            deadline_at=deadline_at,
            retry=pick("retry", self.retry),
            watchdog=self._watchdog,
            seal_on_done=seal_on_done,
            probe=probe,
        )

    def _start_job(
        self,
        job: Job,
        options: Mapping[str, Any],
        label: str,
        *,
        fmt: FormatSpec | None = None,
        sink: ChatStream | None = None,
    ) -> StreamHandle:
        """Run ``job`` on a new stream handle's worker thread."""
        callbacks = Callbacks(**{k: options[k] for k in CALLBACK_KEYS if k in options})
        coalesce = options.get("coalesce_interval", self.coalesce_interval)
        handle = StreamHandle(
            job,
            callbacks,
            options.get("dispatcher") or self.dispatcher,
            label=label,
            coalesce_interval=coalesce,
            sink=sink,
            partial=fmt.parser if fmt is not None else None,
        )
        if sink is not None:
            sink._handle = handle
        return self._launch(handle)

    def _launch(self, handle: H) -> H:
        """Start ``handle``'s worker, tracked by this client until it ends."""
        with self._lock:
            if self._closed:
                raise RuntimeError("this StreamingClient is closed")
            self._handles.add(handle)
            # Started under the lock: a close() racing this either sees the
            # handle running (and cancels and joins it) or refuses the start.
            handle.add_done_callback(self._forget)
            handle._start()
        return handle

    def _forget(self, handle: BaseHandle[Any, Any]) -> None:
        with self._lock:
            self._handles.discard(handle)

    def _start_chat(
        self,
        model: str,
        messages: Any,
        sdk_args: dict[str, Any],
        options: Any,
        sink: ChatStream | None = None,
    ) -> StreamHandle:
        check_call(options)
        fmt = (
            FormatSpec(sdk_args["format"])
            if sdk_args.get("format") is not None
            else None
        )
        body = chat_body(model, messages, **sdk_args)
        request = self._request("/api/chat", body, options)
        estimate = estimate_prompt_tokens(body["messages"])

        def job(ctx: Any) -> ChatResult:
            return complete(ctx, run_stream(request, ctx), fmt, estimate)

        return self._start_job(job, options, f"model={model!r}", fmt=fmt, sink=sink)

    def _start_generate(
        self,
        model: str,
        prompt: str | None,
        suffix: str | None,
        sdk_args: dict[str, Any],
        options: Any,
        *,
        sink: ChatStream | None = None,
    ) -> StreamHandle:
        check_call(options)
        fmt = (
            FormatSpec(sdk_args["format"])
            if sdk_args.get("format") is not None
            else None
        )
        body = generate_body(model, prompt, suffix, **sdk_args)
        request = self._request("/api/generate", body, options)
        estimate = estimate_prompt_tokens(None, prompt, sdk_args.get("system"), suffix)

        def job(ctx: Any) -> ChatResult:
            return complete(ctx, run_stream(request, ctx), fmt, estimate)

        return self._start_job(job, options, f"model={model!r}", fmt=fmt, sink=sink)

    def start_chat(
        self,
        model: str,
        messages: Sequence[MessageLike] | None = None,
        *,
        tools: Sequence[ToolLike] | None = None,
        think: bool | str | None = None,
        format: FormatArg = None,
        options: Mapping[str, Any] | ollama.Options | None = None,
        keep_alive: float | str | None = None,
        logprobs: bool | None = None,
        top_logprobs: int | None = None,
        truncate: bool | None = None,
        shift: bool | None = None,
        **kwargs: Unpack[CallOptions],
    ) -> StreamHandle:
        """Start streaming a chat on a worker thread and return its handle at once.

        Args:
            model: the model name, e.g. ``"qwen3"``.
            messages: the history, dicts or ``ollama.Message``.
            tools: tool schemas (dicts), ``ollama.Tool`` or Python functions.
            think: ``True``/``False`` or a level (``"low"``, ``"medium"``,
                ``"high"``, ``"max"``...), passed through unchanged.
            format: ``"json"``, a JSON schema, or a pydantic model class (the
                result's ``parsed`` is then a validated instance).
            options: model options (``temperature``, ``num_ctx``...).
            keep_alive: how long the model stays loaded.
            logprobs: return log probabilities (collected in ``result.logprobs``).
            top_logprobs: alternatives per position (0-20).
            truncate: let the server cut a prompt longer than the context
                (``False``: an error instead).
            shift: let the server shift the context when the answer fills it.
            **kwargs: callbacks and per-call settings, see ``CallOptions``.

        Returns:
            The ``StreamHandle``.

        Raises:
            TypeError, ValueError: the arguments cannot form a request.
            RuntimeError: the client is closed.
        """
        sdk_args = {
            "tools": tools,
            "think": think,
            "format": format,
            "options": options,
            "keep_alive": keep_alive,
            "logprobs": logprobs,
            "top_logprobs": top_logprobs,
            "truncate": truncate,
            "shift": shift,
        }
        return self._start_chat(model, messages, sdk_args, kwargs)

    def chat(
        self,
        model: str,
        messages: Sequence[MessageLike] | None = None,
        *,
        tools: Sequence[ToolLike] | None = None,
        think: bool | str | None = None,
        format: FormatArg = None,
        options: Mapping[str, Any] | ollama.Options | None = None,
        keep_alive: float | str | None = None,
        logprobs: bool | None = None,
        top_logprobs: int | None = None,
        truncate: bool | None = None,
        shift: bool | None = None,
        **kwargs: Unpack[CallOptions],
    ) -> ChatResult:
        """Stream a chat and block until it ends; arguments as ``start_chat``.

        Callbacks fire as chunks arrive (on the worker thread by default). With
        a queued dispatcher that may deliver on this thread, they run here
        while we wait. Ctrl-C cancels the stream and raises ``KeyboardInterrupt``.

        Returns:
            The final ``ChatResult`` (``cancelled`` is true if another thread
            cancelled it).

        Raises:
            StreamError: the failure, with ``.partial``.
            TypeError, ValueError: the arguments cannot form a request.
        """
        handle = self.start_chat(
            model,
            messages,
            tools=tools,
            think=think,
            format=format,
            options=options,
            keep_alive=keep_alive,
            logprobs=logprobs,
            top_logprobs=top_logprobs,
            truncate=truncate,
            shift=shift,
            **kwargs,
        )
        return wait_result(handle, self.close_timeout)

    def stream_chat(
        self,
        model: str,
        messages: Sequence[MessageLike] | None = None,
        *,
        tools: Sequence[ToolLike] | None = None,
        think: bool | str | None = None,
        format: FormatArg = None,
        options: Mapping[str, Any] | ollama.Options | None = None,
        keep_alive: float | str | None = None,
        logprobs: bool | None = None,
        top_logprobs: int | None = None,
        truncate: bool | None = None,
        shift: bool | None = None,
        **kwargs: Unpack[CallOptions],
    ) -> ChatStream:
        """Start a chat and return a ``ChatStream`` to iterate (``start_chat``'s args).

        The stream starts at once. Iterate it (``for event in stream``) for
        typed events, or ``stream.text()`` for the answer's deltas; callbacks
        may be given too. Use it as a context manager so that leaving early
        cancels it.
        """
        stream = ChatStream(self.close_timeout)
        sdk_args = {
            "tools": tools,
            "think": think,
            "format": format,
            "options": options,
            "keep_alive": keep_alive,
            "logprobs": logprobs,
            "top_logprobs": top_logprobs,
            "truncate": truncate,
            "shift": shift,
        }
        self._start_chat(model, messages, sdk_args, kwargs, sink=stream)
        return stream

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
        format: FormatArg = None,
        images: Sequence[ImageLike] | None = None,
        options: Mapping[str, Any] | ollama.Options | None = None,
        keep_alive: float | str | None = None,
        logprobs: bool | None = None,
        top_logprobs: int | None = None,
        width: int | None = None,
        height: int | None = None,
        steps: int | None = None,
        truncate: bool | None = None,
        shift: bool | None = None,
        **kwargs: Unpack[CallOptions],
    ) -> StreamHandle:
        """Start streaming ``/api/generate``; its ``response`` text feeds ``content``.

        Arguments are those of ``ollama.Client.generate`` plus ``truncate``,
        ``shift`` and the callbacks and settings of ``CallOptions``. Returns the
        ``StreamHandle``.
        """
        return self._start_generate(
            model, prompt, suffix, _generate_args(locals()), kwargs
        )

    def generate(
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
        format: FormatArg = None,
        images: Sequence[ImageLike] | None = None,
        options: Mapping[str, Any] | ollama.Options | None = None,
        keep_alive: float | str | None = None,
        logprobs: bool | None = None,
        top_logprobs: int | None = None,
        width: int | None = None,
        height: int | None = None,
        steps: int | None = None,
        truncate: bool | None = None,
        shift: bool | None = None,
        **kwargs: Unpack[CallOptions],
    ) -> ChatResult:
        """Stream ``/api/generate`` and block until it ends (``start_generate``'s args).

        Returns:
            The final ``ChatResult`` (the ``response`` text in ``content``).

        Raises:
            StreamError: the failure, with ``.partial``.
        """
        handle = self._start_generate(
            model, prompt, suffix, _generate_args(locals()), kwargs
        )
        return wait_result(handle, self.close_timeout)

    def stream_generate(
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
        format: FormatArg = None,
        images: Sequence[ImageLike] | None = None,
        options: Mapping[str, Any] | ollama.Options | None = None,
        keep_alive: float | str | None = None,
        logprobs: bool | None = None,
        top_logprobs: int | None = None,
        width: int | None = None,
        height: int | None = None,
        steps: int | None = None,
        truncate: bool | None = None,
        shift: bool | None = None,
        **kwargs: Unpack[CallOptions],
    ) -> ChatStream:
        """Start ``/api/generate`` and return a ``ChatStream`` to iterate."""
        stream = ChatStream(self.close_timeout)
        self._start_generate(
            model, prompt, suffix, _generate_args(locals()), kwargs, sink=stream
        )
        return stream

    # -- models: pull, push, create, preload, unload --------------------

    def _start_model_op(
        self,
        operation: str,
        path: str,
        body: dict[str, Any],
        options: Mapping[str, Any],
    ) -> ProgressHandle:
        check_call(options, MODEL_KEYS)
        model = str(body["model"])
        request = self._request(path, body, options)
        tracker = ProgressTracker(model, operation)

        def job(ctx: StreamContext) -> ModelResult:
            try:
                run_stream(request, ctx)
            finally:
                self._loaded.forget()  # what is pulled or loaded has changed
            return tracker.result()

        callbacks = Callbacks(
            **{k: options[k] for k in MODEL_CALLBACK_KEYS if k in options}
        )
        handle = ProgressHandle(
            job,
            callbacks,
            options.get("dispatcher") or self.dispatcher,
            tracker=tracker,
            label=f"{operation} model={model!r}",
            coalesce_interval=options.get("coalesce_interval", self.coalesce_interval),
        )
        return self._launch(handle)

    def start_pull(
        self,
        model: str,
        *,
        insecure: bool = False,
        **options: Unpack[ModelOptions],
    ) -> ProgressHandle:
        """Start pulling ``model`` on a worker thread; return its ``ProgressHandle``.

        ``on_progress`` gets a ``Progress`` per line: overall ``fraction``,
        ``bytes_per_second``, ``eta`` and the ``stage``. ``cancel()`` stops at
        once; Ollama keeps the layers it has, so pulling again (or a ``retry=``
        policy, which retries a failed pull whatever was shown) resumes.

        Raises:
            TypeError, ValueError: bad arguments. An unknown model ends the
                handle with ``ModelNotFound``.
        """
        _check_name(model)
        body = {"model": model, "stream": True} | (
            {"insecure": True} if insecure else {}
        )
        return self._start_model_op("pull", "/api/pull", body, options)

    def pull(
        self,
        model: str,
        *,
        insecure: bool = False,
        **options: Unpack[ModelOptions],
    ) -> ModelResult:
        """Pull ``model`` and block until it is on the server; as ``start_pull``.

        Returns:
            The ``ModelResult`` (``cancelled`` if another thread cancelled it).

        Raises:
            StreamError: ``ModelNotFound``; a ``ServerError`` mid-pull, whose
                ``.partial`` is the last ``Progress``; timeouts.
        """
        return wait_result(
            self.start_pull(model, insecure=insecure, **options), self.close_timeout
        )

    def start_push(
        self,
        model: str,
        *,
        insecure: bool = False,
        **options: Unpack[ModelOptions],
    ) -> ProgressHandle:
        """Start pushing ``model`` to its registry; return its ``ProgressHandle``."""
        _check_name(model)
        body = {"model": model, "stream": True} | (
            {"insecure": True} if insecure else {}
        )
        return self._start_model_op("push", "/api/push", body, options)

    def push(
        self,
        model: str,
        *,
        insecure: bool = False,
        **options: Unpack[ModelOptions],
    ) -> ModelResult:
        """Push ``model`` and block until done; as ``start_push``."""
        return wait_result(
            self.start_push(model, insecure=insecure, **options), self.close_timeout
        )

    def start_create(  # noqa: PLR0917  # ollama.Client.create's positional order
        self,
        model: str,
        quantize: str | None = None,
        from_: str | None = None,
        files: dict[str, str] | None = None,
        adapters: dict[str, str] | None = None,
        template: str | None = None,
        license: str | list[str] | None = None,
        system: str | None = None,
        parameters: Mapping[str, Any] | ollama.Options | None = None,
        messages: Sequence[MessageLike] | None = None,
        **options: Unpack[ModelOptions],
    ) -> ProgressHandle:
        """Start creating ``model`` (the arguments of ``ollama.Client.create``).

        Example::

            client.start_create("brief", from_="qwen3", system="Be brief.")
        """
        _check_name(model)
        body = _drop_none(
            {
                "model": model,
                "stream": True,
                "quantize": quantize,
                "from": from_,
                "files": dict(files) if files is not None else None,
                "adapters": dict(adapters) if adapters is not None else None,
                "template": template,
                "license": license,
                "system": system,
                "parameters": encode_options(parameters),
                "messages": [encode_message(m) for m in messages]
                if messages is not None
                else None,
            }
        )
        return self._start_model_op("create", "/api/create", body, options)

    def create(  # noqa: PLR0917  # ollama.Client.create's positional order
        self,
        model: str,
        quantize: str | None = None,
        from_: str | None = None,
        files: dict[str, str] | None = None,
        adapters: dict[str, str] | None = None,
        template: str | None = None,
        license: str | list[str] | None = None,
        system: str | None = None,
        parameters: Mapping[str, Any] | ollama.Options | None = None,
        messages: Sequence[MessageLike] | None = None,
        **options: Unpack[ModelOptions],
    ) -> ModelResult:
        """Create ``model`` and block until done; as ``start_create``."""
        handle = self.start_create(
            model,
            quantize,
            from_,
            files,
            adapters,
            template,
            license,
            system,
            parameters,
            messages,
            **options,
        )
        return wait_result(handle, self.close_timeout)

    def _keep_alive(
        self,
        operation: str,
        model: str,
        keep_alive: float | str,
        options: Mapping[str, Any],
    ) -> ModelResult:
        """An empty generate with ``keep_alive``: how Ollama (un)loads a model."""
        _check_name(model)
        check_call(options, SETTINGS_KEYS)
        body = generate_body(model, keep_alive=keep_alive)
        request = self._request("/api/generate", body, options)
        started = time.monotonic()

        def job(ctx: StreamContext) -> ChatResult:
            try:
                result: ChatResult = run_stream(request, ctx)
            finally:
                self._loaded.forget()  # the server's memory has changed
            return result

        answer = wait_result(
            self._launch(
                StreamHandle(job, Callbacks(), self.dispatcher, label=operation)
            ),
            self.close_timeout,
        )
        return ModelResult(
            model=model,
            operation=operation,
            status=answer.done_reason or "",
            seconds=time.monotonic() - started,
            cancelled=answer.cancelled,
            done_reason=answer.done_reason,
        )

    def preload(
        self,
        model: str,
        *,
        keep_alive: float | str | None = None,
        **options: Unpack[Settings],
    ) -> ModelResult:
        """Load ``model`` into memory now, so the first real answer starts fast.

        Args:
            model: the model to load.
            keep_alive: how long it stays loaded (default: the server's, 5m).
            **options: ``retry`` and the timeouts.

        Returns:
            A ``ModelResult`` with ``done_reason`` "load" and the ``seconds`` it took.
        """
        return self._keep_alive(
            "preload", model, "5m" if keep_alive is None else keep_alive, options
        )

    def unload(self, model: str, **options: Unpack[Settings]) -> ModelResult:
        """Unload ``model`` from memory now (``keep_alive=0``).

        Returns:
            A ``ModelResult`` with ``done_reason`` "unload".
        """
        return self._keep_alive("unload", model, 0, options)

    # -- lifecycle -------------------------------------------------------

    def active_streams(self) -> list[BaseHandle[Any, Any]]:
        """The handles of the streams still running."""
        with self._lock:
            return list(self._handles)

    def close(self) -> None:
        """Cancel running streams, wait for their workers, release connections.

        Safe from any thread, from a callback of one of this client's streams
        (that stream's own worker is not waited for: it ends as soon as the
        callback returns), and more than once. Once it returns, no stream of
        this client runs and a new one cannot start.
        """
        with self._lock:
            self._closed = True
            handles = list(self._handles)
        for handle in handles:
            handle.cancel()
        try:
            for handle in handles:
                handle.join(self.close_timeout)  # not our own thread: see join()
        finally:
            try:
                self._watchdog.close(self.close_timeout)
            finally:
                if self._owns_sdk:
                    for sdk in self._sdks:
                        try:
                            sdk.close()  # type: ignore[no-untyped-call]  # untyped SDK
                        except Exception:  # the others must still close
                            log.exception("closing the SDK client failed")

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


def _check_name(model: object) -> None:
    if not isinstance(model, str) or not model:
        raise ValueError("model must be a non-empty string, e.g. 'qwen3'")


def _drop_none(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None}


def _generate_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """The SDK-side arguments of a generate call, taken from its locals by name."""
    return {
        key: args[key]
        for key in (
            "system",
            "template",
            "context",
            "think",
            "raw",
            "format",
            "images",
            "options",
            "keep_alive",
            "logprobs",
            "top_logprobs",
            "width",
            "height",
            "steps",
            "truncate",
            "shift",
        )
    }


__all__ = ["CALL_KEYS", "StreamingClient"]
