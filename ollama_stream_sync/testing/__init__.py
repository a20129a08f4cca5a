"""Test your Ollama app without Ollama: a scripted loopback server and a pytest fixture.

Example::

    from ollama_stream_sync.testing import FakeOllama, reply

    with FakeOllama() as server:
        server.enqueue(reply("Paris.", thinking="The capital of France."))
        client = StreamingClient(server.url)
        result = client.chat("any", [{"role": "user", "content": "?"}])

A ``Script`` is a list of ``Step`` objects that one response plays in order;
``Step`` is any one of the step classes (``Chunk``, ``DoneLine``,
``ProgressLine``, ``Raw``, ``Bytes``, ``ErrorLine``, ``Status``, ``Body``,
``ContentEncoding``, ``Delay``, ``Stall``, ``Cut``; ``Done`` and ``Progress``
are the old names of ``DoneLine`` and ``ProgressLine``). The builders
(``reply``, ``http_error``, ``pull_script``, ``push_script``,
``create_script``, ``pull_not_found_script``) return scripts;
``FakeOllama.enqueue`` queues them, per endpoint if asked. ``count_tokens``,
``chat_prompt`` and ``embedding`` say what the server counts and answers.
"""

from ._http import RecordedRequest
from ._runner import chat_prompt, count_tokens, embedding
from ._scripts import (
    create_script,
    http_error,
    pull_not_found_script,
    pull_script,
    push_script,
    reply,
    tool_call,
)
from ._server import FakeOllama, serve
from ._steps import (
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
)

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
