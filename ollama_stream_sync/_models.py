"""The client's model calls (``ModelCalls``): pull, push and create with progress
(run as a chat is: cancel, timeouts, retries, dispatchers), preload, unload,
``/api/ps`` and ``/api/show``. Their answers are shared a while per host; ``/api/ps``
also feeds the probe that tells a stream's phase "loading" from "waiting".
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import ollama

from . import _options
from ._cancel import bind
from ._context import ModelInfo
from ._engine import Engine
from ._errors import ProtocolError, StreamError
from ._handle import ProgressHandle, StreamHandle, wait_result
from ._hosts import Host, Lister, same_model
from ._observe import CallInfo
from ._options import ModelOptions, Settings, Unpack
from ._request import (
    MessageLike,
    check_model,
    drop_none,
    encode_body,
    encode_message,
    encode_options,
    generate_body,
)
from ._result import ModelResult
from ._run import StreamContext, run_stream
from ._state import ChatState, ProgressState
from ._stream import blocking
from ._validate import seconds

T = TypeVar("T")

PS_CACHE_SECONDS = 1.0
"""How long one ``/api/ps`` answer serves every caller for the same host."""
SHOW_CACHE_SECONDS = 60.0
"""How long one ``/api/show`` answer serves every caller for a host and model."""


@dataclass(frozen=True)
class LoadedModel:
    """A model resident in the server's memory, as ``GET /api/ps`` reports it.

    Attributes:
        name: the model's name, e.g. ``"qwen3:latest"``.
        size: bytes it takes in memory (RAM and VRAM).
        size_vram: bytes of it in GPU memory (equal to ``size``: fully on GPU).
        context_length: the context it was loaded with, when the server says.
        expires_at: when it unloads unless used again (``None``: never).
        model: the model reference; ``digest`` and ``details`` as sent.
    """

    name: str
    size: int = 0
    size_vram: int = 0
    context_length: int | None = None
    expires_at: dt.datetime | None = None
    model: str = ""
    digest: str = ""
    details: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_wire(cls, data: Any) -> LoadedModel:
        """Parse one entry of ``/api/ps``'s ``models``."""
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            raise ProtocolError(f"not an /api/ps model entry: {data!r:.200}")
        size, vram, length, details = (
            data.get(k) for k in ("size", "size_vram", "context_length", "details")
        )
        return cls(
            name=data["name"],
            size=size if type(size) is int else 0,
            size_vram=vram if type(vram) is int else 0,
            context_length=length if isinstance(length, int) and length > 0 else None,
            expires_at=parse_time(data.get("expires_at")),
            model=str(data.get("model") or data["name"]),
            digest=str(data.get("digest") or ""),
            details=dict(details) if isinstance(details, dict) else {},
        )


_FRACTION = re.compile(r"\.(\d+)")


def parse_time(value: Any) -> dt.datetime | None:
    """An RFC 3339 time as Go writes it (any fraction digits, ``Z`` or offset)."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    text = _FRACTION.sub(lambda m: "." + (m.group(1) + "000000")[:6], text, count=1)
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return None if when.year <= 1 else when  # Go's zero time: "never"


def full_tag(name: str) -> str:
    """A model's name with its tag (``qwen3`` is ``qwen3:latest``)."""
    name = name.strip()
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


