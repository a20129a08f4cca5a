"""Model names, layers and the records behind ``/api/tags``, ``/api/show``, ``/api/ps``.

Everything here is pure (no I/O, no threads): the server builds its answers from
these functions and its own state. Shapes follow Ollama's ``api/types.go``
(``ListModelResponse``, ``ShowResponse``, ``ProcessModelResponse``,
``ModelDetails``); values are invented but realistic, and stable per name.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._wire import FOREVER, rfc3339

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
MODELS_DIR = "/usr/share/ollama/.ollama/models"
"""Where a Linux service install keeps models; it shows in some error texts."""

DEFAULT_LAYER_SIZES: tuple[int, ...] = (2019377376, 1429, 7711, 6016, 96, 561)
"""A llama3.2:3b-like pull: weights, template, license, params, config blobs."""

DEFAULT_CONTEXT_LENGTH = 4096
"""What ``/api/ps`` reports when a request did not set ``num_ctx``."""

DEFAULT_KEEP_ALIVE = datetime.timedelta(minutes=5)
"""Ollama's default ``OLLAMA_KEEP_ALIVE``."""

_DETAILS: dict[str, Any] = {
    "parent_model": "",
    "format": "gguf",
    "family": "llama",
    "families": ["llama"],
    "parameter_size": "3.2B",
    "quantization_level": "Q4_K_M",
}

_MODEL_INFO: dict[str, Any] = {
    "general.architecture": "llama",
    "general.file_type": 15,
    "general.parameter_count": 3212749888,
    "general.quantization_version": 2,
    "llama.attention.head_count": 24,
    "llama.attention.head_count_kv": 8,
    "llama.block_count": 28,
    "llama.context_length": 131072,
    "llama.embedding_length": 3072,
    "llama.vocab_size": 128256,
    "tokenizer.ggml.model": "gpt2",
}

_TEMPLATE = "{{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }}"
_STOP = '"<|eot_id|>"'

TAGS_KEYS = (
    "name",
    "model",
    "remote_model",
    "remote_host",
    "modified_at",
    "size",
    "digest",
    "details",
    "capabilities",
)
SHOW_KEYS = (
    "license",
    "modelfile",
    "parameters",
    "template",
    "system",
    "renderer",
    "parser",
    "details",
    "messages",
    "remote_model",
    "remote_host",
    "model_info",
    "projector_info",
    "tensors",
    "capabilities",
    "modified_at",
    "requires",
)
PS_KEYS = (
    "name",
    "model",
    "size",
    "digest",
    "details",
    "expires_at",
    "size_vram",
    "context_length",
)
# Fields Go always writes (no omitempty); the rest are dropped when empty.
_ALWAYS = {
    "name",
    "model",
    "modified_at",
    "size",
    "digest",
    "details",
    "model_info",
    "expires_at",
    "size_vram",
    "context_length",
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
        slash = rest.rfind("/")
        colon = rest.rfind(":")
        if colon > slash:
            rest, tag = rest[:colon], rest[colon + 1 :] or DEFAULT_TAG
        parts = rest.split("/")
        host, namespace = DEFAULT_HOST, DEFAULT_NAMESPACE
        if len(parts) >= 3:
            host, namespace = parts[-3], parts[-2]
        elif len(parts) == 2:
            namespace = parts[0]
        return cls(host, namespace, parts[-1], tag)

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


def same_model(a: str, b: str) -> bool:
    """Whether two names mean the same model (``llama3`` is ``llama3:latest``)."""
    return ModelName.parse(a).display_shortest().lower() == (
        ModelName.parse(b).display_shortest().lower()
    )


def digest_of(*parts: object) -> str:
    """A stable ``sha256:<hex>`` digest for invented content."""
    text = "\x00".join(str(p) for p in parts)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def layer_digests(model: str, count: int) -> list[str]:
    """Stable digests for a model's ``count`` layers (the config blob is last)."""
    return [
        digest_of("layer", ModelName.parse(model).display_shortest(), i)
        for i in range(count)
    ]


def entry_name(entry: str | Mapping[str, Any]) -> str:
    """The name of a ``models`` or ``loaded`` entry (a name, or a dict with one)."""
    if isinstance(entry, str):
        return entry
    return str(entry.get("name") or entry.get("model") or "")


def find_entry(
    entries: Sequence[str | Mapping[str, Any]], name: str
) -> str | Mapping[str, Any] | None:
    """The entry for ``name`` in a ``models`` or ``loaded`` list, if any."""
    for entry in entries:
        if same_model(entry_name(entry), name):
            return entry
    return None


def model_record(
    entry: str | Mapping[str, Any], modified_at: datetime.datetime
) -> dict[str, Any]:
    """Every field Ollama shows about a pulled model: defaults, then the entry's own."""
    name = entry_name(entry)
    parsed = ModelName.parse(name)
    weights = layer_digests(name, len(DEFAULT_LAYER_SIZES))[0]
    record: dict[str, Any] = {
        "name": name,
        "model": name,
        "modified_at": rfc3339(modified_at),
        "size": sum(DEFAULT_LAYER_SIZES),
        "digest": digest_of("manifest", parsed.display_shortest())[7:],
        "details": dict(_DETAILS),
        "capabilities": ["completion", "tools"],
        "license": "",
        "template": _TEMPLATE,
        "parameters": f"{'stop':<30} {_STOP}",
        "model_info": dict(_MODEL_INFO),
        "modelfile": (
            '# Modelfile generated by "ollama show"\n'
            "# To build a new Modelfile based on this, replace FROM with:\n"
            f"# FROM {parsed.display_shortest()}\n\n"
            f"FROM {MODELS_DIR}/blobs/{weights.replace(':', '-')}\n"
            f'TEMPLATE """{_TEMPLATE}"""\n'
            f"PARAMETER stop {_STOP}\n"
        ),
    }
    if not isinstance(entry, str):
        record.update(entry)
    return record


def pick(record: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """The fields of one response type, empty optional ones left out as Go does."""
    out: dict[str, Any] = {}
    for key in keys:
        if key not in record:
            continue
        value = record[key]
        if key in _ALWAYS or value not in (None, 0, "", [], {}):
            out[key] = value
    return out


def expires_at(now: datetime.datetime, keep_alive: float | None) -> str:
    """When a loaded model unloads, as ``/api/ps`` shows it."""
    if keep_alive is None:
        delta = DEFAULT_KEEP_ALIVE
    elif keep_alive == float("inf"):
        delta = FOREVER
    else:
        delta = datetime.timedelta(seconds=keep_alive)
    try:
        return rfc3339(now + delta)
    except OverflowError:  # past year 9999: Go would print it, Python cannot
        return "9999-12-31T23:59:59.999999Z"
