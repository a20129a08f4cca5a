"""Test your Ollama app without Ollama: a scripted loopback server and a pytest fixture.

Example::

    from ollama_stream_sync.testing import FakeOllama, reply

    with FakeOllama() as server:
        server.enqueue(reply("Paris.", thinking="The capital of France."))
        client = StreamingClient(server.url)
        result = client.chat("any", [{"role": "user", "content": "?"}])

A ``Script`` is a list of ``Step`` objects that one response plays in order;
``Step`` is any one of the step classes (``Chunk``, ``Done``, ``Progress``,
``Raw``, ``Bytes``, ``ErrorLine``, ``Status``, ``Body``, ``ContentEncoding``,
``Delay``, ``Stall``, ``Cut``). The builders (``reply``, ``http_error``,
``pull_script``, ``push_script``, ``create_script``, ``pull_not_found_script``)
return scripts; ``FakeOllama.enqueue`` queues them, per endpoint if asked.
"""

from ._server import FakeOllama, RecordedRequest, serve
from ._steps import (
    Body,
    Bytes,
    Chunk,
    ContentEncoding,
    Cut,
    Delay,
    Done,
    ErrorLine,
    Progress,
    Raw,
    Script,
    Stall,
    Status,
    Step,
    create_script,
    http_error,
    pull_not_found_script,
    pull_script,
    push_script,
    reply,
    tool_call,
)

__all__ = [
    "Body",
    "Bytes",
    "Chunk",
    "ContentEncoding",
    "Cut",
    "Delay",
    "Done",
    "ErrorLine",
    "FakeOllama",
    "Progress",
    "Raw",
    "RecordedRequest",
    "Script",
    "Stall",
    "Status",
    "Step",
    "create_script",
    "http_error",
    "pull_not_found_script",
    "pull_script",
    "push_script",
    "reply",
    "serve",
    "tool_call",
]
