"""Ollama's endpoints on the fake: routing, checks, and what each one answers.

Each handler follows its namesake in Ollama's ``server/routes.go``: the same
refusals with the same status and text, in the same order, before the request's
script (or the default answer) plays.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any, Protocol

from ._http import Handler, RecordedRequest, Response
from ._models import (
    DEFAULT_LAYER_SIZES,
    ModelLimits,
    ModelName,
    Registry,
    digest_of,
    layer_digests,
    shortest,
)
from ._play import Outcome, Player, Renderer
from ._runner import (
    Refused,
    count_tokens,
    embedding,
    fit_input,
    fit_messages,
    fit_tokens,
)
from ._scripts import create_script, pull_not_found_script, pull_script, push_script
from ._steps import ErrorLine, ProgressLine, Script
from ._wire import FIXED_CREATED_AT, JSON_PLAIN, JSON_UTF8, go_json, keep_alive_seconds

CHAT, GENERATE, EMBED, SHOW = "/api/chat", "/api/generate", "/api/embed", "/api/show"
PULL, PUSH, CREATE = "/api/pull", "/api/push", "/api/create"
ENDPOINTS = {
    "chat": CHAT,
    "generate": GENERATE,
    "embed": EMBED,
    "show": SHOW,
    "pull": PULL,
    "push": PUSH,
    "create": CREATE,
}
"""Every POST endpoint, by the short name ``enqueue`` and ``in_flight`` take."""
SCRIPTED = {name: path for name, path in ENDPOINTS.items() if path != SHOW}
"""The endpoints that play queued scripts."""
_THINK_LEVELS = ("low", "medium", "high", "max")  # ThinkValue.Bool(), with true
_IMAGE_TOKENS = 768  # what chatPrompt counts per image on a model with vision
_NUM_KEEP = 4  # api.DefaultOptions


def endpoint_path(endpoint: str, allowed: Mapping[str, str] = ENDPOINTS) -> str:
    """``"pull"`` or ``"/api/pull"`` → ``"/api/pull"``; ValueError otherwise."""
    path = allowed.get(endpoint, endpoint)
    if path not in allowed.values():
        raise ValueError(f"unknown endpoint {endpoint!r}: use one of {sorted(allowed)}")
    return path


class Owner(Protocol):
    """The settings and the script queue of the server the endpoints answer for."""

    version: str
    default_reply: Script
    content_encoding: str | None
    context_shift: bool

    def _next_script(
        self, path: str, body: Mapping[str, Any] | None = None
    ) -> Script | None: ...


class Endpoints:
    """Answers every request to a fake server (the app of its ``LoopbackServer``)."""

    def __init__(self, owner: Owner, registry: Registry) -> None:
        self.owner, self.registry = owner, registry

    def __call__(
        self, handler: Handler, request: RecordedRequest, problem: str
    ) -> None:
        response = Response(handler, self.owner.content_encoding)
        path, body = request.path.split("?", 1)[0], request.body
        if request.method != "POST":
            self._get(path, response, head=request.method == "HEAD")
        elif path not in ENDPOINTS.values():
            response.json(404, {"error": "404 page not found"})
        elif problem or not isinstance(body, dict):
            # Each handler's ShouldBindJSON: io.EOF, or a decoding error.
            response.json(400, {"error": problem or "invalid request body"})
        elif path in (CHAT, GENERATE):
            self._inference(handler, response, path == CHAT, body)
        elif path == EMBED:
            self._embed(handler, response, body)
        elif path == SHOW:
            self._show(response, body)
        else:
            self._progress(handler, response, path, body)

    def _get(self, path: str, response: Response, head: bool) -> None:
        if path == "/":
            text = b"Ollama is running"
            response.whole(200, text, "text/plain; charset=utf-8", head=head)
            return
        if path == "/api/version":
            data: Any = {"version": self.owner.version}
        elif path == "/api/tags":
            data = {"models": self.registry.tags()}
        elif path == "/api/ps" and not head:
            data = {"models": self.registry.ps()}
        else:
            response.json(404, {"error": "404 page not found"})
            return
        response.whole(200, go_json(data), JSON_UTF8, head=head)

    def _play(
        self, handler: Handler, script: Script, renderer: Renderer, **how: Any
    ) -> Outcome:
        player = Player(handler, self.owner.content_encoding, renderer, **how)
        return player.play(script)

    # -- chat and generate ---------------------------------------------------------

    def _inference(
        self, handler: Handler, response: Response, chat: bool, body: dict[str, Any]
    ) -> None:
        model = body.get("model")
        if not model or not isinstance(model, str):
            response.json(400, {"error": "model is required"})
            return
        limits = self.registry.limits(model)
        refusal = _missing_capability(model, body, limits, chat)
        if refusal:
            response.json(400, {"error": refusal})
            return
        stream = body.get("stream") is not False  # true by default on the wire
        empty = not body.get("messages" if chat else "prompt")
        num_ctx = limits.num_ctx(body.get("options"))
        try:
            tokens = 0 if empty else self._prompt_tokens(body, limits, num_ctx, chat)
        except Refused as refused:
            # Sent through the handler's channel: streamResponse keeps its
            # "application/json"; writeChatResponse's c.JSON adds the charset.
            kind = JSON_PLAIN if stream else JSON_UTF8
            response.json(refused.status, {"error": refused.message}, kind)
            return
        keep_alive = body.get("keep_alive")
        script = self.owner._next_script(CHAT if chat else GENERATE, body)
        if script is None and empty:
            unload = keep_alive is not None and keep_alive_seconds(keep_alive) == 0
            out: dict[str, Any] = {"model": model, "created_at": FIXED_CREATED_AT}
            out |= {"message": {"role": "assistant", "content": ""}} if chat else {}
            out |= {} if chat else {"response": ""}
            reason = "unload" if unload else "load"
            response.json(200, out | {"done": True, "done_reason": reason})
            self.registry.note_loaded(model, keep_alive, num_ctx)
            return
        outcome = self._play(
            handler,
            list(self.owner.default_reply) if script is None else script,
            Renderer(chat, model, tokens),
            stream=stream,
            inference=True,
            tools_requested=bool(body.get("tools")),
            # Ollama lists the model while it generates: from its first output on.
            on_output=lambda: self.registry.note_loaded(
                model, keep_alive, num_ctx, answering=True
            ),
        )
        if outcome.status == 200:
            self.registry.note_loaded(model, keep_alive, num_ctx)

    def _prompt_tokens(
        self, body: dict[str, Any], limits: ModelLimits, num_ctx: int, chat: bool
    ) -> int:
        """The prompt's tokens once fitted to ``num_ctx``, or ``Refused``."""
        truncate = body.get("truncate") is not False
        vision = "vision" in (limits.capabilities or ())
        image_tokens = _IMAGE_TOKENS if vision else 0
        shift: bool | None = body.get("shift") is not False
        if chat:
            messages = [m for m in body.get("messages") or () if isinstance(m, dict)]
            first = messages[0].get("role") if messages else None
            if limits.system and first != "system":
                messages.insert(0, {"role": "system", "content": limits.system})
            tools = body.get("tools") if isinstance(body.get("tools"), list) else None
            tokens = fit_messages(messages, tools, num_ctx, truncate, image_tokens)
            if not self.owner.context_shift:
                shift = None  # llama-server's own template: it refuses, never shifts
        elif body.get("raw") or body.get("suffix"):
            tokens = count_tokens(f"{body.get('prompt')}{body.get('suffix') or ''}")
        else:
            system = body.get("system") or limits.system
            user = {"role": "user", "content": body.get("prompt")}
            user["images"] = body.get("images") or []
            messages = [{"role": "system", "content": system}] if system else []
            tokens = fit_messages([*messages, user], None, num_ctx, True, image_tokens)
        if not chat and body.get("images"):
            shift = None  # completionPromptForRequest never cuts a prompt with media
        num_keep = limits.option(body.get("options"), "num_keep", _NUM_KEEP)
        return fit_tokens(
            tokens, num_ctx, truncate=truncate, shift=shift, num_keep=num_keep
        )

    # -- embed and show --------------------------------------------------------------

    def _embed(
        self, handler: Handler, response: Response, body: dict[str, Any]
    ) -> None:
        started = time.monotonic_ns()
        model, given = body.get("model"), body.get("input")
        if not isinstance(model, str) or not model.strip():
            response.json(404, {"error": f"model '{model or ''}' not found"})
            return
        if isinstance(given, list) and all(isinstance(x, str) for x in given):
            inputs = list(given)
        elif isinstance(given, str) or given is None:
            inputs = [given] if given else []  # an empty string embeds nothing
        else:
            response.json(400, {"error": "invalid input type"})
            return
        limits = self.registry.limits(model)
        num_ctx = limits.num_ctx(body.get("options"))
        self.registry.note_loaded(model, body.get("keep_alive"), num_ctx)
        truncate = body.get("truncate") is not False
        try:  # the batch fails as a whole, on its first input that fails
            fitted = [fit_input(text, num_ctx, truncate) for text in inputs]
        except Refused as refused:
            response.json(refused.status, {"error": refused.message})
            return
        size, dimensions = limits.embedding_length, body.get("dimensions")
        if isinstance(dimensions, int) and 0 < dimensions < size:
            size = dimensions

        def answer() -> dict[str, Any]:
            if not fitted:
                return {"model": model, "embeddings": []}
            vectors = [embedding(text, size) for text, _ in fitted]
            return {
                "model": model,
                "embeddings": vectors,
                "total_duration": max(1, time.monotonic_ns() - started),
                "load_duration": 1000,
                "prompt_eval_count": sum(tokens for _, tokens in fitted),
            }

        script = self.owner._next_script(EMBED, body) or []
        self._play(
            handler, script, Renderer(False, model, 0), stream=False, answer=answer
        )

    def _show(self, response: Response, body: dict[str, Any]) -> None:
        name = body.get("model") or body.get("name")
        if not name or not isinstance(name, str):
            response.json(400, {"error": "model is required"})
            return
        record = self.registry.show(name)
        if record is None:
            response.json(404, {"error": f"model '{shortest(name)}' not found"})
            return
        response.json(200, record)

    # -- pull, push and create ---------------------------------------------------

    def _progress(
        self, handler: Handler, response: Response, path: str, body: dict[str, Any]
    ) -> None:
        name = body.get("model") or body.get("name")
        if not name or not isinstance(name, str):
            # PushHandler says "model is required"; pull and create fail to
            # parse the empty name.
            message = "model is required" if path == PUSH else "invalid model name"
            response.json(400, {"error": message})
            return
        script = self.owner._next_script(path, body)
        if script is None:
            script = self._default_progress(path, name, body)
        if script is None:
            # CreateHandler: neither `from` nor `files`, before any output.
            text = "neither 'from' or 'files' was specified"
            response.json(400, {"error": text}, JSON_PLAIN)
            return
        stream = body.get("stream") is not False
        outcome = self._play(handler, script, Renderer(False, name, 0), stream=stream)
        if outcome.succeeded and path == PULL:
            self.registry.add(name)
        elif outcome.succeeded and path == CREATE:
            base = body.get("from")
            if isinstance(base, str) and base and self._is_pullable(base):
                self.registry.add(base)  # a create from a missing base pulls it first
            self.registry.add(name, body)

    def _is_pullable(self, name: str) -> bool:
        registry = self.registry
        return registry.find(name) is None and not registry.is_unknown(name)

    def _default_progress(  # noqa: PLR0911  # one answer per case, as in Ollama
        self, path: str, name: str, body: Mapping[str, Any]
    ) -> Script | None:
        """What an unscripted pull, push or create plays; None for create's 400."""
        if path == PULL:
            if self.registry.is_unknown(name):
                return pull_not_found_script()
            # A re-pull finds every layer on disk.
            return pull_script(name, cached=self.registry.find(name) is not None)
        if path == PUSH:
            if self.registry.find(name) is not None:
                return push_script(name)
            # PushModel: the manifest is read from disk, and os.Open fails.
            manifest = ModelName.parse(name).manifest_path()
            return [
                ProgressLine("retrieving manifest"),
                ProgressLine("couldn't retrieve manifest"),
                ErrorLine(f"open {manifest}: no such file or directory"),
            ]
        base, files = body.get("from"), body.get("files")
        # Layers Ollama writes for this model, in createModel's order.
        keys = ("template", "system", "license", "parameters", "messages")
        new = [digest_of(key, body[key]) for key in keys if body.get(key)]
        if isinstance(base, str) and base:
            if self.registry.is_unknown(base):
                return pull_not_found_script()
            # parseFromModel pulls a missing base first through the same stream,
            # its "success" line included.
            steps = pull_script(base) if self._is_pullable(base) else []
            existing = layer_digests(base, len(DEFAULT_LAYER_SIZES) - 1)  # no config
            return steps + create_script(name, existing=existing, new=new)
        if isinstance(files, Mapping) and files:
            existing_blobs = [str(d) for d in files.values()]
            return create_script(
                name, existing=existing_blobs, new=new, parsing_gguf=True
            )
        return None


def _missing_capability(
    model: str, body: Mapping[str, Any], limits: ModelLimits, chat: bool
) -> str | None:
    """The refusal of a request the model cannot serve, in the server's words.

    Only for models declared with ``capabilities``. Images are never refused:
    the server does not check for vision.
    """
    capabilities = limits.capabilities
    if capabilities is None:
        return None
    quoted = json.dumps(model, ensure_ascii=False)  # Go's %q
    think = body.get("think")
    thinks = think is True or (isinstance(think, str) and think in _THINK_LEVELS)
    if thinks and "thinking" not in capabilities:
        return f"{quoted} does not support thinking"
    if "completion" not in capabilities:
        return f"{quoted} does not support {'chat' if chat else 'generate'}"
    asked = body.get("tools") if chat else body.get("suffix")
    wanted = ("tools" if chat else "insert") if asked else ""
    if wanted and wanted not in capabilities:
        # scheduleRunner names the model in full: host/namespace/model:tag.
        return f"{ModelName.parse(model)} does not support {wanted}"
    return None
