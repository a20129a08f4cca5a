"""A multi-turn chat that keeps its history right and runs the model's tool calls."""

from __future__ import annotations

import copy
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ollama
from pydantic import BaseModel

from . import _options
from ._cancel import Cancelled, unbound
from ._client import StreamingClient
from ._context import ContextArg, Window, check_capabilities
from ._errors import StreamError, ToolRoundsExceeded
from ._events import ToolResult
from ._handle import StreamHandle
from ._observe import CallInfo, Observer, ToolRun
from ._options import ConversationOptions, Unpack
from ._request import MessageLike, chat_body, encode_body, encode_message, encode_tool
from ._result import ChatResult
from ._run import StreamContext, deadline_error, run_stream
from ._state import ChatState
from ._stream import blocking, streaming
from ._structured import FormatArg, FormatSpec, finish

log = logging.getLogger("ollama_stream_sync")

ToolSpec = (
    Callable[..., Any]
    | Mapping[str, Any]
    | ollama.Tool
    | tuple[Mapping[str, Any] | ollama.Tool, Callable[..., Any]]
)
"""A Python function, a schema (dict or ``ollama.Tool``), or ``(schema, function)``."""

CANCELLED_TOOL_RESULT = "Error: cancelled by the user before this tool ran."
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110's token
_SAVED_SETTINGS = (  # from_json passes them back (one not saved: the default)
    "think options format keep_alive max_tool_rounds context history_limit "
    "session_header"
).split()


def _tool_table(
    tools: Sequence[ToolSpec],
) -> tuple[list[dict[str, Any]], dict[str, Callable[..., Any] | None]]:
    schemas: list[dict[str, Any]] = []
    table: dict[str, Callable[..., Any] | None] = {}
    for spec in tools:
        impl: Callable[..., Any] | None
        if isinstance(spec, tuple):
            schema, impl = encode_tool(spec[0]), spec[1]
        elif isinstance(spec, (Mapping, BaseModel)):
            schema, impl = encode_tool(spec), None
        else:
            schema, impl = encode_tool(spec), spec
        name = (schema.get("function") or {}).get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"a tool schema needs function.name: {schema!r:.200}")
        if name in table:
            raise ValueError(f"two tools are named {name!r}")
        schemas.append(schema)
        table[name] = impl
    return schemas, table


def _tool_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return str(value)


