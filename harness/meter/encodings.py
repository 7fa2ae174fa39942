"""An answer's body as the meter reads it: unchunked and inflated.

The meter passes an answer's body to the CLI as it came, framing and all, and reads it later
(`proxy._CallMeter`): `BodyDecoder` undoes the chunked framing (with the same C parser) and
the compression, incrementally, on bytes cut anywhere.

The meter asks every provider for `Accept-Encoding: identity`, but a provider or a proxy in
between may compress anyway. The CLI gets the answer as it was sent (its client inflates it);
the meter reads its usage from the inflated bytes, so the call is still metered. gzip and
deflate are in the standard library; an encoding it cannot inflate (br, zstd) is read as it
came, and the call shows as `incomplete`.
"""

from __future__ import annotations

import zlib

import httptools

from harness.meter.usage import MAX_BODY_BYTES

# More inflated bytes than this from one answer are not read (a zip bomb costs nothing more):
# a streamed answer's events and a whole answer's body are both capped below it anyway.
MAX_INFLATED_BYTES = 4 * MAX_BODY_BYTES

_GZIP = 16 + zlib.MAX_WBITS
_ZLIB = zlib.MAX_WBITS
_RAW_DEFLATE = -zlib.MAX_WBITS


class Inflater:
    def __init__(self, wbits: int) -> None:
        self._wbits = wbits
        self._inflate = zlib.decompressobj(wbits)
        self._started = False
        self._out = 0
        self._broken = False

    def feed(self, chunk: bytes) -> bytes:
        if self._broken or self._out >= MAX_INFLATED_BYTES or not chunk:
            return b""
        try:
            data = self._inflate.decompress(chunk, MAX_INFLATED_BYTES - self._out)
        except zlib.error:
            if self._started or self._wbits != _ZLIB:
                self._broken = True  # read no further: what was read stands
                return b""
            # "deflate" sent raw, without the zlib wrapper RFC 9110 asks for (some servers do).
            self._wbits, self._inflate = _RAW_DEFLATE, zlib.decompressobj(_RAW_DEFLATE)
            return self.feed(chunk)
        self._started = True
        self._out += len(data)
        return data


def inflater(content_encoding: bytes) -> Inflater | None:
    """An inflater for the answer's `Content-Encoding`, None when it needs none (or none the
    meter has)."""
    coding = content_encoding.strip().lower()
    if coding in (b"gzip", b"x-gzip"):
        return Inflater(_GZIP)
    if coding == b"deflate":
        return Inflater(_ZLIB)
    return None


class Dechunker:
    """The data of a chunked body, fed its bytes as they came on the wire."""

    def __init__(self) -> None:
        self._out: list[bytes] = []
        self._parser = httptools.HttpResponseParser(self)
        self._parser.feed_data(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        self._broken = False

    def on_body(self, body: bytes) -> None:
        self._out.append(body)

    def feed(self, raw: bytes) -> bytes:
        if not self._broken:
            try:
                self._parser.feed_data(raw)
            except httptools.HttpParserError:
                self._broken = True  # read no further: what was read stands
        out = b"".join(self._out)
        self._out.clear()
        return out


class BodyDecoder:
    """An answer's body, from the bytes on the wire to the bytes its content type describes."""

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        self._dechunk: Dechunker | None = None
        self._inflate: Inflater | None = None
        for name, value in headers:
            lowered = name.lower()
            if lowered == b"transfer-encoding" and b"chunked" in value.lower():
                self._dechunk = Dechunker()
            elif lowered == b"content-encoding":
                # Asked for uncompressed, but a provider (or a proxy) may compress anyway.
                self._inflate = inflater(value)

    def feed(self, raw: bytes) -> bytes:
        data = self._dechunk.feed(raw) if self._dechunk is not None else raw
        return self._inflate.feed(data) if self._inflate is not None else data
