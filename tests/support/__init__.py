"""What the tests share: import it from here (``from .support import USER``), never
from ``conftest.py``, which only registers fixtures.

- ``clients``: ``MakeClient`` (a client on the transport under test), ``Recorder``
  (every callback of a stream), ``bounded``, ``in_function``, ``assert_all_closed``.
- ``memory``: the in-memory transport, for engine logic without a socket.
- ``hostile``: a raw-socket server that misbehaves byte by byte.
- ``sockets``: ports that refuse or never accept, ``Tarpit`` (accepts, never
  answers), ``raw_exchange`` (a response as framed on the wire).
- ``gui``: Xvfb, Tk and Qt fixtures and event-loop helpers.
- ``network``, ``programs``: real tinyproxy, nginx and microsocks.
"""

from __future__ import annotations

USER = [{"role": "user", "content": "Hello?"}]
"""The one message most chats send."""

WAIT = 5.0
"""Every wait in the suite is bounded by this; none is a timing assertion."""
