"""Stream Ollama chats from synchronous code: worker threads, callbacks, instant cancel.

Example::

    from ollama_stream_sync import StreamingClient

    with StreamingClient() as client:
        messages = [{"role": "user", "content": "Hi"}]
        for text in client.stream_chat("qwen3", messages).text():
            print(text, end="")
"""

import logging as _logging

from ._batch import BatchHandle
from ._client import StreamingClient
from ._context import ContextTruncatedWarning, ModelInfo
from ._conversation import Conversation
from ._dispatch import (
    CallLaterDispatcher,
    Dispatcher,
    DispatcherClosed,
    InlineDispatcher,
    QueueDispatcher,
)
from ._errors import (
    AuthenticationRequired,
    CallbackError,
    CapabilityError,
    ConnectionFailed,
    ContextLengthExceeded,
    DispatchError,
    ModelNotFound,
    OutputValidationError,
    ProtocolError,
    RateLimited,
    ServerError,
    StreamError,
    StreamTimeout,
    ToolRoundsExceeded,
)
from ._events import (
    Content,
    Done,
    Partial,
    Phase,
    PhaseName,
    Reset,
    Retry,
    StreamEvent,
    Thinking,
    ToolCall,
    ToolResult,
    Trim,
    Warn,
)
from ._gui import QtDispatcher, TkDispatcher
from ._handle import BaseHandle, ProgressHandle, StreamHandle
from ._hosts import HostHealth, Router
from ._models import LoadedModel
from ._options import (
    CallOptions,
    ConversationOptions,
    EmbedOptions,
    MapOptions,
    ModelOptions,
    Settings,
)
from ._request import ServedModelWarning, ToolSchemaWarning, UnknownOptionWarning
from ._result import BatchProgress, ChatResult, EmbedResult, ModelResult, Progress
from ._retry import RetryPolicy
from ._stream import ChatStream

# A library never prints on its own: warnings go nowhere until the
# application configures logging (the logging HOWTO's advice for libraries).
_logging.getLogger("ollama_stream_sync").addHandler(_logging.NullHandler())

__all__ = [
    "AuthenticationRequired",
    "BaseHandle",
    "BatchHandle",
    "BatchProgress",
    "CallLaterDispatcher",
    "CallOptions",
    "CallbackError",
    "CapabilityError",
    "ChatResult",
    "ChatStream",
    "ConnectionFailed",
    "Content",
    "ContextLengthExceeded",
    "ContextTruncatedWarning",
    "Conversation",
    "ConversationOptions",
    "DispatchError",
    "Dispatcher",
    "DispatcherClosed",
    "Done",
    "EmbedOptions",
    "EmbedResult",
    "HostHealth",
    "InlineDispatcher",
    "LoadedModel",
    "MapOptions",
    "ModelInfo",
    "ModelNotFound",
    "ModelOptions",
    "ModelResult",
    "OutputValidationError",
    "Partial",
    "Phase",
    "PhaseName",
    "Progress",
    "ProgressHandle",
    "ProtocolError",
    "QtDispatcher",
    "QueueDispatcher",
    "RateLimited",
    "Reset",
    "Retry",
    "RetryPolicy",
    "Router",
    "ServedModelWarning",
    "ServerError",
    "Settings",
    "StreamError",
    "StreamEvent",
    "StreamHandle",
    "StreamTimeout",
    "StreamingClient",
    "Thinking",
    "TkDispatcher",
    "ToolCall",
    "ToolResult",
    "ToolRoundsExceeded",
    "ToolSchemaWarning",
    "Trim",
    "UnknownOptionWarning",
    "Warn",
]
