"""Every use of another library's private parts, each because no public API exists.

``tests/test_architecture.py`` pins each one against the installed versions, so
an upgrade that breaks it fails loudly there instead of quietly here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import ollama


def sdk_http_client(sdk: ollama.Client) -> httpx.Client:
    """The ``httpx.Client`` inside an ``ollama.Client``.

    Private (``Client._client``): the SDK offers no accessor, and streaming
    through it keeps the SDK's host parsing, headers and ``OLLAMA_API_KEY``.
    """
    http = getattr(sdk, "_client", None)
    if not isinstance(http, httpx.Client):
        raise TypeError("client must be a synchronous ollama.Client")
    return http


def function_tool(fn: Callable[..., Any]) -> dict[str, Any]:
    """A Python function as a tool schema, by the SDK's own conversion.

    Private (``ollama._utils.convert_function_to_tool``): public only inside
    ``Client.chat``, which we do not call.
    """
    from ollama._utils import convert_function_to_tool  # noqa: PLC0415

    return dict(
        convert_function_to_tool(fn).model_dump(exclude_none=True, by_alias=True)
    )


NEW_CONN = "_new_conn"
"""urllib3's ``HTTPConnection._new_conn``, which creates the socket: the one
place where a cancel can claim it before ``connect()`` blocks (urllib3 has no
public hook there). ``_requests.py`` overrides it by this name."""


def drop_idle(pool: Any, keep: type[Any]) -> None:
    """Close ``pool``'s idle connections that are not of class ``keep``.

    Private (``HTTPConnectionPool.pool``, its ``queue`` and ``mutex``):
    connections a session made before we tracked its pool cannot be reached
    by a cancel while they wait for a model; the pool then makes tracked ones
    in their place (a ``None`` slot is how urllib3 marks "make a new one").
    """
    queue = getattr(pool, "pool", None)
    mutex = getattr(queue, "mutex", None)
    if queue is None or mutex is None:
        return
    with mutex:
        idle = queue.queue
        stale = [
            i
            for i, conn in enumerate(idle)
            if conn is not None and not isinstance(conn, keep)
        ]
        for i in stale:
            conn, idle[i] = idle[i], None
            conn.close()


def forget_pool(raw: Any) -> None:
    """Cut a finished urllib3 response's link to its pool.

    Private (``HTTPResponse._pool``): a kept error's traceback keeps the
    response, and since urllib3 2 a pool closes its idle connections only once
    nothing references it, not on ``session.close()``.
    """
    if raw is not None and hasattr(raw, "_pool"):
        raw._pool = None
