"""The model registry: names, invented records, and what is pulled and loaded.

Shapes follow Ollama's ``api/types.go`` (``ListModelResponse``, ``ShowResponse``,
``ProcessModelResponse``, ``ModelDetails``); values are realistic, stable per
name. A model entry is a name, or a dict with a ``name`` and any of:
``capabilities`` (a list: declaring them makes the server refuse what is
missing), ``context_length`` and ``embedding_length`` (the architecture's, in
``model_info``), ``details`` (merged into the defaults: ``family``,
``parameter_size``, ``quantization_level``...), ``model_info`` (merged),
``parameters`` (a dict as ``/api/create`` takes it, e.g. ``{"num_ctx": 8192}``,
shown as Ollama's text), or any other field to show as it is (``system``,
``template``, ``license``...).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._wire import FOREVER, keep_alive_seconds, now_utc, rfc3339

Entry = str | Mapping[str, Any]
"""One model of ``models`` or ``loaded``: a name, or a dict with one."""

DEFAULT_HOST, DEFAULT_NAMESPACE, DEFAULT_TAG = "registry.ollama.ai", "library", "latest"
MODELS_DIR = "/usr/share/ollama/.ollama/models"  # a Linux service install's
DEFAULT_LAYER_SIZES: tuple[int, ...] = (2019377376, 1429, 7711, 6016, 96, 561)
"""A llama3.2:3b-like pull: weights, template, license, params, config blobs."""
DEFAULT_NUM_CTX = 4096
"""The server's ``num_ctx`` when neither request nor model sets one (< 24 GiB VRAM)."""
_KEEP_ALIVE = datetime.timedelta(minutes=5)  # OLLAMA_KEEP_ALIVE's default
_LAST_MOMENT = "9999-12-31T23:59:59.999999Z"  # for times Python cannot reach

_DETAILS = {
    "parent_model": "",
    "format": "gguf",
    "family": "llama",
    "parameter_size": "3.2B",
    "quantization_level": "Q4_K_M",
}
_GENERAL = {"file_type": 15, "parameter_count": 3212749888, "quantization_version": 2}
_ARCH = {
    "attention.head_count": 24,
    "attention.head_count_kv": 8,
    "block_count": 28,
    "context_length": 131072,
    "embedding_length": 3072,
    "vocab_size": 128256,
}
_TEMPLATE = "{{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }}"
_PARAMETERS: Mapping[str, Any] = {"stop": "<|eot_id|>"}

TAGS_KEYS = """name model remote_model remote_host modified_at size digest details
    capabilities""".split()
SHOW_KEYS = """license modelfile parameters template system renderer parser details
    messages remote_model remote_host model_info projector_info tensors capabilities
    modified_at requires""".split()
PS_KEYS = "name model size digest details expires_at size_vram context_length".split()
# Fields Go always writes (no omitempty); the rest are dropped when empty.
_ALWAYS = set(
    """name model modified_at size digest details model_info expires_at
    size_vram context_length""".split()
)
_SPEC_KEYS = {
    "details",
    "model_info",
    "parameters",
    "context_length",
    "embedding_length",
}


@dataclass(frozen=True)
class ModelName:
    """A model name split as Ollama's ``types/model`` does: host/namespace/model:tag."""

    host: str
    namespace: str
    model: str
    tag: str

    @classmethod
    def parse(cls, name: str) -> ModelName:
        """Parse, filling in ``registry.ollama.ai``, ``library`` and ``latest``."""
        rest, tag = name, DEFAULT_TAG
        colon = rest.rfind(":")
        if colon > rest.rfind("/"):
            rest, tag = rest[:colon], rest[colon + 1 :] or DEFAULT_TAG
        parts = rest.split("/")
        host, namespace = DEFAULT_HOST, DEFAULT_NAMESPACE
        if len(parts) >= 3:
            host, namespace = parts[-3], parts[-2]
        elif len(parts) == 2:
            namespace = parts[0]
        return cls(host, namespace, parts[-1], tag)

    def __str__(self) -> str:
        """``Name.String()``: every part, as in capability errors."""
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    def display_shortest(self) -> str:
        """``Name.DisplayShortest()``: defaults left out, the tag always kept."""
        if self.host.lower() != DEFAULT_HOST:
            prefix = f"{self.host}/{self.namespace}/"
        elif self.namespace.lower() != DEFAULT_NAMESPACE:
            prefix = f"{self.namespace}/"
        else:
            prefix = ""
        return f"{prefix}{self.model}:{self.tag}"

    def manifest_path(self) -> str:
        """Where Ollama would keep this model's manifest (shows in push errors)."""
        parts = (self.host, self.namespace, self.model, self.tag)
        return "/".join((MODELS_DIR, "manifests", *parts))


def shortest(name: str) -> str:
    """A name as Ollama's errors show it (``llama3`` → ``llama3:latest``)."""
    return ModelName.parse(name).display_shortest()


