"""Strict, canonical bencode (the encoding the design names for wire messages).

Rules / theory of operation:
- Canonical means one byte string per value, so signatures and hashes over encodings are stable:
  integers have no leading zeros and no ``-0``; string lengths have no leading zeros; dictionary
  keys are byte strings in strictly ascending raw-byte order (so no duplicates); the whole input
  must be consumed. Anything else is rejected, never "repaired".
- Every decode runs under explicit limits (total size, nesting depth, item count, integer digits)
  so a hostile peer cannot make us allocate or recurse without bound.
- Only ``BencodeError`` (a ``WireError``, hence a ``RemoteError``) leaves ``decode``.

Why hand-written: the bencode packages on PyPI (bencode.py, bencoder, better-bencode) accept
non-canonical input (unsorted keys, leading zeros) and have no size or depth limits, which is
exactly what a decoder facing the network must refuse. The codec is ~150 lines and fuzzed.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias, cast

from eschaton.core.wire.errors import BencodeError, EncodeError

# What decode returns. Dictionary keys stay bytes: the message layer decides what they mean.
BValue: TypeAlias = int | bytes | list["BValue"] | dict[bytes, "BValue"]
# What encode accepts: str is a convenience for UTF-8 bytes (keys and values).
EValue: TypeAlias = (
    int | bytes | str | Sequence["EValue"] | Mapping[str, "EValue"] | Mapping[bytes, "EValue"]
)

_DIGITS = frozenset(b"0123456789")


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds a decode must stay within."""

    max_size: int = 65535
    """Largest accepted input in bytes (one Noise transport message at most)."""
    max_depth: int = 8
    """Deepest nesting of lists/dicts."""
    max_items: int = 4096
    """Most list items plus dict entries in the whole value."""
    max_int_digits: int = 20
    """Most decimal digits of an integer (20 covers unsigned 64-bit)."""


DEFAULT_LIMITS = Limits()


def encode(value: EValue) -> bytes:
    """Canonical encoding of ``value``; raises ``EncodeError`` for unencodable values."""
    out: list[bytes] = []
    _encode(value, out, 0)
    return b"".join(out)


def _encode(value: EValue, out: list[bytes], depth: int) -> None:
    if depth > 64:
        raise EncodeError("bencode: value nested too deeply")
    # Fast paths for the exact builtin types (ABC isinstance checks dominate the profile).
    t = type(value)
    if t is bytes:
        raw = cast(bytes, value)
        out.append(b"%d:%s" % (len(raw), raw))
        return
    if t is int:
        out.append(b"i%de" % cast(int, value))
        return
    if t is list:
        out.append(b"l")
        for v in cast(list[EValue], value):
            _encode(v, out, depth + 1)
        out.append(b"e")
        return
    if isinstance(value, bool):
        # bool is an int subclass; silently encoding True as i1e hides bugs.
        raise EncodeError("bencode: bool is not encodable, use an int")
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, bytes | bytearray | memoryview):
        b = bytes(value)
        out.append(b"%d:" % len(b))
        out.append(b)
    elif isinstance(value, str):
        b = value.encode("utf-8")
        out.append(b"%d:" % len(b))
        out.append(b)
    elif isinstance(value, Mapping):
        items: list[tuple[bytes, EValue]] = []
        for k, v in value.items():
            if isinstance(k, str):
                kb = k.encode("utf-8")
            elif isinstance(k, bytes):
                kb = k
            else:
                raise EncodeError(f"bencode: dict key {k!r} is not str or bytes")
            items.append((kb, v))
        items.sort(key=lambda kv: kv[0])
        for i in range(1, len(items)):
            if items[i - 1][0] == items[i][0]:
                raise EncodeError(f"bencode: duplicate key {items[i][0]!r}")
        out.append(b"d")
        for kb, v in items:
            out.append(b"%d:" % len(kb))
            out.append(kb)
            _encode(v, out, depth + 1)
        out.append(b"e")
    elif isinstance(value, Sequence):
        out.append(b"l")
        for v in value:
            _encode(v, out, depth + 1)
        out.append(b"e")
    else:
        raise EncodeError(f"bencode: cannot encode {type(value).__name__}")


