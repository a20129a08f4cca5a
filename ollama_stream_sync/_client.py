"""The user-facing client: checks the arguments, builds the request, starts it."""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import ollama

from . import _options
from ._batch import BatchCalls
from ._context import ContextArg, Window, check_capabilities
from ._decode import DEFAULT_MAX_LINE_BYTES
from ._dispatch import Dispatcher, InlineDispatcher
from ._engine import Engine, opentelemetry
from ._handle import BaseHandle, StreamHandle
from ._hosts import DEFAULT_COOLDOWN, Host, HostHealth, Hosts, RoutingArg
from ._models import ModelCalls
from ._observe import CallInfo
from ._options import CallOptions, Unpack
from ._request import (
    ImageLike,
    MessageLike,
    ToolLike,
    chat_body,
    encode_body,
    generate_body,
)
from ._result import ChatResult
from ._retry import RetryArg
from ._run import StreamContext, run_stream
from ._state import ChatState
from ._stream import blocking, streaming
from ._structured import FormatArg, FormatSpec, finish
from ._transports._base import Transport
from ._transports._compat import sdk_http_client
from ._transports._httpx import HttpxTransport
from ._transports._sdk import check_client_kwargs, check_host_url, make_sdk
from ._validate import positive_int, seconds

log = logging.getLogger("ollama_stream_sync")

DEFAULT_CONNECT_TIMEOUT = 10.0
"""Seconds to establish a connection (the SDK's default is no limit at all)."""
DEFAULT_FIRST_TOKEN_TIMEOUT = 300.0
"""Seconds to wait for the first output: generous, it covers loading a large model."""
DEFAULT_READ_TIMEOUT = 120.0
"""Seconds of silence tolerated between chunks once a stream has started."""

_names = itertools.count(1)


