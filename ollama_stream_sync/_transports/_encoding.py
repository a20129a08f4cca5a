"""Content-Encoding decoders whose output is bounded per step.

A small compressed bomb must not balloon memory before the line-length check
runs: these decoders hand out at most ``PIECE`` bytes at a time. gzip and deflate
use the standard library; br and zstd need a bounded decoder installed (Brotli
>= 1.2, ``compression.zstd`` or ``backports.zstd``).
"""

from __future__ import annotations

import importlib
import sys
import zlib
from collections.abc import Callable, Iterator
from typing import Any

from ollama_stream_sync._errors import ProtocolError

PIECE = 64 * 1024
"""The most decoded bytes produced before the consumer looks at them."""

Decompress = Callable[[bytes, int], bytes]


class _Zlib:
    """gzip (possibly several members) or deflate (zlib or raw), bounded."""

    def __init__(self, gzip: bool) -> None:
        self._gzip = gzip
        self._wbits = 16 + zlib.MAX_WBITS if gzip else zlib.MAX_WBITS
        self._obj = zlib.decompressobj(self._wbits)
        self._first = not gzip  # deflate: zlib format first, raw on failure
        self._seen = b""

    def decode(self, data: bytes) -> Iterator[bytes]:
        while data:
            try:
                out = self._obj.decompress(data, PIECE)
            except zlib.error:
                if not self._first:
                    raise
                # Many servers send raw deflate under "deflate": retry raw.
                self._first = False
                self._obj = zlib.decompressobj(-zlib.MAX_WBITS)
                data, self._seen = self._seen + data, b""
                continue
            if self._first:
                self._seen += data
                if out:
                    self._first, self._seen = False, b""
            if out:
                yield out
            if self._obj.unconsumed_tail:
                data = self._obj.unconsumed_tail
            elif self._obj.eof and self._obj.unused_data and self._gzip:
                data = self._obj.unused_data  # the next gzip member
                self._obj = zlib.decompressobj(self._wbits)
            else:
                data = b""

    def flush(self) -> bytes:
        return self._obj.flush()


class _Bounded:
    """A ``decompress(data, max_length)`` function as a decoder."""

    def __init__(self, decompress: Decompress) -> None:
        self._decompress = decompress

    def decode(self, data: bytes) -> Iterator[bytes]:
        out = self._decompress(data, PIECE)
        while out:
            yield out
            out = self._decompress(b"", PIECE)

    def flush(self) -> bytes:
        return b""


def _brotli() -> Decompress | None:
    for name in ("brotli", "brotlicffi"):
        try:
            module: Any = importlib.import_module(name)
        except ImportError:
            continue
        obj = module.Decompressor()
        process = getattr(obj, "process", None)
        if process is None or not hasattr(obj, "can_accept_more_data"):
            return None  # too old to bound its output: not offered

        def decompress(data: bytes, limit: int, _p: Any = process) -> bytes:
            return bytes(_p(data, output_buffer_limit=limit))

        return decompress
    return None


def _zstd() -> Decompress | None:
    name = "compression.zstd" if sys.version_info >= (3, 14) else "backports.zstd"
    try:
        module: Any = importlib.import_module(name)
    except ImportError:
        return None
    state = {"obj": module.ZstdDecompressor()}

    def decompress(data: bytes, limit: int) -> bytes:
        obj = state["obj"]
        if obj.eof:
            data = obj.unused_data + data
            if not data:
                return b""
            obj = state["obj"] = module.ZstdDecompressor()
        if not data and obj.needs_input:
            return b""
        return bytes(obj.decompress(data, max_length=limit))

    return decompress


class BodyDecoder:
    """Decodes one response body's ``Content-Encoding`` chain, bounded per step."""

    __slots__ = ("_chain", "encoding")

    def __init__(self, content_encoding: str) -> None:
        self.encoding = content_encoding
        names = [e.strip().lower() for e in content_encoding.split(",")]
        names = [n for n in names if n not in ("", "identity")]
        if len(names) > 5:
            raise ProtocolError(f"too many content encodings: {content_encoding!r}")
        # Applied in order, so undone in reverse.
        self._chain = [_make(n) for n in reversed(names)]

    @property
    def identity(self) -> bool:
        """True when there is nothing to decode."""
        return not self._chain

    def decode(self, data: bytes) -> Iterator[bytes]:
        """Yield the decoded bytes of ``data``, at most ``PIECE`` bytes at a time."""
        try:
            yield from self._through(0, data)
        except (zlib.error, OSError, ValueError) as exc:
            raise ProtocolError(
                f"the response body is not valid {self.encoding} data: {exc}"
            ) from exc

    def _through(self, index: int, data: bytes) -> Iterator[bytes]:
        if index == len(self._chain):
            yield data
            return
        for piece in self._chain[index].decode(data):
            yield from self._through(index + 1, piece)

    def finish(self) -> Iterator[bytes]:
        """Yield what the decoders still hold at the end of the body."""
        for index, decoder in enumerate(self._chain):
            rest = decoder.flush()
            if rest:
                yield from self._through(index + 1, rest)


def _make(name: str) -> _Zlib | _Bounded:
    if name in ("gzip", "x-gzip"):
        return _Zlib(gzip=True)
    if name == "deflate":
        return _Zlib(gzip=False)
    if name == "br":
        brotli = _brotli()
        if brotli is not None:
            return _Bounded(brotli)
    if name == "zstd":
        zstd = _zstd()
        if zstd is not None:
            return _Bounded(zstd)
    raise ProtocolError(
        f"the server sent Content-Encoding {name!r}, which this client cannot "
        "decode (install 'brotli>=1.2' for br, 'backports.zstd' for zstd)"
    )


def accept_encoding() -> str:
    """The ``Accept-Encoding`` value listing exactly what ``BodyDecoder`` decodes."""
    names = ["gzip", "deflate"]
    if _brotli() is not None:
        names.append("br")
    if _zstd() is not None:
        names.append("zstd")
    return ", ".join(names)
