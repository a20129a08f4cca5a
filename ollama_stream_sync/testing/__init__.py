"""Test your Ollama app without Ollama: a scripted loopback server and a pytest fixture.

Example::

    with FakeOllama() as server:
        server.enqueue(reply("Paris.", thinking="The capital of France."))
        result = StreamingClient(server.url).chat("any", messages)

A ``Script`` is a list of ``Step`` objects (``Chunk``, ``DoneLine``...) that one
response plays; builders (``reply``, ``pull_script``...) make realistic ones.
"""

from ._http import RecordedRequest
from ._runner import chat_prompt, count_tokens, embedding
from ._scripts import (
    Body,
    Bytes,
    Chunk,
    ContentEncoding,
    Cut,
    Delay,
    Done,
    DoneLine,
    ErrorLine,
    Progress,
    ProgressLine,
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
from ._server import FakeOllama, serve

__all__ = [
    "Body",
    "Bytes",
    "Chunk",
    "ContentEncoding",
    "Cut",
    "Delay",
    "Done",
    "DoneLine",
    "ErrorLine",
    "FakeOllama",
    "Progress",
    "ProgressLine",
    "Raw",
    "RecordedRequest",
    "Script",
    "Stall",
    "Status",
    "Step",
    "chat_prompt",
    "count_tokens",
    "create_script",
    "embedding",
    "http_error",
    "pull_not_found_script",
    "pull_script",
    "push_script",
    "reply",
    "serve",
    "tool_call",
]
