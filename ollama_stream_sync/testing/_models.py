"""The model registry: names, invented records, and what is pulled and loaded.

Shapes follow Ollama's ``api/types.go``; values are realistic and stable per
name. An entry's fields override them, except those that shape them:
``details`` and ``model_info`` (merged), ``context_length`` and
``embedding_length`` (in ``model_info``), ``parameters`` (a dict, as create's).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ._wire import keep_alive_seconds, now_utc, rfc3339

Entry = str | Mapping[str, Any]
"""One model of ``models`` or ``loaded``: a name, or a dict with a ``name``."""

MODELS_DIR = "/usr/share/ollama/.ollama/models"  # a Linux service install's
# A llama3.2:3b-like pull: weights, template, license, params, config blobs.
DEFAULT_LAYER_SIZES: tuple[int, ...] = (2019377376, 1429, 7711, 6016, 96, 561)
_FOREVER = (2**63 - 1) / 1e9  # Go's longest duration, in seconds
DEFAULT_NUM_CTX = 4096  # the server's when nothing sets one (under 24 GiB of VRAM)

_DETAILS = {"parent_model": "", "format": "gguf", "family": "llama"}
_DETAILS |= {"parameter_size": "3.2B", "quantization_level": "Q4_K_M"}
_GENERAL = {"file_type": 15, "parameter_count": 3212749888, "quantization_version": 2}
_ARCH = {"attention.head_count": 24, "attention.head_count_kv": 8, "block_count": 28}
_ARCH |= {"context_length": 131072, "embedding_length": 3072, "vocab_size": 128256}
_TEMPLATE = "{{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }}"
_SHAPING = {"details", "model_info", "parameters", "context_length", "embedding_length"}

TAGS_KEYS = """name model remote_model remote_host modified_at size digest details
    capabilities""".split()
SHOW_KEYS = """license modelfile parameters template system renderer parser details
    messages remote_model remote_host model_info projector_info tensors capabilities
    modified_at requires""".split()
PS_KEYS = "name model size digest details expires_at size_vram context_length".split()
_ALWAYS = set(  # fields Go always writes (no omitempty)
    """name model modified_at size digest details model_info expires_at size_vram
    context_length""".split()
)


def name_parts(name: str) -> tuple[str, str, str, str]:
    """Host, namespace, model, tag, as Ollama's ``types/model`` fills them in."""
    rest, tag = name, "latest"
    colon = rest.rfind(":")
    if colon > rest.rfind("/"):
        rest, tag = rest[:colon], rest[colon + 1 :] or tag
    *prefix, model = rest.split("/")
    prefix = ["registry.ollama.ai", "library"][: max(0, 2 - len(prefix))] + prefix
    return prefix[-2], prefix[-1], model, tag


def full_name(name: str) -> str:
    """``Name.String()``, every part: ``registry.ollama.ai/library/qwen2:latest``."""
    host, namespace, model, tag = name_parts(name)
    return f"{host}/{namespace}/{model}:{tag}"


def shortest(name: str) -> str:
    """``Name.DisplayShortest()``, as errors show it: ``llama3:latest``."""
    host, namespace, model, tag = name_parts(name)
    if host.lower() != "registry.ollama.ai":
        return full_name(name)
    prefix = "" if namespace.lower() == "library" else f"{namespace}/"
    return f"{prefix}{model}:{tag}"


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
    return next((e for e in entries if shortest(entry_name(e)).lower() == key), None)


def parameters_text(parameters: Mapping[str, Any]) -> str:
    """``ShowResponse.Parameters``: ``%-30s %#v`` per value, lists one per line."""
    values = [
        (key, int(v) if isinstance(v, float) and v.is_integer() else v)
        for key, value in parameters.items()
        for v in (value if isinstance(value, list) else [value])
    ]
    return "\n".join(f"{k:<30} {json.dumps(v, ensure_ascii=False)}" for k, v in values)


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
    params = spec.get("parameters", {"stop": "<|eot_id|>"})
    text = params if isinstance(params, str) else parameters_text(params)
    weights = layer_digests(name, 1)[0].replace(":", "-")
    modelfile = (
        '# Modelfile generated by "ollama show"\n'
        "# To build a new Modelfile based on this, replace FROM with:\n"
        f"# FROM {shortest(name)}\n\nFROM {MODELS_DIR}/blobs/{weights}\n"
        f'TEMPLATE """{_TEMPLATE}"""\n'
    )
    modelfile += "".join(
        f"PARAMETER {' '.join(x.split(maxsplit=1))}\n" for x in text.splitlines()
    )
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
        "modelfile": modelfile,
    }
    return record | {k: v for k, v in spec.items() if k not in _SHAPING}