def decode(data: bytes, limits: Limits = DEFAULT_LIMITS) -> BValue:
    """Decode exactly one canonical value spanning all of ``data``."""
    if not isinstance(data, bytes):
        raise BencodeError("bencode: input must be bytes")
    if len(data) > limits.max_size:
        raise BencodeError(f"bencode: input of {len(data)} bytes exceeds {limits.max_size}")
    dec = _Decoder(data, limits)
    value = dec.value(0)
    if dec.pos != len(data):
        raise BencodeError(f"bencode: {len(data) - dec.pos} trailing bytes")
    return value


class _Decoder:
    __slots__ = ("data", "pos", "limits", "items")

    def __init__(self, data: bytes, limits: Limits) -> None:
        self.data = data
        self.pos = 0
        self.limits = limits
        self.items = 0

    def _fail(self, why: str) -> BencodeError:
        return BencodeError(f"bencode: {why} at offset {self.pos}")

    def _count(self) -> None:
        self.items += 1
        if self.items > self.limits.max_items:
            raise self._fail(f"more than {self.limits.max_items} items")

    def value(self, depth: int) -> BValue:
        data = self.data
        if self.pos >= len(data):
            raise self._fail("unexpected end of input")
        c = data[self.pos]
        if c == 0x69:  # 'i'
            return self._int()
        if c == 0x6C:  # 'l'
            return self._list(depth)
        if c == 0x64:  # 'd'
            return self._dict(depth)
        if c in _DIGITS:
            return self._bytes()
        raise self._fail(f"unexpected byte 0x{c:02x}")

    def _digits(self, end_byte: int, allow_sign: bool) -> int:
        """Parse a canonical decimal number terminated by ``end_byte``."""
        data = self.data
        start = self.pos
        end = data.find(bytes((end_byte,)), start, start + self.limits.max_int_digits + 2)
        if end < 0:
            raise self._fail("number too long or unterminated")
        text = data[start:end]
        neg = False
        digits = text
        if allow_sign and text[:1] == b"-":
            neg = True
            digits = text[1:]
        if not digits.isdigit():  # bytes.isdigit: ASCII 0-9 only, False when empty
            raise self._fail("malformed number")
        if len(digits) > self.limits.max_int_digits:
            raise self._fail("number has too many digits")
        if digits[0] == 0x30 and (len(digits) > 1 or neg):
            raise self._fail("non-canonical number (leading zero or -0)")
        self.pos = end + 1
        n = int(digits)
        return -n if neg else n

    def _int(self) -> int:
        self.pos += 1
        return self._digits(0x65, allow_sign=True)  # 'e'

    def _bytes(self) -> bytes:
        n = self._digits(0x3A, allow_sign=False)  # ':'
        end = self.pos + n
        if end > len(self.data):
            raise self._fail(f"string of {n} bytes runs past the end")
        out = self.data[self.pos:end]
        self.pos = end
        return out

    def _list(self, depth: int) -> list[BValue]:
        if depth >= self.limits.max_depth:
            raise self._fail("nested too deeply")
        self.pos += 1
        out: list[BValue] = []
        data = self.data
        while True:
            if self.pos >= len(data):
                raise self._fail("unterminated list")
            if data[self.pos] == 0x65:
                self.pos += 1
                return out
            self._count()
            out.append(self.value(depth + 1))

    def _dict(self, depth: int) -> dict[bytes, BValue]:
        if depth >= self.limits.max_depth:
            raise self._fail("nested too deeply")
        self.pos += 1
        out: dict[bytes, BValue] = {}
        data = self.data
        last: bytes | None = None
        while True:
            if self.pos >= len(data):
                raise self._fail("unterminated dict")
            c = data[self.pos]
            if c == 0x65:
                self.pos += 1
                return out
            if c not in _DIGITS:
                raise self._fail("dict key is not a string")
            self._count()
            key = self._bytes()
            if last is not None and key <= last:
                raise self._fail("dict keys not strictly sorted (non-canonical or duplicate)")
            last = key
            out[key] = self.value(depth + 1)
