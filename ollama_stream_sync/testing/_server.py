"""``FakeOllama``: the public face over the HTTP layer, endpoints and models."""

from __future__ import annotations

import contextlib
import ssl
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from ._endpoints import CHAT, GENERATE, SCRIPTED, Endpoints, endpoint_path
from ._http import LoopbackServer, RecordedRequest, TLSMaterial
from ._models import Entry, Registry
from ._scripts import Script, Step, check_script, reply


class FakeOllama:
    """An Ollama look-alike on loopback for tests and demos, scripted per request.

    It serves from construction on, with the shapes, statuses and error texts
    of Ollama's source. A chat or generate plays the next queued script, else
    ``default_reply``; an embed answers ``embedding()`` vectors; pull, push and
    create stream progress; show, tags and ps answer from ``models``.

    Example::

        with FakeOllama() as server:
            server.enqueue(reply("Hello there", thinking="Greet them."))
            client = StreamingClient(server.url)

    Before any script it checks as Ollama does. A model declared with
    ``capabilities`` refuses ``think``, ``tools`` or chat it lacks, in the
    server's words. A prompt (``count_tokens(chat_prompt(...))``) must fit its
    ``num_ctx`` (the request's, the model's ``parameters``', else 4096, at most
    its ``context_length``): a chat drops old messages silently, keeping system
    ones and the last; one that still does not fit, or with ``"truncate":
    false``, gets llama-server's 400, unless ``context_shift`` (always on
    generate) keeps ``num_keep`` tokens and the tail.

    Args:
        host: the loopback address to bind (``"::1"`` for IPv6).
        port: the port; 0 picks a free one.
        models: as the attribute.
        version: what ``/api/version`` answers.
        tls: serve https with a throwaway CA (needs ``trustme``).
        content_encoding: ``"gzip"`` or ``"deflate"`` to encode every body.
        unknown_models: as the attribute.
        context_shift: shift chat prompts that do not fit instead of refusing
            them, as Ollama does for models it renders with its own templates.

    Attributes:
        models: the pulled models: names, or dicts with a ``name`` and any of
            ``capabilities``, ``context_length``, ``embedding_length``,
            ``details``, ``model_info``, ``parameters`` (``{"num_ctx": 8192}``),
            or fields ``/api/show`` answers as given. One not listed accepts all.
        loaded: what ``/api/ps`` lists (names, or dicts of fields to show); an
            answered request loads its model for its ``keep_alive`` (0 unloads).
        unknown_models: names the registry lacks: a pull of one fails.
        default_reply: what a chat or generate plays with no script queued.
        requests: every GET and POST received, as ``RecordedRequest``, in order.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        models: Sequence[Entry] = ("fake-model",),
        version: str = "0.13.0-fake",
        tls: bool = False,
        content_encoding: str | None = None,
        unknown_models: Sequence[str] = (),
        context_shift: bool = False,
    ) -> None:
        if content_encoding not in (None, "identity", "gzip", "deflate"):
            raise ValueError(f"unknown content encoding {content_encoding!r}")
        self.version = version
        self.content_encoding = content_encoding
        self.context_shift = context_shift
        self.default_reply: Script = reply("Hello from the fake Ollama server.")
        # Guards the queues, the model lists and every count (an RLock inside,
        # so a wait_for predicate may read them through the public methods).
        self._cond = threading.Condition()
        self._queues: dict[str | None, deque[Script]] = {}
        self.models: list[Entry] = list(models)
        self.loaded: list[Entry] = []
        self.unknown_models: set[str] = set(unknown_models)
        self.requests: list[RecordedRequest] = []
        self._registry = Registry(self, self._cond)
        self._tls = TLSMaterial(("127.0.0.1", "localhost", "::1")) if tls else None
        context = self._tls.server_context if self._tls else None
        app = Endpoints(self, self._registry)
        try:
            self._http = LoopbackServer(
                (host, port), context, self._cond, app, self.requests
            )
        except BaseException:
            if self._tls is not None:
                self._tls.remove()  # no server, so no close() to remove it later
            raise
        self._closed = False

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:54321`` (``https://`` with TLS)."""
        host, port = self._http.server_address[:2]
        host = f"[{host!s}]" if ":" in str(host) else str(host)
        scheme = "https" if self._tls is not None else "http"
        return f"{scheme}://{host}:{port}"

    @property
    def ca_file(self) -> str:
        """The CA's PEM file, for ``requests`` (``verify=server.ca_file``).

        Raises:
            RuntimeError: the server was made without ``tls=True``.
        """
        if self._tls is None:
            raise RuntimeError("ca_file: this FakeOllama serves plain http (tls=False)")
        return self._tls.ca_file

    def client_ssl_context(self) -> ssl.SSLContext:
        """A new ``ssl.SSLContext`` trusting this server, for httpx and the SDK.

        Raises:
            RuntimeError: the server was made without ``tls=True``.
        """
        if self._tls is None:
            raise RuntimeError("client_ssl_context: this FakeOllama serves plain http")
        return self._tls.client_context()

    def start(self) -> FakeOllama:
        """Return self: the server serves from construction on."""
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Stop serving, end every response, join every thread (within ``timeout``).

        Closing again does nothing."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
        self._http.close(timeout)
        if self._tls is not None:
            self._tls.remove()

    def __enter__(self) -> FakeOllama:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def enqueue(self, *scripts: Sequence[Step], endpoint: str | None = None) -> None:
        """Queue scripts; each matching request plays the next one.

        Without ``endpoint``, chat and generate requests share them, in order.
        With ``endpoint`` (``"chat"``, ``"generate"``, ``"embed"``, ``"pull"``,
        ``"push"``, ``"create"``, or its path) they go to that endpoint's own
        queue, played first. An embed plays its script's faults, then answers.

        Raises:
            ValueError: an unknown endpoint, or a step that can never play
                where it is (``Status``, ``Body`` or ``ContentEncoding`` after
                output).
        """
        key = None if endpoint is None else endpoint_path(endpoint, SCRIPTED)
        checked = [check_script(s) for s in scripts]
        with self._cond:
            self._queues.setdefault(key, deque()).extend(checked)

    def release(self) -> None:
        """End every current ``Stall`` (each stream then goes on with its script)."""
        self._http.release()

    @property
    def open_connections(self) -> int:
        """Client connections the server currently holds open."""
        with self._cond:
            return self._http.open

    @property
    def disconnects_seen(self) -> int:
        """How many stalled responses saw their client hang up."""
        with self._cond:
            return self._http.disconnects

    def in_flight(self, endpoint: str) -> int:
        """Requests to ``endpoint`` being answered right now, stalled ones too.

        ``endpoint`` is a POST endpoint's short name (``"chat"``, ``"embed"``...)
        or path: ``server.wait_for(lambda s: s.in_flight("embed") == 2)``.
        """
        path = endpoint_path(endpoint)
        with self._cond:
            return self._http.in_flight[path]

    def peak_in_flight(self, endpoint: str) -> int:
        """The most requests to ``endpoint`` ever answered at once (``in_flight``).

        Example: ``assert server.peak_in_flight("chat") <= 4  # never more``.
        """
        path = endpoint_path(endpoint)
        with self._cond:
            return self._http.peak[path]

    def wait_for(
        self, predicate: Callable[[FakeOllama], bool], timeout: float = 5.0
    ) -> bool:
        """Wait until ``predicate(self)`` is true; False if ``timeout`` passes first.

        It is re-checked on every server event (a request, a connection, a
        stall, a hang-up, a model loaded), under the server's lock: keep it
        short, and call no blocking server method from it.

        Example: ``assert server.wait_for(lambda s: s.disconnects_seen == 1)``.
        """
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)

    def wait_stalled(self, count: int = 1, timeout: float = 5.0) -> bool:
        """Wait until ``count`` responses are in a ``Stall``: once the SERVER has
        written all before it, not once a client has shown it (wait on that)."""
        return self.wait_for(lambda s: len(s._http.stalled) >= count, timeout)

    def wait_closed(self, timeout: float = 5.0) -> bool:
        """Wait until no client connection is open."""
        return self.wait_for(lambda s: s._http.open == 0, timeout)

    def stream_requests(self) -> list[RecordedRequest]:
        """The chat and generate requests received so far, in arrival order."""
        with self._cond:
            return [
                r
                for r in self.requests
                if r.method == "POST" and r.path.split("?")[0] in (CHAT, GENERATE)
            ]

    def _next_script(
        self, path: str, body: Mapping[str, Any] | None = None
    ) -> Script | None:
        """The next script for ``path`` (``body``: for a subclass that picks scripts
        by model); None: the default answer."""
        keys = (path, None) if path in (CHAT, GENERATE) else (path,)
        with self._cond:
            for key in keys:
                queue = self._queues.get(key)
                if queue:
                    return queue.popleft()
        return None


@contextlib.contextmanager
def serve(*scripts: Sequence[Step], **options: Any) -> Iterator[FakeOllama]:
    """Start a ``FakeOllama`` with scripts queued, and stop it afterwards.

    Keyword arguments go to ``FakeOllama``:
    ``with serve(reply("One."), models=["m"]) as server: ...``.
    """
    with FakeOllama(**options) as server:
        server.enqueue(*scripts)
        yield server