def pick(record: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """The fields of one response type, empty optional ones left out as Go does."""
    empty: tuple[Any, ...] = (None, 0, "", [], {})
    return {k: record[k] for k in keys if k in _ALWAYS or record.get(k) not in empty}


@dataclass(frozen=True)
class ModelLimits:
    """What a request's checks need to know of one model."""

    capabilities: tuple[str, ...] | None  # None: none declared, nothing refused
    context_length: int  # the architecture's: no num_ctx goes above it
    embedding_length: int
    parameters: Mapping[str, Any]
    system: str

    def option(self, options: Any, key: str, default: int) -> int:
        """A number from the request's options, else the model's, else ``default``."""
        asked = options if isinstance(options, Mapping) else {}
        for value in (asked.get(key), self.parameters.get(key)):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return int(value)
        return default

    def num_ctx(self, options: Any) -> int:
        """The context a request runs with: its ``num_ctx``, the model's, 4096."""
        asked = self.option(options, "num_ctx", DEFAULT_NUM_CTX)
        return min(asked, self.context_length)


class Lists(Protocol):
    """The public lists of the server the registry keeps."""

    models: list[Entry]
    loaded: list[Entry]
    unknown_models: set[str]


class Registry:
    """Reads and changes a server's model lists under its lock, as Ollama would."""

    def __init__(self, lists: Lists, cond: threading.Condition) -> None:
        self.lists, self._cond = lists, cond
        self._loads: dict[str, tuple[datetime.datetime, int]] = {}  # until, num_ctx
        self._started_at = now_utc()

    def find(self, name: str) -> Entry | None:
        """The pulled model called ``name``, if any."""
        with self._cond:
            return find_entry(self.lists.models, name)

    def is_unknown(self, name: str) -> bool:
        """Whether the registry lacks ``name`` (a pull of it fails)."""
        with self._cond:
            return find_entry(sorted(self.lists.unknown_models), name) is not None

    def limits(self, name: str) -> ModelLimits:
        """The limits of ``name``: its entry's, or the defaults if not pulled."""
        entry = self.find(name) or name
        spec: Mapping[str, Any] = {} if isinstance(entry, str) else entry
        record = model_record(entry, self._started_at)
        info, arch = record["model_info"], record["details"]["family"]
        declared, params = spec.get("capabilities"), spec.get("parameters")
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
            entries = list(self.lists.models)
        return [pick(model_record(e, self._started_at), TAGS_KEYS) for e in entries]

    def show(self, name: str) -> dict[str, Any] | None:
        """``/api/show`` for ``name``; None if it is not pulled."""
        entry = self.find(name)
        if entry is None:
            return None
        return pick(model_record(entry, self._started_at), SHOW_KEYS)

    def ps(self) -> list[dict[str, Any]]:
        """``/api/ps``: the loaded models, the longest time left first."""
        listed = (_expiry(None), DEFAULT_NUM_CTX)  # for a model loaded by hand
        with self._cond:
            loaded, pulled = list(self.lists.loaded), list(self.lists.models)
            loads = dict(self._loads)
        out: list[tuple[datetime.datetime, dict[str, Any]]] = []
        for entry in loaded:
            name = entry_name(entry)
            until, num_ctx = loads.get(shortest(name).lower(), listed)
            record = model_record(find_entry(pulled, name) or name, self._started_at)
            record |= {"name": name, "model": name, "size_vram": record["size"]}
            record |= {"expires_at": rfc3339(until), "context_length": num_ctx}
            record |= {} if isinstance(entry, str) else dict(entry)
            out.append((until, record))
        out.sort(key=lambda pair: pair[0], reverse=True)
        return [pick(record, PS_KEYS) for _, record in out]

    def note_loaded(
        self, model: str, keep_alive: Any, num_ctx: int, answering: bool = False
    ) -> None:
        """A request loaded its model for ``keep_alive``, or unloaded it (0);
        ``answering``: it is listed while it answers, whatever ``keep_alive``."""
        seconds = None if keep_alive is None else keep_alive_seconds(keep_alive)
        if answering and seconds == 0:
            seconds = None
        key, loaded = shortest(model).lower(), self.lists.loaded
        with self._cond:
            entry = find_entry(loaded, model)
            if seconds == 0:
                if entry is not None:
                    loaded.remove(entry)
                self._loads.pop(key, None)
            else:
                if entry is None:
                    loaded.append(model)
                self._loads[key] = (_expiry(seconds), num_ctx)
            self._cond.notify_all()

    def add(self, name: str, body: Mapping[str, Any] | None = None) -> None:
        """A pull or create finished: list the model (with a create's fields)."""
        extra = {k: body[k] for k in ("system", "template") if body and body.get(k)}
        if lic := (body or {}).get("license"):
            extra["license"] = (
                "\n".join(map(str, lic)) if isinstance(lic, list) else lic
            )
        if body and isinstance(body.get("parameters"), Mapping):
            extra["parameters"] = dict(body["parameters"])
        with self._cond:
            models = self.lists.models
            old = find_entry(models, name)
            if old is not None:
                models.remove(old)
            models.append({"name": name, **extra} if extra else name)
            self._cond.notify_all()


def _expiry(seconds: float | None) -> datetime.datetime:
    """When a model loaded now unloads (Ollama's default: five minutes)."""
    seconds = 300 if seconds is None else min(seconds, _FOREVER)  # -1: forever
    return now_utc() + datetime.timedelta(seconds=seconds)
