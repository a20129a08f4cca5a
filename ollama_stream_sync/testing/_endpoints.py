"""Ollama's endpoints on the fake: routing, checks, and what each one answers.

Each handler follows its namesake in ``server/routes.go``: the same refusals, in
the same words and order, before the request's script or default answer plays.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from . import _models, _runner, _scripts
from ._http import Handler, RecordedRequest
from ._models import ModelLimits, Registry
from ._play import Player, Renderer
from ._runner import Refused
from ._scripts import ErrorLine, ProgressLine, Script
from ._wire import FIXED_CREATED_AT, JSON_PLAIN, keep_alive_seconds

_NAMES = "chat generate embed show pull push create".split()
ENDPOINTS = {name: f"/api/{name}" for name in _NAMES}  # POST, by enqueue's names
SCRIPTED = {name: path for name, path in ENDPOINTS.items() if name != "show"}
CHAT, GENERATE, EMBED = ENDPOINTS["chat"], ENDPOINTS["generate"], ENDPOINTS["embed"]
PULL, PUSH, CREATE = ENDPOINTS["pull"], ENDPOINTS["push"], ENDPOINTS["create"]
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
        out = Player(handler, self.owner.content_encoding)
        path, body = request.path.split("?", 1)[0], request.body
        try:
            if request.method != "POST":
                self._get(path, out)
            elif path not in ENDPOINTS.values():
                raise Refused(404, "404 page not found")
            elif problem or not isinstance(body, dict):
                # Each handler's ShouldBindJSON: io.EOF, or a decoding error.
                raise Refused(400, problem or "invalid request body")
            elif path in (CHAT, GENERATE):
                self._inference(out, path == CHAT, body)
            elif path == EMBED:
                self._embed(out, body)
            elif path == ENDPOINTS["show"]:
                out.json(200, self._show(body))
            else:
                self._progress(out, path, body)
        except Refused as refused:
            out.json(refused.status, {"error": refused.message}, refused.kind)

    def _get(self, path: str, out: Player) -> None:
        answers: dict[str, Callable[[], Any]] = {
            "/api/version": lambda: {"version": self.owner.version},
            "/api/tags": lambda: {"models": self.registry.tags()},
            "/api/ps": lambda: {"models": self.registry.ps()},
        }
        if path == "/":
            out.whole(200, b"Ollama is running", "text/plain; charset=utf-8")
        elif path in answers and (path != "/api/ps" or out.h.command == "GET"):
            out.json(200, answers[path]())
        else:
            raise Refused(404, "404 page not found")

    def _inference(self, out: Player, chat: bool, body: dict[str, Any]) -> None:
        model = body.get("model")
        if not model or not isinstance(model, str):
            raise Refused(400, "model is required")
        limits = self.registry.limits(model)
        _check_capabilities(model, body, limits, chat)
        stream = body.get("stream") is not False  # true by default on the wire
        empty = not body.get("messages" if chat else "prompt")
        num_ctx = limits.num_ctx(body.get("options"))
        try:
            tokens = 0 if empty else self._prompt_tokens(body, limits, num_ctx, chat)
        except Refused as refused:
            # Sent through the handler's channel: streamResponse keeps its
            # "application/json"; writeChatResponse's c.JSON adds the charset.
            refused.kind = JSON_PLAIN if stream else refused.kind
            raise
        keep_alive = body.get("keep_alive")
        script = self.owner._next_script(CHAT if chat else GENERATE, body)
        if script is None and empty:
            unloads = keep_alive is not None and keep_alive_seconds(keep_alive) == 0
            said = {"role": "assistant", "content": ""}
            answer: dict[str, Any] = {"model": model, "created_at": FIXED_CREATED_AT}
            answer |= {"message": said} if chat else {"response": ""}
            answer |= {"done": True, "done_reason": "unload" if unloads else "load"}
            out.json(200, answer)
            self.registry.note_loaded(model, keep_alive, num_ctx)
            return
        out.play(
            list(self.owner.default_reply) if script is None else script,
            renderer=Renderer(chat, model, tokens),
            stream=stream,
            tools_requested=bool(body.get("tools")),
            # Ollama lists the model while it generates: from its first output on.
            on_output=lambda: self.registry.note_loaded(
                model, keep_alive, num_ctx, answering=True
            ),
        )
        if out.status == 200:
            self.registry.note_loaded(model, keep_alive, num_ctx)

    def _prompt_tokens(
        self, body: dict[str, Any], limits: ModelLimits, num_ctx: int, chat: bool
    ) -> int:
        """The prompt's tokens once fitted to ``num_ctx``, or ``Refused``."""
        truncate = body.get("truncate") is not False
        images = _IMAGE_TOKENS if "vision" in (limits.capabilities or ()) else 0
        shift: bool | None = body.get("shift") is not False
        if chat:
            messages = [m for m in body.get("messages") or () if isinstance(m, dict)]
            if limits.system and messages and messages[0].get("role") != "system":
                messages.insert(0, {"role": "system", "content": limits.system})
            tools = body.get("tools") if isinstance(body.get("tools"), list) else None
            tokens = _runner.fit_messages(messages, tools, num_ctx, truncate, images)
            if not self.owner.context_shift:
                shift = None  # llama-server's own template: it refuses, never shifts
        elif body.get("raw") or body.get("suffix"):
            text = f"{body.get('prompt')}{body.get('suffix') or ''}"
            tokens = _runner.count_tokens(text)
        else:
            system = body.get("system") or limits.system
            messages = [{"role": "system", "content": system}] if system else []
            prompt, media = body.get("prompt"), body.get("images") or []
            messages.append({"role": "user", "content": prompt, "images": media})
            tokens = _runner.fit_messages(messages, None, num_ctx, True, images)
        if not chat and body.get("images"):
            shift = None  # completionPromptForRequest never cuts a prompt with media
        num_keep = limits.option(body.get("options"), "num_keep", _NUM_KEEP)
        return _runner.fit_tokens(tokens, num_ctx, truncate, shift, num_keep)

    def _embed(self, out: Player, body: dict[str, Any]) -> None:
        started = time.monotonic_ns()
        model, given = body.get("model"), body.get("input")
        if not isinstance(model, str) or not model.strip():
            raise Refused(404, f"model '{model or ''}' not found")
        if isinstance(given, list) and all(isinstance(x, str) for x in given):
            inputs = list(given)
        elif isinstance(given, str) or given is None:
            inputs = [given] if given else []  # an empty string embeds nothing
        else:
            raise Refused(400, "invalid input type")
        limits = self.registry.limits(model)
        num_ctx = limits.num_ctx(body.get("options"))
        self.registry.note_loaded(model, body.get("keep_alive"), num_ctx)
        truncate = body.get("truncate") is not False
        # The batch fails as a whole, on its first input that fails.
        fitted = [_runner.fit_input(text, num_ctx, truncate) for text in inputs]
        size, dimensions = limits.embedding_length, body.get("dimensions")
        if isinstance(dimensions, int) and 0 < dimensions < size:
            size = dimensions

        def answer() -> dict[str, Any]:
            if not fitted:
                return {"model": model, "embeddings": []}
            return {
                "model": model,
                "embeddings": [_runner.embedding(text, size) for text, _ in fitted],
                "total_duration": max(1, time.monotonic_ns() - started),
                "load_duration": 1000,
                "prompt_eval_count": sum(tokens for _, tokens in fitted),
            }

        script = self.owner._next_script(EMBED, body) or []
        out.play(script, stream=False, answer=answer)

    def _show(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("model") or body.get("name")
        if not name or not isinstance(name, str):
            raise Refused(400, "model is required")
        record = self.registry.show(name)
        if record is None:
            raise Refused(404, f"model '{_models.shortest(name)}' not found")
        return record

    def _progress(self, out: Player, path: str, body: dict[str, Any]) -> None:
        name = body.get("model") or body.get("name")
        if not name or not isinstance(name, str):
            # PushHandler says "model is required"; pull and create fail to
            # parse the empty name.
            raise Refused(
                400, "model is required" if path == PUSH else "invalid model name"
            )
        script = self.owner._next_script(path, body)
        if script is None:
            script = self._default_progress(path, name, body)
        succeeded = out.play(script, stream=body.get("stream") is not False)
        if path == PUSH or not succeeded:
            return
        if path == CREATE:
            base = body.get("from")
            if isinstance(base, str) and base and self._is_pullable(base):
                self.registry.add(base)  # a create from a missing base pulls it first
        self.registry.add(name, body if path == CREATE else None)

    def _is_pullable(self, name: str) -> bool:
        registry = self.registry
        return registry.find(name) is None and not registry.is_unknown(name)

    def _default_progress(  # noqa: PLR0911  # one answer per case, as Ollama's
        self, path: str, name: str, body: dict[str, Any]
    ) -> Script:
        """What an unscripted pull, push or create plays, or create's 400."""
        known = self.registry.find(name) is not None
        if path == PULL and self.registry.is_unknown(name):
            return _scripts.pull_not_found_script()
        if path == PULL:
            return _scripts.pull_script(name, cached=known)  # a re-pull has every layer
        if path == PUSH and known:
            return _scripts.push_script(name)
        if path == PUSH:  # PushModel reads the manifest from disk, and os.Open fails.
            manifest = "/".join(
                (_models.MODELS_DIR, "manifests", *_models.name_parts(name))
            )
            return [
                ProgressLine("retrieving manifest"),
                ProgressLine("couldn't retrieve manifest"),
                ErrorLine(f"open {manifest}: no such file or directory"),
            ]
        base, files = body.get("from"), body.get("files")
        # Layers Ollama writes for this model, in createModel's order.
        keys = ("template", "system", "license", "parameters", "messages")
        new = [_models.digest_of(key, body[key]) for key in keys if body.get(key)]
        if isinstance(base, str) and base:
            if self.registry.is_unknown(base):
                return _scripts.pull_not_found_script()
            # parseFromModel pulls a missing base first through the same stream,
            # its "success" line included.
            steps = _scripts.pull_script(base) if self._is_pullable(base) else []
            existing = _models.layer_digests(base, len(_models.DEFAULT_LAYER_SIZES) - 1)
            return steps + _scripts.create_script(name, existing=existing, new=new)
        if isinstance(files, Mapping) and files:
            blobs = [str(d) for d in files.values()]
            return _scripts.create_script(
                name, existing=blobs, new=new, parsing_gguf=True
            )
        # CreateHandler: neither `from` nor `files`, before any output.
        raise Refused(400, "neither 'from' or 'files' was specified", JSON_PLAIN)


def _check_capabilities(
    model: str, body: Mapping[str, Any], limits: ModelLimits, chat: bool
) -> None:
    """Refuse what a model declared with ``capabilities`` lacks, in the server's
    words (never images: the server does not check for vision)."""
    capabilities = limits.capabilities
    if capabilities is None:
        return
    quoted = json.dumps(model, ensure_ascii=False)  # Go's %q
    think = body.get("think")
    thinks = think is True or (isinstance(think, str) and think in _THINK_LEVELS)
    if thinks and "thinking" not in capabilities:
        raise Refused(400, f"{quoted} does not support thinking")
    if "completion" not in capabilities:
        raise Refused(
            400, f"{quoted} does not support {'chat' if chat else 'generate'}"
        )
    asked = body.get("tools") if chat else body.get("suffix")
    wanted = ("tools" if chat else "insert") if asked else ""
    if wanted and wanted not in capabilities:
        # scheduleRunner names the model in full: host/namespace/model:tag.
        raise Refused(400, f"{_models.full_name(model)} does not support {wanted}")