def digest_of(*parts: object) -> str:
    """A stable ``sha256:<hex>`` digest for invented content."""
    text = "\x00".join(str(p) for p in parts)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def layer_digests(model: str, count: int) -> list[str]:
    """Stable digests for a model's ``count`` layers (the config blob is last)."""
    return [digest_of("layer", shortest(model), i) for i in range(count)]


def entry_name(entry: Entry) -> str:
    """The name of a ``models`` or ``loaded`` entry."""
    if isinstance(entry, str):
        return entry
    return str(entry.get("name") or entry.get("model") or "")


def find_entry(entries: Sequence[Entry], name: str) -> Entry | None:
    """The entry for ``name`` (``llama3`` is ``llama3:latest``), if any."""
    key = shortest(name).lower()
    for entry in entries:
        if shortest(entry_name(entry)).lower() == key:
            return entry
    return None


def _go_value(value: Any) -> str:
    """A parameter value as Go's ``%#v`` prints it (JSON numbers are floats)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return json.dumps(value, ensure_ascii=False)


def parameters_text(parameters: Mapping[str, Any]) -> str:
    """``ShowResponse.Parameters``: ``%-30s %#v`` per value, lists one per line."""
    return "\n".join(
        f"{key:<30} {_go_value(v)}"
        for key, value in parameters.items()
        for v in (value if isinstance(value, list) else [value])
    )


def model_record(entry: Entry, modified_at: datetime.datetime) -> dict[str, Any]:
    """Every field Ollama shows about a pulled model: defaults, then the entry's."""
    spec: Mapping[str, Any] = {} if isinstance(entry, str) else entry
    name = entry_name(entry)
    details: dict[str, Any] = _DETAILS | dict(spec.get("details") or {})
    details.setdefault("families", [details["family"]])
    arch = details["family"]
    info = {"general.architecture": arch}
    info |= {f"general.{k}": v for k, v in _GENERAL.items()}
    info |= {f"{arch}.{k}": spec.get(k, v) for k, v in _ARCH.items()}
    info |= {"tokenizer.ggml.model": "gpt2", **(spec.get("model_info") or {})}
    params = spec.get("parameters", _PARAMETERS)
    text = params if isinstance(params, str) else parameters_text(params)
    weights = layer_digests(name, len(DEFAULT_LAYER_SIZES))[0].replace(":", "-")
    lines = [
        f"PARAMETER {' '.join(line.split(maxsplit=1))}" for line in text.splitlines()
    ]
    record: dict[str, Any] = {
        "name": name,
        "model": name,
        "modified_at": rfc3339(modified_at),
        "size": sum(DEFAULT_LAYER_SIZES),
        "digest": digest_of("manifest", shortest(name))[7:],
        "details": details,
        "capabilities": ["completion", "tools"],
        "template": _TEMPLATE,
        "parameters": text,
        "model_info": info,
        "modelfile": (
            '# Modelfile generated by "ollama show"\n'
            "# To build a new Modelfile based on this, replace FROM with:\n"
            f"# FROM {shortest(name)}\n\nFROM {MODELS_DIR}/blobs/{weights}\n"
            f'TEMPLATE """{_TEMPLATE}"""\n' + "".join(f"{x}\n" for x in lines)
        ),
    }
    return record | {k: v for k, v in spec.items() if k not in _SPEC_KEYS}