class StreamingClient(ModelCalls, BatchCalls):
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
        session: Any = None,
        retry: RetryArg = None,
        connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
        first_token_timeout: float | None = DEFAULT_FIRST_TOKEN_TIMEOUT,
        read_timeout: float | None = DEFAULT_READ_TIMEOUT,
        deadline: float | None = None,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        dispatcher: Dispatcher | None = None,
        coalesce_interval: float | None = None,
        host_cooldown: float = DEFAULT_COOLDOWN,
        routing: RoutingArg = "model_aware",
        close_timeout: float = 5.0,
        probe_loading: bool = False,
        check_capabilities: bool = False,
        proxy: str | httpx.Proxy | None = None,
        telemetry: bool = True,
        max_in_flight: int | None = None,
        **client_kwargs: Any,
    ) -> None:
        """Create a client.

        Args:
            host: Ollama's URL; ``None`` reads ``OLLAMA_HOST`` or uses the SDK default.
            hosts: several Ollama URLs: each attempt goes to the one ``routing``
                chooses among the healthy ones; a failure before any output
                moves to another at once (see "Several hosts" in the docs).
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
            host_cooldown: seconds a host's open breaker keeps it out (after a
                refused connection, or 3 failures in a row) before one probe.
            routing: with several hosts, which one serves: ``"model_aware"``
                (the model in memory, then on disk, then least busy),
                ``"least_busy"``, ``"round_robin"``, or a ``Router``.
            close_timeout: seconds ``close()`` waits for each cancelled worker.
            probe_loading: ask ``/api/ps`` at the start of each stream, so a
                model that is not loaded yet reports the phase "loading".
            check_capabilities: before each chat, read the model's
                ``/api/show`` (cached) and raise ``CapabilityError`` for
                ``think``, ``tools`` or images it cannot take.
            proxy: an HTTP(S) or SOCKS5 proxy URL (or ``httpx.Proxy``) for every
                host; by default the environment's (``HTTPS_PROXY``...) applies
                to remote hosts, unless ``trust_env=False``.
            telemetry: trace and measure every call with OpenTelemetry when
                ``opentelemetry-api`` is installed (the ``otel`` extra; your
                application configures the SDK); ``False`` turns it off here.
            max_in_flight: at most this many streams at once (``None``: no cap);
                the others wait their turn in phase "queued", in the order they
                started (cancellable; a ``deadline`` counts the wait).
            **client_kwargs: for ``ollama.Client`` and httpx (headers, verify,
                cert, transport, trust_env...).

        Raises:
            TypeError, ValueError: an argument is of the wrong type or out of
                range (the message names it); ``client`` combined with
                ``host``/``hosts``/``client_kwargs``; both ``host`` and ``hosts``.
        """
        if client is not None and (host is not None or hosts or client_kwargs or proxy):
            raise TypeError("pass either client= or host/hosts/client options")
        if host is not None and hosts:
            raise TypeError("pass host= or hosts=, not both")
        if hosts is not None and (isinstance(hosts, str) or not hosts):
            raise TypeError("hosts must be a non-empty list of URLs")
        check_client_kwargs(client_kwargs)
        settings = {
            "retry": retry,
            "connect_timeout": connect_timeout,
            "first_token_timeout": first_token_timeout,
            "read_timeout": read_timeout,
            "deadline": deadline,
            "coalesce_interval": coalesce_interval,
            "probe_loading": probe_loading,
            "check_capabilities": check_capabilities,
        }
        _options.check(settings | {"dispatcher": dispatcher}, CallOptions)
        positive_int("max_line_bytes", max_line_bytes)
        if max_in_flight is not None:
            positive_int("max_in_flight", max_in_flight)
        seconds("host_cooldown", host_cooldown, allow_none=False, zero=True)
        seconds("close_timeout", close_timeout, allow_none=False, zero=True)
        if not isinstance(telemetry, bool):
            raise TypeError("telemetry must be True or False")
        if session is not None:
            import requests  # noqa: PLC0415  # only session= users pay for it

            if not isinstance(session, requests.Session):
                raise TypeError("session must be a requests.Session")
        for url in [host] if host is not None else list(hosts or ()):
            check_host_url(url)
        self.session = session
        self._owns_sdk = client is None
        self._sdks = (
            [client]
            if client is not None
            else [
                make_sdk(url, dict(client_kwargs), connect_timeout, proxy)
                for url in (list(hosts) if hosts else [host])
            ]
        )
        self._engine = Engine(
            Hosts(
                [Host(self._transport(sdk)) for sdk in self._sdks],
                cooldown=host_cooldown,
                routing=routing,
                lister=self._lister(connect_timeout),
            ),
            settings,
            dispatcher=dispatcher or InlineDispatcher(),
            close_timeout=close_timeout,
            max_line_bytes=max_line_bytes,
            name=str(next(_names)),
            max_in_flight=max_in_flight,
        )
        if telemetry and (factory := opentelemetry()) is not None:
            self._engine.observers.append(factory)
        self._share_answers()

    def _transport(self, sdk: ollama.Client) -> Transport:
        http = sdk_http_client(sdk)
        check_host_url(str(http.base_url))
        if self.session is None:
            return HttpxTransport(http)
        from ._transports._requests import RequestsTransport  # noqa: PLC0415  # lazy

        return RequestsTransport(self.session, str(http.base_url), http.headers)

    @property
    def sdk(self) -> ollama.Client:
        """The first host's ``ollama.Client``, for the calls we do not stream."""
        return self._sdks[0]

    @property
    def hosts(self) -> list[str]:
        """The base URLs this client streams from."""
        return [h.url for h in self._engine.hosts.hosts]

    @property
    def dispatcher(self) -> Dispatcher:
        """Where callbacks run unless a call says otherwise."""
        return self._engine.dispatcher

    @property
    def close_timeout(self) -> float:
        """Seconds ``close()`` waits for each cancelled worker."""
        return self._engine.close_timeout

    def health(self, timeout: float | None = None) -> list[HostHealth]:
        """Ask every host for ``/api/version`` and its models, in parallel.

        Args:
            timeout: seconds per host (default: the connect timeout, or 10).

        Returns:
            One ``HostHealth`` per host, in the client's order.
        """
        limit = self._wait(timeout)
        self._loaded.forget()  # asked now, not a second ago
        return self._engine.hosts.health(self._lister(limit), limit)

    def _start_stream(
        self,
        operation: str,
        body: dict[str, Any],
        options: Mapping[str, Any],
        *,
        fmt: FormatSpec | None,
        window: Window | None = None,
    ) -> StreamHandle:
        _options.check(options, CallOptions)
        engine, model, path = self._engine, body["model"], f"/api/{operation}"
        payload = encode_body(body)
        state, check = ChatState(), engine.option(options, "check_capabilities")
        window = window or Window(model)

        def job(ctx: StreamContext) -> ChatResult:
            info = self._known(model, ctx) if check or window.needs_info else None
            if check:
                check_capabilities(info, body)

            def send(sent: dict[str, Any]) -> ChatResult:
                data = payload if sent is body else encode_body(sent)
                answer: ChatResult = run_stream(
                    engine.request(path, data, options, model=model, body=sent), ctx
                )
                return answer

            build = functools.partial(window.sized, body)
            result, cut = window.send(ctx, build, send, info)
            return finish(state, result, fmt, cut)

        call = CallInfo(operation, model, body)
        partial = fmt.parser if fmt is not None else None
        return engine.start(
            StreamHandle, job, options, state=state, call=call, partial=partial
        )

    @_options.documented(CallOptions)
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
        context: ContextArg = None,
        **kwargs: Unpack[CallOptions],
    ) -> StreamHandle:
        """Start streaming a chat on a worker thread and return its handle at once.

        Args:
            model: the model name, e.g. ``"qwen3"``.
            messages: the history, dicts or ``ollama.Message``.
            tools: tool schemas (dicts), ``ollama.Tool`` or Python functions.
            think: ``True``/``False`` or a level (``"low"``, ``"medium"``,
                ``"high"``, ``"max"``), passed through unchanged.
            format: ``"json"``, a JSON schema, or a pydantic model class (the
                result's ``parsed`` is then a validated instance).
            options: model options (``temperature``, ``num_ctx``...).
            keep_alive: how long the model stays loaded.
            logprobs: return log probabilities (collected in ``result.logprobs``).
            top_logprobs: alternatives per position (0-20).
            truncate: let the server cut a prompt longer than the context
                (``False``: an error instead).
            shift: let the server shift the context when the answer fills it.
            context: ``None`` (the server's), a ``num_ctx``, or ``"auto"``: sized
                to the prompt and answer within the model's maximum. Either way
                the server refuses rather than cuts (``truncate: false``), and an
                over-long prompt raises ``ContextLengthExceeded``.
            **kwargs: callbacks and per-call settings (below).

        Raises:
            TypeError, ValueError: the arguments cannot form a request.
            RuntimeError: the client is closed.
        """
        # Every other argument is chat_body's, by name (map_chat relies on it too).
        fields = {k: v for k, v in locals().items() if k not in ("self", "kwargs")}
        del fields["context"]  # the Window's
        fmt = FormatSpec(format) if format is not None else None
        window = Window(model, context, truncate=truncate)
        body = chat_body(**fields)
        return self._start_stream("chat", body, kwargs, fmt=fmt, window=window)

    chat = blocking(
        start_chat,
        "Stream a chat and block until it ends; the arguments of ``start_chat``.\n\n"
        "Callbacks fire as chunks arrive (on the worker thread by default; with a\n"
        "queued dispatcher that may deliver on this thread, here). Ctrl-C cancels\n"
        "the stream and raises ``KeyboardInterrupt``. Returns the ``ChatResult``\n"
        "(``cancelled`` if another thread cancelled it); raises its ``StreamError``.",
    )
    stream_chat = streaming(
        start_chat,
        "Start a chat and return a ``ChatStream`` of its typed events.\n\n"
        "Iterate it (``for event in stream``), or ``stream.text()`` for the answer's\n"
        "deltas; use it as a context manager so that leaving early cancels it.",
    )

    @_options.documented(CallOptions)
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

        The arguments of ``ollama.Client.generate``, plus ``truncate``, ``shift``
        and the callbacks and settings below.
        """
        fields = {k: v for k, v in locals().items() if k not in ("self", "kwargs")}
        fmt = FormatSpec(format) if format is not None else None
        body = generate_body(**fields)  # its arguments, as for start_chat
        return self._start_stream("generate", body, kwargs, fmt=fmt)

    generate = blocking(
        start_generate,
        "Stream ``/api/generate`` and block until it ends (``start_generate``'s\n"
        "arguments); returns the ``ChatResult`` (the ``response`` text in\n"
        "``content``).",
    )
    stream_generate = streaming(
        start_generate,
        "Start ``/api/generate`` and return a ``ChatStream`` to iterate.",
    )

    def active_streams(self) -> list[BaseHandle[Any, Any]]:
        """The handles of the streams still running."""
        return self._engine.active()

    def close(self) -> None:
        """Cancel running streams, wait for their workers, release connections.

        Safe from any thread, from a callback of one of this client's streams
        (that stream's own worker is not waited for: it ends as soon as the
        callback returns), and more than once. Once it returns, no stream of
        this client runs and a new one cannot start.
        """
        try:
            self._engine.close()
            self._engine.hosts.close(self.close_timeout)
        finally:
            if self._owns_sdk:
                for sdk in self._sdks:
                    try:
                        sdk.close()  # type: ignore[no-untyped-call]  # untyped SDK
                    except Exception:  # the others must still close
                        log.exception("closing the SDK client failed")

    def __enter__(self) -> StreamingClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __repr__(self) -> str:
        active = len(self._engine.handles)
        return f"<StreamingClient {', '.join(self.hosts)} active={active}>"
