"""Models the server has loaded (``GET /api/ps``), and the probe that tells a
stream's "loading" phase from "waiting".
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._errors import ProtocolError, StreamError
from ._hosts import Host

PS_CACHE_SECONDS = 1.0
"""How long one ``/api/ps`` answer serves every caller for the same host."""


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
        context = data.get("context_length")
        details = data.get("details")
        return cls(
            name=data["name"],
            size=_int(data.get("size")),
            size_vram=_int(data.get("size_vram")),
            context_length=context
            if isinstance(context, int) and context > 0
            else None,
            expires_at=parse_time(data.get("expires_at")),
            model=str(data.get("model") or data["name"]),
            digest=str(data.get("digest") or ""),
            details=dict(details) if isinstance(details, dict) else {},
        )


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


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
    if when.year <= 1:  # Go's zero time: "never"
        return None
    return when


def parse_ps(data: Any) -> list[LoadedModel]:
    """The ``models`` of an ``/api/ps`` answer."""
    models = data.get("models") if isinstance(data, dict) else None
    if models is None:
        return []
    if not isinstance(models, list):
        raise ProtocolError(f"/api/ps answered no model list: {data!r:.200}")
    return [LoadedModel.from_wire(m) for m in models]


def same_model(a: str, b: str) -> bool:
    """Whether two model names mean the same model (``qwen3`` is ``qwen3:latest``)."""

    def norm(name: str) -> str:
        name = name.strip()
        return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"

    return norm(a) == norm(b)


class LoadedModels:
    """``/api/ps`` per host, shared: callers within ``PS_CACHE_SECONDS`` (and
    callers while a request is in flight) get one answer from one request."""

    def __init__(self, ttl: float = PS_CACHE_SECONDS) -> None:
        self.ttl = ttl
        # Guards _cache and _flights.
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, list[LoadedModel]]] = {}
        self._flights: dict[str, threading.Event] = {}

    def forget(self) -> None:
        """Drop every cached answer (a model was loaded, unloaded or pulled)."""
        with self._lock:
            self._cache.clear()

    def get(self, host: Host, timeout: float | None) -> list[LoadedModel]:
        """The models loaded on ``host`` now (or within the last ``ttl``)."""
        while True:
            with self._lock:
                cached = self._cache.get(host.url)
                if cached is not None and time.monotonic() - cached[0] < self.ttl:
                    return list(cached[1])
                flight = self._flights.get(host.url)
                if flight is None:
                    flight = self._flights[host.url] = threading.Event()
                    mine = True
                else:
                    mine = False
            if not mine:
                flight.wait(timeout)
                with self._lock:
                    cached = self._cache.get(host.url)
                if cached is not None:
                    return list(cached[1])
                continue  # the other request failed: try ourselves
            try:
                models = parse_ps(host.transport.get_json("/api/ps", timeout=timeout))
                with self._lock:
                    self._cache[host.url] = (time.monotonic(), models)
                return list(models)
            finally:
                with self._lock:
                    self._flights.pop(host.url, None)
                flight.set()


class ResidencyProbe:
    """Asks ``/api/ps`` on its own thread whether a model is loaded; never fails
    or delays the stream (an error or a slow answer just means no answer)."""

    def __init__(
        self, models: LoadedModels, host: Host, model: str, timeout: float
    ) -> None:
        self._models = models
        self._host = host
        self._model = model
        self._timeout = timeout

    def start(self, on_answer: Callable[[bool], None]) -> None:
        """Ask in the background; ``on_answer(resident)`` if an answer comes."""

        def ask() -> None:
            try:
                loaded = self._models.get(self._host, self._timeout)
            except StreamError:
                return
            on_answer(any(same_model(m.name, self._model) for m in loaded))

        threading.Thread(target=ask, name="ollama-probe", daemon=True).start()

    def answered(self) -> None:
        """The model answered, so it is loaded: an earlier "not loaded" is stale."""
        self._models.forget()