class Conversation:
    """A chat that keeps its history and runs the model's tool calls for you.

    Assistant turns go into ``messages`` with their thinking and tool calls, tool
    results follow as ``{"role": "tool", ...}`` messages, and the model is asked
    again until it answers without tools (or ``max_tool_rounds`` is reached).

    Example::

        conv = Conversation(client, "qwen3", system="Be brief.", tools=[get_weather])
        reply = conv.send("Weather in Paris and Tokyo?", on_content=print_delta)
        conv.messages  # user, assistant (thinking + tool_calls), tool, tool, assistant
    """

    def __init__(
        self,
        client: StreamingClient,
        model: str,
        *,
        system: str | None = None,
        tools: Sequence[ToolSpec] | None = None,
        think: bool | str | None = None,
        options: Mapping[str, Any] | ollama.Options | None = None,
        format: FormatArg = None,
        keep_alive: float | str | None = None,
        max_tool_rounds: int = 8,
        context: ContextArg = None,
        history_limit: ContextArg = None,
        session_header: str | None = None,
    ) -> None:
        """Start a conversation.

        Args:
            system: a system prompt, kept as the first message.
            tools: Python functions (schema from signature and docstring, by the
                SDK's conversion), schemas (dict or ``ollama.Tool``, no
                implementation: calls get an error result), or
                ``(schema, function)`` pairs.
            think, options, keep_alive: as ``StreamingClient.chat``.
            format: ``"json"``, a JSON schema or a pydantic model class: each
                final answer's ``parsed`` holds the value (a model instance).
            max_tool_rounds: model turns with tool calls before ``ToolRoundsExceeded``.
            context: as ``StreamingClient.chat``; ``"auto"`` grows ``num_ctx`` as
                the history grows (by doublings: each change reloads the model).
            history_limit: before each request, drop the oldest turns (never
                the system prompt, never the turn being answered, never a tool
                call apart from its result) until the history fits this many
                tokens, or ``"auto"``: the context, less room for the answer.
                Dropped messages go to ``dropped``, and ``on_trim`` hears of them.
            session_header: a header (``"X-Session-ID"``) that carries ``id`` with
                every request, for a gateway that keeps a session on one upstream.

        Raises:
            TypeError, ValueError: a tool without a name, two tools with one
                name, a bad ``format``, ``context``, ``history_limit`` or
                ``session_header``, or ``max_tool_rounds`` below 0.
        """
        if not isinstance(client, StreamingClient):
            raise TypeError("client must be a StreamingClient")
        if isinstance(max_tool_rounds, bool) or not isinstance(max_tool_rounds, int):
            raise TypeError("max_tool_rounds must be an int")
        if max_tool_rounds < 0:
            raise ValueError("max_tool_rounds must be 0 or more")
        if session_header is not None and not _HEADER_NAME.fullmatch(session_header):
            raise ValueError(f"not a header name: session_header={session_header!r}")
        self._format = FormatSpec(format) if format is not None else None
        self.client, self.model, self.system = client, model, system
        self.think, self.options, self.format = think, options, format
        self.keep_alive, self.max_tool_rounds = keep_alive, max_tool_rounds
        self._window = Window(model, context, history_limit)
        self.session_header = session_header
        self._schemas, self._impls = _tool_table(list(tools or ()))
        self.id = f"conversation-{uuid.uuid4().hex}"
        """This conversation's key, unique across processes (telemetry, a
        gateway's sessions); ``to_json`` keeps it."""
        self._host: str | None = None  # served the last turn: the next stays
        # Guards _messages and _running: the worker appends while callers read.
        self._lock = threading.Lock()
        self._messages: list[dict[str, Any]] = []
        self._dropped: list[dict[str, Any]] = []
        self._running: StreamHandle | None = None
        # Every send builds its body on the worker: build one now, so that a
        # wrong setting (options="x", keep_alive=object()) raises here.
        self._body()
        if system:
            self._messages.append({"role": "system", "content": system})

    @property
    def messages(self) -> list[dict[str, Any]]:
        """A copy of the exact history sent to the model."""
        with self._lock:
            return copy.deepcopy(self._messages)

    @property
    def dropped(self) -> list[dict[str, Any]]:
        """A copy of the messages ``history_limit`` dropped, oldest first."""
        with self._lock:
            return copy.deepcopy(self._dropped)

    @property
    def running(self) -> bool:
        """Whether a ``send`` is in progress."""
        with self._lock:
            return self._running is not None and not self._running.done()

    def _append(self, *messages: dict[str, Any]) -> None:
        with self._lock:
            self._messages.extend(messages)

    def _trim(self, drop: list[int]) -> list[dict[str, Any]]:
        """Move the messages at the indexes ``drop`` to ``dropped``."""
        gone = set(drop)
        with self._lock:
            self._dropped += [m for i, m in enumerate(self._messages) if i in gone]
            self._messages = [m for i, m in enumerate(self._messages) if i not in gone]
        return self.messages

    def _body(self, num_ctx: int | None = None) -> dict[str, Any]:
        body = chat_body(
            self.model,
            self.messages,
            tools=self._schemas or None,
            think=self.think,
            format=self._format.wire if self._format is not None else None,
            options=self.options,
            keep_alive=self.keep_alive,
        )
        return self._window.sized(body, num_ctx)

    @_options.documented(ConversationOptions)
    def start_send(
        self,
        text_or_message: str | MessageLike,
        **options: Unpack[ConversationOptions],
    ) -> StreamHandle:
        """Send a user turn in the background; the handle's result is the final answer.

        Args:
            text_or_message: the user's text, or a whole message dict.
            **options: the callbacks and settings of ``StreamingClient.chat``
                plus ``on_tool_result(call, result)``. ``deadline`` covers the
                whole send, every tool round included.

        ``cancel()`` on the handle stops whichever round is running, keeping what
        was said so far in ``messages`` in a form the next ``send`` can continue.
        A failure (with ``.partial``) leaves the history as it was before the
        send; ``ToolRoundsExceeded`` when the model kept calling tools.

        Raises:
            RuntimeError: another ``send`` of this conversation is running.
        """
        _options.check(options, ConversationOptions)
        message = (
            {"role": "user", "content": text_or_message}
            if isinstance(text_or_message, str)
            else encode_message(text_or_message)
        )
        encode_body(message)  # a value JSON cannot send fails here, not on the worker
        if self.session_header is not None:  # the caller's own headers win
            headers = {self.session_header: self.id, **options.get("headers", {})}
            options["headers"] = headers
        engine = self.client._engine
        deadline = engine.option(options, "deadline")
        deadline_at = None if deadline is None else time.monotonic() + deadline
        state = ChatState()

        def job(ctx: StreamContext) -> ChatResult:
            try:
                return self._rounds(ctx, options, deadline, deadline_at)
            except ToolRoundsExceeded:
                raise  # the rounds that ran stay: a valid history to continue from
            except Exception:  # a StreamError, or a bug of ours: the send failed
                if not isinstance(ctx.scope.reason, Cancelled):
                    with self._lock:  # a failed send leaves no trace in the history
                        turns = enumerate(self._messages)  # trims moved it
                        at = next((i for i, m in turns if m is message), mark)
                        del self._messages[at:]
                raise

        with self._lock:
            if self._running is not None and not self._running.done():
                raise RuntimeError(
                    "this conversation is already sending; wait for it or cancel it"
                )
            mark = len(self._messages)
            self._messages.append(message)
            try:
                handle = engine.start(
                    StreamHandle,
                    job,
                    options,
                    state=state,
                    call=CallInfo("chat", self.model, {}, {"conversation": self.id}),
                    partial=self._format.parser if self._format is not None else None,
                )
            except BaseException:
                del self._messages[mark:]
                raise
            self._running = handle
        return handle

    send = blocking(
        start_send,
        "Send a user turn and block until the model's final answer (a ``ChatResult``).",
    )
    stream_send = streaming(
        start_send,
        "Send a user turn and return a ``ChatStream`` of every round's events,\n"
        "``ToolCall`` and ``ToolResult`` included, then ``Done(answer)``.",
    )

    def _rounds(
        self,
        ctx: StreamContext,
        options: Mapping[str, Any],
        deadline: float | None,
        deadline_at: float | None,
    ) -> ChatResult:
        state: ChatState = ctx.state
        engine, window = self.client._engine, self._window
        check = engine.option(options, "check_capabilities")
        info = (
            self.client._known(self.model, ctx) if check or window.needs_info else None
        )
        rounds = 0
        while True:
            if deadline_at is not None and time.monotonic() >= deadline_at:
                raise deadline_error(deadline)
            if check:
                check_capabilities(info, self._body())

            def send(body: dict[str, Any]) -> ChatResult:
                request = engine.request(
                    "/api/chat",
                    encode_body(body),
                    options,
                    model=self.model,
                    body=body,
                    deadline_at=deadline_at,
                    seal_on_done=lambda: state.tool_call_count == 0,
                    sticky=self._host,
                )
                state.reset()
                ctx.delivery.reset_partial()
                answer: ChatResult = run_stream(request, ctx)
                return answer

            result, cut = window.send(ctx, self._body, send, info, self._trim)
            self._host = result.host or self._host
            if result.cancelled:  # keep the partial turn; its calls "cancelled"
                if result.content or result.thinking or result.tool_calls:
                    self._append(
                        result.to_message(), *self._unrun(result, CANCELLED_TOOL_RESULT)
                    )
                return result
            if not result.tool_calls:
                final = finish(state, result, self._format, cut)
                self._append(final.to_message())
                return final
            self._append(result.to_message())
            if rounds >= self.max_tool_rounds:
                self._append(*self._unrun(result, "Error: tool round limit reached."))
                raise ToolRoundsExceeded(
                    f"the model still called tools after {rounds} rounds "
                    f"(max_tool_rounds={self.max_tool_rounds})",
                    partial=result,
                    model=self.model,
                )
            rounds += 1
            for i, call in enumerate(result.tool_calls):
                reason = ctx.scope.reason
                if isinstance(reason, Cancelled):  # cancelled between tools
                    self._append(*self._unrun(result, CANCELLED_TOOL_RESULT, i))
                    return state.cancelled_result()
                if isinstance(reason, StreamError):
                    raise reason  # a callback failed, or the deadline: not a cancel
                output = unbound(self._run_tool, call, ctx.observer)
                self._append(self._tool_message(call, output))
                ctx.delivery.emit(ToolResult(call, output))

    def _run_tool(self, call: dict[str, Any], observer: Observer | None) -> str:
        fn = call.get("function") or {}
        name = fn.get("name", "")
        args = fn.get("arguments") or {}
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except ValueError:
                return f"Error: arguments for {name} are not JSON: {args!r:.200}"
        impl = self._impls.get(name)
        if impl is None:
            known = ", ".join(self._impls) or "none"
            return f"Error: no tool named {name!r} can be run here (tools: {known})."
        start, began = time.time(), time.perf_counter()
        error: Exception | None = None
        try:
            output = _tool_text(impl(**args))
        except Exception as exc:  # noqa: BLE001  # the model sees the error and may recover
            log.info("tool %s raised %r; sending the error to the model", name, exc)
            error, output = exc, f"Error: {type(exc).__name__}: {exc}"
        if observer is not None:
            seconds = time.perf_counter() - began
            observer.tool(ToolRun(call, output, start, seconds, error))
        return output

    @staticmethod
    def _tool_message(call: dict[str, Any], content: str) -> dict[str, Any]:
        message = {
            "role": "tool",
            "content": content,
            "tool_name": (call.get("function") or {}).get("name", ""),
        }
        if call.get("id"):
            message["tool_call_id"] = call["id"]
        return message

    def _unrun(
        self, result: ChatResult, content: str, start: int = 0
    ) -> list[dict[str, Any]]:
        """Tool messages for calls that will not run, so the history stays valid."""
        return [self._tool_message(c, content) for c in result.tool_calls[start:]]

    def to_json(self) -> str:
        """The conversation as JSON: settings and history (tools are code: not kept)."""
        with self._lock:
            data = {
                "version": 1,
                "model": self.model,
                "system": self.system,
                "think": self.think,
                "options": self.options
                if not isinstance(self.options, BaseModel)
                else self.options.model_dump(exclude_none=True),
                "format": self._format.wire if self._format is not None else None,
                "keep_alive": self.keep_alive,
                "max_tool_rounds": self.max_tool_rounds,
                "context": self._window.context,
                "history_limit": self._window.history_limit,
                "session_header": self.session_header,
                "id": self.id,
                "messages": self._messages,
                "dropped": self._dropped,
            }
            return json.dumps(data, ensure_ascii=False)

    @classmethod
    def from_json(
        cls,
        client: StreamingClient,
        data: str | Mapping[str, Any],
        *,
        tools: Sequence[ToolSpec] | None = None,
    ) -> Conversation:
        """Restore a conversation saved by ``to_json``; pass the tools again.

        Raises:
            ValueError: the data is not a saved conversation.
        """
        saved = json.loads(data) if isinstance(data, str) else dict(data)
        if not isinstance(saved, dict) or saved.get("version") != 1:
            raise ValueError("not a conversation saved by Conversation.to_json()")
        messages = saved.get("messages")
        if not isinstance(messages, list) or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages
        ):
            raise ValueError("saved conversation has malformed messages")
        settings = {k: saved[k] for k in _SAVED_SETTINGS if k in saved}
        conv = cls(client, saved["model"], tools=tools, **settings)
        conv.id = str(saved.get("id") or conv.id)
        conv.system = saved.get("system")
        conv._messages = copy.deepcopy(messages)
        conv._dropped = copy.deepcopy(saved.get("dropped") or [])
        return conv

    def __repr__(self) -> str:
        with self._lock:
            count = len(self._messages)
        return f"<Conversation model={self.model!r} messages={count}>"