class SharedAnswers(Generic[T]):
    """Short answers shared per key (a host, or a host and a model): callers
    within ``ttl`` of an answer, and callers while its request is in flight,
    get that one answer from one request. ``/api/ps`` and ``/api/show`` use it."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        # Guards _cache, _flights and _generation.
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, T]] = {}
        self._flights: dict[tuple[str, int], threading.Event] = {}
        self._generation = 0
        """Bumped by ``forget``: a request sent before it answers no one after."""

    def forget(self) -> None:
        """Drop every answer, cached or on its way (the server's models changed)."""
        with self._lock:
            self._cache.clear()
            self._generation += 1

    def get(self, key: str, fetch: Callable[[], T], timeout: float | None) -> T:
        """The answer for ``key``: cached, another caller's, or ``fetch()``'s."""
        while True:
            with self._lock:
                cached = self._cache.get(key)
                if cached is not None and time.monotonic() - cached[0] < self.ttl:
                    return cached[1]
                asked = (key, self._generation)
                mine = asked not in self._flights
                flight = self._flights.setdefault(asked, threading.Event())
            if not mine:
                finished = flight.wait(timeout)
                with self._lock:
                    cached = self._cache.get(key)
                fresh = cached is not None and time.monotonic() - cached[0] < self.ttl
                if cached is not None and (fresh or not finished):
                    return cached[1]  # its answer; or, past our timeout, the last
                continue  # the other request failed: try ourselves
            try:
                answer = fetch()
                with self._lock:
                    if asked[1] == self._generation:
                        self._cache[key] = (time.monotonic(), answer)
                return answer
            finally:
                with self._lock:
                    self._flights.pop(asked, None)
                flight.set()


def loaded_on(host: Host, timeout: float | None) -> list[LoadedModel]:
    """``GET /api/ps`` on ``host``, parsed."""
    data = host.transport.request_json("GET", "/api/ps", None, timeout=timeout)
    found = data.get("models") if isinstance(data, dict) else None
    if found is not None and not isinstance(found, list):
        raise ProtocolError(f"/api/ps answered no model list: {data!r:.200}")
    return [LoadedModel.from_wire(m) for m in found or ()]


@dataclass
class ResidencyProbe:
    """Asks ``/api/ps`` on its own thread whether a model is loaded; never fails
    or delays the stream (an error or a slow answer just means no answer)."""

    models: SharedAnswers[list[LoadedModel]]
    host: Host
    model: str
    timeout: float

    def start(self, on_answer: Callable[[bool], None]) -> None:
        """Ask in the background; ``on_answer(resident)`` if an answer comes."""

        def ask() -> None:
            try:
                host, wait = self.host, self.timeout
                loaded = self.models.get(host.url, lambda: loaded_on(host, wait), wait)
            except StreamError:
                return
            on_answer(any(same_model(m.name, self.model) for m in loaded))

        # Daemon and unjoined: it only reads /api/ps, and a stream never waits for it.
        threading.Thread(target=ask, name="ollama-probe", daemon=True).start()

    def answered(self) -> None:
        """The model answered, so it is loaded: an earlier "not loaded" is stale."""
        self.models.forget()


class ModelCalls:
    """The model operations of ``StreamingClient``."""

    _engine: Engine
    _loaded: SharedAnswers[list[LoadedModel]]
    _shown: SharedAnswers[ModelInfo]

    def _share_answers(self) -> None:
        """The caches of /api/ps and /api/show, and the probe that reads the first."""
        self._loaded = SharedAnswers(PS_CACHE_SECONDS)
        self._shown = SharedAnswers(SHOW_CACHE_SECONDS)
        wait = self._wait(None)
        self._engine.probe = functools.partial(
            ResidencyProbe, self._loaded, timeout=wait
        )

    def _host(self, url: str | None) -> Host:
        hosts = self._engine.hosts.hosts
        if url is None:
            return hosts[0]
        for host in hosts:
            if host.url == url.rstrip("/"):
                return host
        raise ValueError(
            f"{url!r} is not one of this client's hosts: {[h.url for h in hosts]}"
        )

    def _wait(self, timeout: float | None) -> float:
        seconds("timeout", timeout)
        self._engine.check_open()
        return timeout or self._engine.settings.get("connect_timeout") or 10.0

    def _lister(self, timeout: float | None) -> Lister:
        """Asks a host for its models: loaded (``/api/ps``, shared), on disk."""
        wait = timeout or 10.0

        def models_of(host: Host) -> tuple[list[str], list[str]]:
            ps = self._loaded.get(host.url, lambda: loaded_on(host, wait), wait)
            data = host.transport.request_json("GET", "/api/tags", None, timeout=wait)
            found = data.get("models") if isinstance(data, dict) else None
            if not isinstance(found, list):
                raise ProtocolError(f"/api/tags answered no model list: {data!r:.200}")
            names = [m.get("name") for m in found if isinstance(m, dict)]
            return [m.name for m in ps], [n for n in names if isinstance(n, str)]

        return models_of

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
        wait, where = self._wait(timeout), self._host(host)
        return list(self._loaded.get(where.url, lambda: loaded_on(where, wait), wait))

    def model_info(
        self, model: str, *, host: str | None = None, timeout: float | None = None
    ) -> ModelInfo:
        """What ``/api/show`` says of ``model``: context length, default
        ``num_ctx``, capabilities, family, size and quantisation.

        One answer serves every caller for ``SHOW_CACHE_SECONDS`` (60 s); a
        pull or create through this client forgets it. ``host`` and
        ``timeout`` as ``loaded_models``.

        Raises:
            ModelNotFound: the model is not on the server.
            StreamError: the server could not be asked.
        """
        check_model(model)
        wait, where = self._wait(timeout), self._host(host)
        body = encode_body({"model": model})

        def show() -> ModelInfo:
            data = where.transport.request_json("POST", "/api/show", body, timeout=wait)
            return ModelInfo.from_show(model, data)

        return self._shown.get(f"{where.url} {full_tag(model)}", show, wait)

    def _known(self, model: str, ctx: StreamContext) -> ModelInfo | None:
        """The model's ``/api/show`` for a stream, or ``None`` (never a reason to
        fail); a cancel stops the request at once."""
        bind(ctx.scope)
        try:
            return self.model_info(model)
        except StreamError:
            return None
        finally:
            bind(None)

    def _start_model_op(
        self, operation: str, body: dict[str, Any], options: Mapping[str, Any]
    ) -> ProgressHandle:
        _options.check(options, ModelOptions)
        engine, model = self._engine, str(body["model"])
        state = ProgressState(model, operation)
        request = engine.request(
            f"/api/{operation}", encode_body(body), options, model=model, body=body
        )

        def job(ctx: StreamContext) -> ModelResult:
            try:
                run_stream(request, ctx)
            finally:
                self._loaded.forget()  # what is pulled or loaded has changed
                self._shown.forget()
            return state.result()

        call = CallInfo(operation, model, body)
        return engine.start(ProgressHandle, job, options, state=state, call=call)

    @_options.documented(ModelOptions)
    def start_pull(
        self, model: str, *, insecure: bool = False, **options: Unpack[ModelOptions]
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
        check_model(model)
        body = {"model": model, "stream": True} | (
            {"insecure": True} if insecure else {}
        )
        return self._start_model_op("pull", body, options)

    pull = blocking(
        start_pull,
        "Pull ``model`` and block until it is on the server (a ``ModelResult``).",
    )

    @_options.documented(ModelOptions)
    def start_push(
        self, model: str, *, insecure: bool = False, **options: Unpack[ModelOptions]
    ) -> ProgressHandle:
        """Start pushing ``model`` to its registry; return its ``ProgressHandle``."""
        check_model(model)
        body = {"model": model, "stream": True} | (
            {"insecure": True} if insecure else {}
        )
        return self._start_model_op("push", body, options)

    push = blocking(
        start_push, "Push ``model`` and block until done (a ``ModelResult``)."
    )

    @_options.documented(ModelOptions)
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
        check_model(model)
        body = drop_none(
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
                "messages": None
                if messages is None
                else [encode_message(m) for m in messages],
            }
        )
        return self._start_model_op("create", body, options)

    create = blocking(
        start_create, "Create ``model`` and block until done (a ``ModelResult``)."
    )

    def _keep_alive(
        self,
        operation: str,
        model: str,
        keep_alive: float | str,
        options: Mapping[str, Any],
    ) -> ModelResult:
        """An empty generate with ``keep_alive``: how Ollama (un)loads a model."""
        check_model(model)
        _options.check(options, Settings)
        engine = self._engine
        body = generate_body(model, keep_alive=keep_alive)
        request = engine.request(
            "/api/generate", encode_body(body), options, model=model, body=body
        )
        started = time.monotonic()

        def job(ctx: StreamContext) -> Any:
            try:
                return run_stream(request, ctx)
            finally:
                self._loaded.forget()  # the server's memory has changed

        call = CallInfo(operation, model, body)
        handle = engine.start(StreamHandle, job, {}, state=ChatState(), call=call)
        answer = wait_result(handle, engine.close_timeout)
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
