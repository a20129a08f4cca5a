"""Test your Ollama app without Ollama: a scripted loopback server and a pytest fixture.

Example::

    from ollama_stream_sync.testing import FakeOllama, reply

    with FakeOllama() as server:
        server.enqueue(reply("Paris.", thinking="The capital of France."))
        client = StreamingClient(server.url)
        result = client.chat("any", [{"role": "user", "content": "?"}])
"""

from ._server import (
    Chunk,
    Cut,
    Delay,
    Done,
    ErrorLine,
    FakeOllama,
    Raw,
    RecordedRequest,
    Script,
    Stall,
    Status,
    Step,
    http_error,
    reply,
    serve,
    tool_call,
)

__all__ = [
    "Chunk",
    "Cut",
    "Delay",
    "Done",
    "ErrorLine",
    "FakeOllama",
    "Raw",
    "RecordedRequest",
    "Script",
    "Stall",
    "Status",
    "Step",
    "http_error",
    "reply",
    "serve",
    "tool_call",
]
