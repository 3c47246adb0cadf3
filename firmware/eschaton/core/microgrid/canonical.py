"""Canonical encoding of plain values, for signatures and ledger hashes.

Rules:
- A plain value is an int, bytes, str, a list of plain values or a dict with str keys.
- There is exactly one encoding per value (sorted keys, no leading zeros, no ``-0``, the whole
  input consumed), so a signature or a hash over an encoding is stable across nodes and restarts.
- Unlike bencode, str and bytes are distinct types on the wire of this encoding. Why hand-written
  instead of reusing the wire bencode: a ledger entry must decode back to exactly the value that
  was hashed (bencode folds str into bytes), and signed microgrid messages must not change
  meaning if the link codec evolves.

Grammar: ``i<decimal>e`` | ``b<len>:<bytes>`` | ``s<len>:<utf-8>`` | ``l<items>e`` |
``d(<s-key><value>)*e``.
"""
from __future__ import annotations

from typing import TypeAlias

from eschaton.core.microgrid.errors import CodecError

Plain: TypeAlias = int | bytes | str | list["Plain"] | dict[str, "Plain"]

MAX_DEPTH = 8


def encode(value: Plain) -> bytes:
    """Canonical bytes of ``value``; raises ``CodecError`` for anything not plain."""
    out = bytearray()
    _enc(value, out, 0)
    return bytes(out)


def _enc(value: Plain, out: bytearray, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise CodecError("value nested too deeply")
    if isinstance(value, bool):
        raise CodecError("booleans are not plain values; use 0/1")
    if isinstance(value, int):
        out += b"i%de" % value
    elif isinstance(value, bytes):
        out += b"b%d:" % len(value) + value
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        out += b"s%d:" % len(raw) + raw
    elif isinstance(value, list):
        out += b"l"
        for item in value:
            _enc(item, out, depth + 1)
        out += b"e"
    elif isinstance(value, dict):
        out += b"d"
        keys = list(value)
        if not all(isinstance(k, str) for k in keys):
            raise CodecError("dict keys must be str")
        for k in sorted(keys, key=lambda s: s.encode("utf-8")):
            _enc(k, out, depth + 1)
            _enc(value[k], out, depth + 1)
        out += b"e"
    else:
        raise CodecError(f"not a plain value: {type(value).__name__}")


def decode(data: bytes) -> Plain:
    """The value whose canonical encoding is ``data``; raises ``CodecError`` otherwise."""
    value, pos = _dec(data, 0, 0)
    if pos != len(data):
        raise CodecError("trailing bytes")
    return value


def _int_at(data: bytes, pos: int, end_byte: int) -> tuple[int, int]:
    end = data.find(bytes([end_byte]), pos)
    if end < 0:
        raise CodecError("unterminated number")
    text = data[pos:end]
    neg = text.startswith(b"-")
    digits = text[1:] if neg else text
    if not digits or not digits.isdigit() or (digits[0:1] == b"0" and (len(digits) > 1 or neg)):
        raise CodecError("non-canonical number")
    if len(digits) > 40:
        raise CodecError("number too long")
    n = int(digits)
    return (-n if neg else n), end + 1


def _dec(data: bytes, pos: int, depth: int) -> tuple[Plain, int]:
    if depth > MAX_DEPTH:
        raise CodecError("value nested too deeply")
    if pos >= len(data):
        raise CodecError("truncated")
    tag = data[pos]
    if tag == ord("i"):
        return _int_at(data, pos + 1, ord("e"))
    if tag in (ord("b"), ord("s")):
        length, start = _int_at(data, pos + 1, ord(":"))
        if length < 0 or start + length > len(data):
            raise CodecError("bad length")
        raw = data[start:start + length]
        if tag == ord("b"):
            return raw, start + length
        try:
            return raw.decode("utf-8"), start + length
        except UnicodeDecodeError as exc:
            raise CodecError("invalid utf-8") from exc
    if tag == ord("l"):
        items: list[Plain] = []
        pos += 1
        while pos < len(data) and data[pos] != ord("e"):
            item, pos = _dec(data, pos, depth + 1)
            items.append(item)
        if pos >= len(data):
            raise CodecError("unterminated list")
        return items, pos + 1
    if tag == ord("d"):
        result: dict[str, Plain] = {}
        pos += 1
        last: bytes | None = None
        while pos < len(data) and data[pos] != ord("e"):
            if data[pos] != ord("s"):
                raise CodecError("dict key is not a str")
            key, pos = _dec(data, pos, depth + 1)
            assert isinstance(key, str)
            kb = key.encode("utf-8")
            if last is not None and kb <= last:
                raise CodecError("dict keys not strictly sorted")
            last = kb
            result[key], pos = _dec(data, pos, depth + 1)
        if pos >= len(data):
            raise CodecError("unterminated dict")
        return result, pos + 1
    raise CodecError(f"unknown tag {tag:#x}")
