"""Stream Ollama chats from synchronous code: worker threads, callbacks, instant cancel.

Example::

    from ollama_stream_sync import StreamingClient

    with StreamingClient() as client:
        result = client.chat("qwen3", [{"role": "user", "content": "Hi"}],
                             on_content=lambda t: print(t, end=""))
"""

from ._client import StreamingClient
from ._conversation import Conversation
from ._dispatch import (
    CallLaterDispatcher,
    Dispatcher,
    InlineDispatcher,
    QtDispatcher,
    QueueDispatcher,
    TkDispatcher,
)
from ._errors import (
    CallbackError,
    ConnectionFailed,
    ModelNotFound,
    ProtocolError,
    ServerError,
    StreamError,
    StreamTimeout,
    ToolRoundsExceeded,
)
from ._handle import StreamHandle
from ._hosts import HostHealth
from ._result import ChatResult
from ._retry import RetryPolicy

__all__ = [
    "CallLaterDispatcher",
    "CallbackError",
    "ChatResult",
    "ConnectionFailed",
    "Conversation",
    "Dispatcher",
    "HostHealth",
    "InlineDispatcher",
    "ModelNotFound",
    "ProtocolError",
    "QtDispatcher",
    "QueueDispatcher",
    "RetryPolicy",
    "ServerError",
    "StreamError",
    "StreamHandle",
    "StreamTimeout",
    "StreamingClient",
    "TkDispatcher",
    "ToolRoundsExceeded",
]
