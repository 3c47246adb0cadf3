"""Sans-IO frame codecs: one frame = one Noise message (handshake or transport).

Rules / theory of operation:
- Stream transports (TCP, in-memory pipes) carry ``u16 big-endian length || frame``. Frames are
  1..65535 bytes (Noise's own maximum). A zero or oversized length cannot be resynchronised on a
  byte stream, so the deframer then stays broken and the connection must close.
- Serial lines carry ``COBS(frame || CRC-32 little-endian) || 0x00``. COBS removes every zero
  byte from the body, so 0x00 always marks a frame end and the receiver resynchronises after line
  noise at the next delimiter. The CRC detects corrupted bytes; such a frame is reported as a
  ``CrcError`` and dropped, and decoding continues with the next frame.
- ``feed()`` only buffers; ``next_frame()`` returns the next frame, ``None`` when more bytes are
  needed, or raises a ``FrameError`` for one bad frame (call it again to continue).

COBS is hand-written (30 lines, below) rather than taken from the ``cobs`` PyPI package: that
package is not among the pinned dependencies, is a C extension to cross-build for the Pi, and
the algorithm is small enough to fuzz here completely.
"""
from __future__ import annotations

import zlib

from eschaton.core.wire.errors import CrcError, FrameError

MAX_FRAME = 65535


def encode_stream_frame(frame: bytes) -> bytes:
    """Length-prefix one frame for a byte stream."""
    if not 0 < len(frame) <= MAX_FRAME:
        raise FrameError(f"frame of {len(frame)} bytes outside 1..{MAX_FRAME}")
    return len(frame).to_bytes(2, "big") + frame


class StreamDeframer:
    """Splits a byte stream into length-prefixed frames."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self.max_frame = max_frame
        """May be lowered or raised between frames (the handshake allows only small ones)."""
        self._broken: FrameError | None = None

    def feed(self, data: bytes) -> None:
        if self._broken is None:
            self._buf += data

    def next_frame(self) -> bytes | None:
        if self._broken is not None:
            raise self._broken
        if len(self._buf) < 2:
            return None
        n = int.from_bytes(self._buf[:2], "big")
        if n == 0 or n > self.max_frame:
            self._broken = FrameError(f"bad frame length {n} (allowed 1..{self.max_frame})")
            self._buf.clear()
            raise self._broken
        if len(self._buf) < 2 + n:
            return None
        frame = bytes(self._buf[2:2 + n])
        del self._buf[:2 + n]
        return frame


def cobs_encode(data: bytes) -> bytes:
    """Consistent Overhead Byte Stuffing: output contains no 0x00 byte."""
    out = bytearray()
    code_pos = 0
    out.append(0)  # placeholder for the first code byte
    code = 1
    for byte in data:
        if byte == 0:
            out[code_pos] = code
            code_pos = len(out)
            out.append(0)
            code = 1
            continue
        out.append(byte)
        code += 1
        if code == 0xFF:
            out[code_pos] = code
            code_pos = len(out)
            out.append(0)
            code = 1
    out[code_pos] = code
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """Inverse of ``cobs_encode``; raises ``FrameError`` for invalid input."""
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise FrameError("COBS: zero byte inside a frame")
        end = i + code
        if end > n:
            raise FrameError("COBS: code byte runs past the end of the frame")
        block = data[i + 1:end]
        if 0 in block:
            raise FrameError("COBS: zero byte inside a block")
        out += block
        i = end
        if code < 0xFF and i < n:
            out.append(0)
    return bytes(out)


def encode_serial_frame(frame: bytes) -> bytes:
    """COBS(frame || CRC-32) followed by the 0x00 delimiter."""
    if not 0 < len(frame) <= MAX_FRAME:
        raise FrameError(f"frame of {len(frame)} bytes outside 1..{MAX_FRAME}")
    crc = zlib.crc32(frame).to_bytes(4, "little")
    return cobs_encode(frame + crc) + b"\x00"


# Largest COBS encoding of MAX_FRAME + 4 CRC bytes: one overhead byte per 254 bytes.
_MAX_ENCODED = MAX_FRAME + 4 + (MAX_FRAME + 4) // 254 + 2


class SerialDeframer:
    """Splits a serial byte stream into CRC-checked frames, resynchronising on 0x00."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self._max = max_frame
        self._overflow = False
        self.crc_errors = 0
        """Frames dropped because their CRC did not match."""
        self.bad_frames = 0
        """Frames dropped for any other reason (bad COBS, too long, too short)."""

    def feed(self, data: bytes) -> None:
        self._buf += data
        # Without a delimiter in sight, keep at most one maximal encoded frame; the rest is noise.
        if b"\x00" not in self._buf and len(self._buf) > _MAX_ENCODED:
            self._buf.clear()
            self._overflow = True

    def next_frame(self) -> bytes | None:
        while True:
            end = self._buf.find(b"\x00")
            if end < 0:
                return None
            chunk = bytes(self._buf[:end])
            del self._buf[:end + 1]
            if self._overflow:
                # The tail of an over-long frame: discard it, then report once.
                self._overflow = False
                self.bad_frames += 1
                raise FrameError("serial frame too long; discarded")
            if not chunk:
                continue  # back-to-back delimiters are idle fill, not frames
            return self._check(chunk)

    def _check(self, chunk: bytes) -> bytes:
        try:
            raw = cobs_decode(chunk)
        except FrameError:
            self.bad_frames += 1
            raise
        if len(raw) < 5 or len(raw) - 4 > self._max:
            self.bad_frames += 1
            raise FrameError(f"serial frame of {len(raw)} bytes has a bad size")
        frame, crc = raw[:-4], raw[-4:]
        if zlib.crc32(frame).to_bytes(4, "little") != crc:
            self.crc_errors += 1
            raise CrcError("serial frame CRC-32 mismatch (line corruption)")
        return frame