def pick(record: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """The fields of one response type, empty optional ones left out as Go does."""
    return {
        key: record[key]
        for key in keys
        if key in record
        and (key in _ALWAYS or record[key] not in (None, 0, "", [], {}))
    }


@dataclass(frozen=True)
class ModelLimits:
    """What a request's checks need to know of one model."""

    capabilities: tuple[str, ...] | None
    """As declared; None when the entry declares none (nothing is refused)."""
    context_length: int
    """The architecture's trained context: no ``num_ctx`` goes above it."""
    embedding_length: int
    parameters: Mapping[str, Any]
    system: str

    def num_ctx(self, options: Any) -> int:
        """The context a request runs with: its ``num_ctx``, the model's, 4096."""
        asked = options.get("num_ctx") if isinstance(options, Mapping) else None
        if not isinstance(asked, int) or asked <= 0:
            asked = self.parameters.get("num_ctx")
        if not isinstance(asked, (int, float)) or asked <= 0:
            asked = DEFAULT_NUM_CTX
        return max(4, min(int(asked), self.context_length))

    def option(self, options: Any, key: str, default: int) -> int:
        """An integer option from the request, else the model's, else ``default``."""
        for source in (
            options if isinstance(options, Mapping) else {},
            self.parameters,
        ):
            if isinstance(source.get(key), (int, float)):
                return int(source[key])
        return default


class Registry:
    """The models a fake server has pulled and loaded, under the server's lock."""

    def __init__(
        self,
        cond: threading.Condition,
        models: Sequence[Entry],
        unknown_models: Sequence[str],
    ) -> None:
        self._cond = cond
        self.models: list[Entry] = list(models)
        self.loaded: list[Entry] = []
        self.unknown_models: set[str] = set(unknown_models)
        self._load_info: dict[str, tuple[float | None, int]] = {}
        self._started_at = now_utc()

    def _record(self, entry: Entry) -> dict[str, Any]:
        return model_record(entry, self._started_at)

    def find(self, name: str) -> Entry | None:
        """The pulled model called ``name``, if any."""
        with self._cond:
            return find_entry(self.models, name)

    def is_unknown(self, name: str) -> bool:
        """Whether the registry lacks ``name`` (a pull of it fails)."""
        with self._cond:
            return find_entry(sorted(self.unknown_models), name) is not None

    def limits(self, name: str) -> ModelLimits:
        """The limits of ``name``: its entry's, or the defaults if not pulled."""
        entry = self.find(name) or name
        record = self._record(entry)
        info = record["model_info"]
        arch = info["general.architecture"]
        declared = None if isinstance(entry, str) else entry.get("capabilities")
        params = {} if isinstance(entry, str) else entry.get("parameters")
        return ModelLimits(
            None if declared is None else tuple(declared),
            int(info.get(f"{arch}.context_length") or _ARCH["context_length"]),
            int(info.get(f"{arch}.embedding_length") or _ARCH["embedding_length"]),
            params if isinstance(params, Mapping) else {},
            str(record.get("system") or ""),
        )

    def tags(self) -> list[dict[str, Any]]:
        """``/api/tags``: the pulled models."""
        with self._cond:
            entries = list(self.models)
        return [pick(self._record(e), TAGS_KEYS) for e in entries]

    def show(self, name: str) -> dict[str, Any] | None:
        """``/api/show`` for ``name``; None if it is not pulled."""
        entry = self.find(name)
        return None if entry is None else pick(self._record(entry), SHOW_KEYS)

    def ps(self) -> list[dict[str, Any]]:
        """``/api/ps``: the loaded models, the longest time left first."""
        now = now_utc()
        with self._cond:
            loaded, pulled, info = list(self.loaded), list(self.models), self._load_info
            info = dict(info)
        out: list[tuple[datetime.datetime, dict[str, Any]]] = []
        for entry in loaded:
            name = entry_name(entry)
            keep_alive, num_ctx = info.get(shortest(name).lower(), (None, 0))
            until = _expiry(now, keep_alive)
            record = self._record(find_entry(pulled, name) or name)
            record |= {"name": name, "model": name, "size_vram": record["size"]}
            record["context_length"] = num_ctx or DEFAULT_NUM_CTX
            record["expires_at"] = rfc3339(until) if until else _LAST_MOMENT
            if not isinstance(entry, str):
                record |= dict(entry)
            out.append(
                (until or datetime.datetime.max.replace(tzinfo=now.tzinfo), record)
            )
        out.sort(key=lambda pair: pair[0], reverse=True)
        return [pick(record, PS_KEYS) for _, record in out]

    def note_loaded(
        self, model: str, keep_alive_value: Any, num_ctx: int, answering: bool = False
    ) -> None:
        """A request loaded its model for ``keep_alive``, or unloaded it (0).

        ``answering``: its first output is being written, so the model is listed
        while it generates, whatever its ``keep_alive``.
        """
        keep_alive = (
            None if keep_alive_value is None else keep_alive_seconds(keep_alive_value)
        )
        if answering and keep_alive == 0:
            keep_alive = None
        key = shortest(model).lower()
        with self._cond:
            entry = find_entry(self.loaded, model)
            if keep_alive == 0:
                if entry is not None:
                    self.loaded.remove(entry)
                self._load_info.pop(key, None)
            else:
                if entry is None:
                    self.loaded.append(model)
                self._load_info[key] = (keep_alive, num_ctx)
            self._cond.notify_all()

    def add(self, name: str, body: Mapping[str, Any] | None = None) -> None:
        """A pull or create finished: list the model (a create's fields shown)."""
        entry: Entry = name
        if body is not None:
            extra = {k: body[k] for k in ("system", "template") if body.get(k)}
            if isinstance(body.get("license"), list):
                extra["license"] = "\n".join(map(str, body["license"]))
            elif body.get("license"):
                extra["license"] = body["license"]
            if isinstance(body.get("parameters"), Mapping):
                extra["parameters"] = dict(body["parameters"])
            entry = {"name": name, **extra} if extra else name
        with self._cond:
            old = find_entry(self.models, name)
            if old is not None:
                self.models.remove(old)
            self.models.append(entry)
            self._cond.notify_all()


def _expiry(
    now: datetime.datetime, keep_alive: float | None
) -> datetime.datetime | None:
    """When a loaded model unloads; None past year 9999 (Go prints it, Python can't)."""
    if keep_alive is None:
        delta = _KEEP_ALIVE
    elif keep_alive == float("inf"):
        delta = FOREVER
    else:
        delta = datetime.timedelta(seconds=keep_alive)
    try:
        return now + delta
    except OverflowError:
        return None
