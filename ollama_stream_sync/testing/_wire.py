"""JSON as Ollama's Go server writes it, and the small value formats it uses."""

from __future__ import annotations

import datetime
import json
import re
from typing import Any

# Go's encoding/json escapes these inside strings (HTML safety); they can only
# appear inside strings in JSON text, so a plain replace on the output is exact.
_GO_ESCAPE_RE = re.compile("[<>&\u2028\u2029]")

NDJSON = "application/x-ndjson"
JSON_UTF8 = "application/json; charset=utf-8"  # what gin's c.JSON sets
JSON_PLAIN = "application/json"  # what a handler sets before c.JSON keeps it

FIXED_CREATED_AT = "2026-01-01T00:00:00.000000Z"
"""The ``created_at`` of every streamed chunk: fixed, so recorded output is stable."""


def go_json(data: Any) -> bytes:
    """Encode like Go's ``json.Marshal``: compact, UTF-8, HTML characters escaped."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return _GO_ESCAPE_RE.sub(lambda m: f"\\u{ord(m.group()):04x}", text).encode()


def omit_empty(data: dict[str, Any]) -> dict[str, Any]:
    """Drop keys whose value Go's ``omitempty`` drops: None, 0, "", empty lists."""
    return {k: v for k, v in data.items() if v not in (None, 0, "", [], {}, ())}


def rfc3339(moment: datetime.datetime) -> str:
    """A timestamp as Go's ``time.Time`` marshals it (RFC 3339, nanosecond form)."""
    return moment.isoformat().replace("+00:00", "Z")


def now_utc() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1,
    "m": 60,
    "h": 3600,
}


def keep_alive_seconds(value: Any) -> float | None:
    """Seconds of a ``keep_alive`` (a number, or a Go duration such as ``"1h30m"``)
    as Ollama reads it, ``inf`` if negative, or None if unreadable."""
    text = value.strip() if isinstance(value, str) else ""
    parts = _DURATION_RE.findall(body := text.lstrip("+-"))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif body == "0" or (parts and "".join(n + u for n, u in parts) == body):
        sign = -1 if text.startswith("-") else 1
        seconds = sign * sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    else:
        return None
    return float("inf") if seconds < 0 else float(seconds)
