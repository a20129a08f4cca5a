"""The ways of reading one stream that the benchmarks race against each other.

Each contender is one blocking call, ``run(model, sink)``: it streams the chat
``model`` names from the benchmark server and hands every content delta to
``sink``, as a user's code would. The sink is the same for every contender (a
list's ``append``), so the user's own work is the same on every side.

The baseline is the bare SDK loop the ollama docs show. The reference row
``raw socket`` reads the bytes and parses nothing: it shows what the server and
the kernel can deliver (if a contender comes close to it, the server is the
limit, not the client).
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import ollama
import requests
from _harness import USER

from ollama_stream_sync import (
    CallLaterDispatcher,
    QueueDispatcher,
    StreamingClient,
)

log = logging.getLogger("benchmarks")

Sink = Callable[[str], object]
RunStream = Callable[[str, Sink], None]

COALESCE = 0.03
"""The coalesce interval the issue's queued-dispatcher target names (seconds)."""

BASELINE = "bare"
ALL_KEYS = ("raw", "bare", "httpx", "session", "queue", "calllater", "iterator")
"""Every contender, in the order the tables list them."""


@dataclass
class Contender:
    """One way of reading a stream; ``verify`` is False when it parses nothing."""

    key: str
    label: str
    run: RunStream
    verify: bool = True
    reference: bool = False
    """Shown for context, never compared with a target."""


def has_iterator() -> bool:
    """Whether this version of the library has the iterator API (``stream_chat``)."""
    return hasattr(StreamingClient, "stream_chat")


class CallLaterThread:
    """A plain thread standing in for a GUI toolkit's loop.

    ``call_later(fn)`` queues ``fn`` to run on this thread, as ``wx.CallAfter``
    or ``GLib.idle_add`` would; it is what a ``CallLaterDispatcher`` is built on.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Callable[[], object] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(
            target=self._loop, name="bench-call-later", daemon=True
        )
        self._thread.start()

    def call_later(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` on this thread soon (safe from any thread)."""
        self._queue.put(fn)

    def _loop(self) -> None:
        while True:
            fn = self._queue.get()
            if fn is None:
                return
            try:
                fn()
            except Exception:  # a toolkit loop survives one bad callback too
                log.exception("call-later callback raised")

    def close(self) -> None:
        """Stop the thread and wait for it (bounded)."""
        self._queue.put(None)
        self._thread.join(10)


