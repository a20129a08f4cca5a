"""Streaming over a caller's ``requests.Session``: their proxies, CA bundle, auth.

Legacy and corporate code often has a configured session (a proxy, a CA bundle,
Kerberos or NTLM auth, mounted adapters) that httpx knows nothing of. This
transport sends our requests through it, untouched.

Cancel must reach the socket before the response headers too (a model loading),
and we cannot change the session's adapters. Python's audit events (PEP 578)
``socket.connect`` (while connecting) and ``http.client.send`` (every request,
on new and reused pooled connections, whatever the adapter) fire on the worker
thread; a hook, installed once when the first such transport is built, attaches
the socket to the thread's ``AbortScope`` when one is bound, and does nothing
otherwise. Once headers arrived, the response's own socket is attached as well.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import requests
import urllib3

from ollama_stream_sync._abort import FdSocket, current_scope
from ollama_stream_sync._errors import translate
from ollama_stream_sync._ndjson import error_from_body

from ._base import MAX_ERROR_BODY, is_loopback

READ_SIZE = 65536

_hook_lock = threading.Lock()
_hook_installed = False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "http.client.send":
        # Every request, on a new or a reused pooled connection: the
        # connection object carries its live socket (TLS included).
        scope = current_scope()
        sock = getattr(args[0], "sock", None)
        if scope is not None and isinstance(sock, socket.socket):
            scope.attach_if_new(sock)
    elif event == "socket.connect":
        # While connecting (before http.client.send can fire).
        scope = current_scope()
        sock = args[0]
        if scope is not None and isinstance(sock, socket.socket):
            # Kept by descriptor: TLS wrapping detaches this very object later.
            scope.attach(FdSocket(sock.fileno()))


def install_connect_hook() -> None:
    """Install the audit hook once per process (hooks cannot be removed)."""
    global _hook_installed  # noqa: PLW0603  # once per process, on first use
    with _hook_lock:
        if not _hook_installed:
            sys.addaudithook(_audit)
            _hook_installed = True


class _RequestsOpenStream:
    __slots__ = ("_response",)

    def __init__(self, response: requests.Response) -> None:
        self._response = response

    def __iter__(self) -> Iterator[bytes]:
        read1 = self._response.raw.read1
        try:
            while True:
                data = read1(READ_SIZE)
                if not data:
                    return
                yield data
        except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as e:
            raise translate(e) from e

    def close(self) -> None:
        self._response.close()


class RequestsStreamTransport:
    """Our ``Transport`` over a ``requests.Session`` the caller configured."""

    def __init__(
        self,
        session: requests.Session,
        base_url: str,
        headers: Mapping[str, str],
    ) -> None:
        install_connect_hook()
        self._session = session
        self._base = base_url.rstrip("/")
        # The SDK's headers (User-Agent, OLLAMA_API_KEY as Authorization) unless
        # the session sets its own: its auth and headers win.
        self._headers = {
            k: v
            for k, v in headers.items()
            if k.lower() not in {h.lower() for h in session.headers}
            and not (k.lower() == "authorization" and session.auth is not None)
        }
        self._headers["Accept"] = "application/x-ndjson"
        self._headers["Content-Type"] = "application/json"
        host = urllib3.util.parse_url(self._base).host or ""
        # A proxy never makes sense for a loopback Ollama (proxy variables would
        # otherwise divert it); blank entries override the environment's.
        self._proxies = {"http": "", "https": ""} if is_loopback(host) else None

    def open(
        self, path: str, body: dict[str, Any], *, connect_timeout: float | None
    ) -> _RequestsOpenStream:
        try:
            response = self._session.post(
                self._base + path,
                data=json.dumps(body, ensure_ascii=False).encode(),
                headers=self._headers,
                stream=True,
                # Silences between chunks are policed by our own timers.
                timeout=(connect_timeout, None),
                proxies=self._proxies,
            )
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            raise translate(exc) from exc
        try:
            if response.status_code >= 300:
                raise error_from_body(
                    response.status_code,
                    _read_bounded(response),
                    response.reason or "",
                    retry_after=response.headers.get("Retry-After"),
                )
            _attach_response_socket(response)
        except BaseException:
            response.close()
            raise
        return _RequestsOpenStream(response)

    def get_json(self, path: str, *, timeout: float | None) -> Any:
        try:
            response = self._session.get(
                self._base + path, timeout=timeout, proxies=self._proxies
            )
            response.raise_for_status()
            return response.json()
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            raise translate(exc) from exc
        except ValueError as exc:
            raise translate(exc) from exc


def _read_bounded(response: requests.Response) -> bytes:
    with contextlib.suppress(requests.RequestException, urllib3.exceptions.HTTPError):
        return bytes(response.raw.read(MAX_ERROR_BODY, decode_content=True) or b"")
    return b""


def _attach_response_socket(response: requests.Response) -> None:
    connection = getattr(response.raw, "connection", None)
    sock = getattr(connection, "sock", None)
    scope = current_scope()
    if scope is not None and isinstance(sock, socket.socket):
        scope.attach(sock)
