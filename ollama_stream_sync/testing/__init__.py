"""Test your Ollama app without Ollama: a scripted loopback server and a pytest fixture.

``FakeOllama`` answers like Ollama; a ``Script`` (a list of ``Step`` objects such
as ``Chunk`` and ``DoneLine``, or a builder's: ``reply``...) says what one
response plays: ``server.enqueue(reply("Paris.", thinking="France."))``.
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
    Done,  # noqa: F401  # the old name of DoneLine, still imported by scripts
    DoneLine,
    ErrorLine,
    Progress,  # noqa: F401  # the old name of ProgressLine
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
    "DoneLine",
    "ErrorLine",
    "FakeOllama",
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