class RawSocketReader:
    """Reads a whole response off one keep-alive socket, parsing nothing.

    The chunked stream ends with ``\\r\\n0\\r\\n\\r\\n``: that tail cannot occur
    earlier, because no chunk size starts with a zero.
    """

    _END = b"\r\n0\r\n\r\n"

    def __init__(self, port: int) -> None:
        self._port = port
        self._sock: socket.socket | None = None
        self._buf = bytearray(262144)

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self._port), timeout=120)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        return sock

    def run(self, model: str, sink: Sink) -> None:
        """Send one chat request and read its response to the end."""
        sock = self._sock or self._connect()
        body = json.dumps({"model": model, "messages": USER, "stream": True}).encode()
        sock.sendall(
            b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)
        )
        view = memoryview(self._buf)
        tail = b""
        while True:
            got = sock.recv_into(self._buf)
            if not got:
                raise ConnectionError("server closed the connection mid-response")
            tail = (tail + bytes(view[max(0, got - 7) : got]))[-7:]
            if tail == self._END:
                return

    def close(self) -> None:
        """Close the socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def bare_sdk_loop(sdk: ollama.Client) -> RunStream:
    """The loop the ollama docs show, handing each content delta to the sink."""

    def run(model: str, sink: Sink) -> None:
        for part in sdk.chat(model, USER, stream=True):
            content = part.message.content
            if content:
                sink(content)

    return run


def chat_with_callback(client: StreamingClient, **kwargs: Any) -> RunStream:
    """``client.chat(..., on_content=sink)``: the blocking call with a callback."""

    def run(model: str, sink: Sink) -> None:
        client.chat(model, USER, on_content=sink, **kwargs)

    return run


def chat_delivered(client: StreamingClient, **kwargs: Any) -> RunStream:
    """``start_chat`` with a GUI-style dispatcher, waiting for ``on_done``.

    A blocking ``chat()`` made off the dispatcher's own thread returns when the
    stream ends, before the toolkit has run the callbacks: a program that needs
    them waits for ``on_done``, as this does.
    """

    def run(model: str, sink: Sink) -> None:
        delivered = threading.Event()
        handle = client.start_chat(
            model,
            USER,
            on_content=sink,
            on_done=lambda _: delivered.set(),
            on_error=lambda _: delivered.set(),
            **kwargs,
        )
        if not delivered.wait(60):
            raise TimeoutError("on_done was not delivered")
        handle.result()

    return run


def iterate(client: StreamingClient) -> RunStream:
    """``for text in client.stream_chat(...).text()``: the iterator API."""

    def run(model: str, sink: Sink) -> None:
        # Typed loosely: the API is newer than some versions this suite measures.
        loose: Any = client
        stream: Any = loose.stream_chat(model, USER)
        with contextlib.ExitStack() as stack:
            if hasattr(stream, "__enter__"):
                stream = stack.enter_context(stream)
            elif hasattr(stream, "close"):
                stack.callback(stream.close)
            for text in stream.text():
                sink(text)

    return run


LABELS = {
    "raw": "raw socket, no parsing (reference)",
    "bare": "bare SDK loop",
    "httpx": "chat(on_content=) httpx",
    "session": "chat(on_content=) session=",
    "queue": f"QueueDispatcher coalesce={COALESCE}",
    "calllater": f"CallLaterDispatcher coalesce={COALESCE}",
    "iterator": "stream_chat() iterator .text()",
}


class Contenders:
    """The contenders of one section, with the clients they need, closed together."""

    def __init__(self, url: str, port: int, keys: Sequence[str]) -> None:
        self._stack = contextlib.ExitStack()
        self.items: list[Contender] = []
        self.unavailable: list[str] = []
        client: StreamingClient | None = None
        for key in keys:
            if key == "raw":
                reader = RawSocketReader(port)
                self._stack.callback(reader.close)
                self._add(key, reader.run, verify=False, reference=True)
            elif key == "bare":
                sdk = ollama.Client(url)
                self._stack.callback(sdk.close)
                self._add(key, bare_sdk_loop(sdk))
            elif key == "session":
                session = requests.Session()
                self._stack.callback(session.close)
                via = self._stack.enter_context(StreamingClient(url, session=session))
                self._add(key, chat_with_callback(via))
            elif key == "iterator" and not has_iterator():
                self.unavailable.append(f"{LABELS[key]}: not available in this version")
            else:
                if client is None:
                    client = self._stack.enter_context(StreamingClient(url))
                self._add_on_client(key, client)

    def _add_on_client(self, key: str, client: StreamingClient) -> None:
        if key == "httpx":
            self._add(key, chat_with_callback(client))
        elif key == "queue":
            pump = QueueDispatcher()
            self._add(
                key,
                chat_with_callback(client, dispatcher=pump, coalesce_interval=COALESCE),
            )
        elif key == "calllater":
            loop = CallLaterThread()
            self._stack.callback(loop.close)
            dispatcher = CallLaterDispatcher(loop.call_later)
            self._add(
                key,
                chat_delivered(
                    client, dispatcher=dispatcher, coalesce_interval=COALESCE
                ),
            )
        elif key == "iterator":
            self._add(key, iterate(client))
        else:
            raise ValueError(f"unknown contender {key!r}")

    def _add(
        self, key: str, run: RunStream, *, verify: bool = True, reference: bool = False
    ) -> None:
        self.items.append(Contender(key, LABELS[key], run, verify, reference))

    def close(self) -> None:
        """Close every client, session, socket and thread the contenders own."""
        self._stack.close()

    def __enter__(self) -> Contenders:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
