"""Field types for the wire message table: each knows its Python type and its size limits.

A field type converts a decoded bencode value into the Python value handlers see (and checks it),
and checks a Python value before encoding. Both directions use the same limits, so we never send
what we would refuse to receive. Decode-side failures raise ``FieldError`` (the peer's fault);
encode-side failures raise ``EncodeError`` (ours).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeAlias

from eschaton.core.wire.bencode import BValue, EValue
from eschaton.core.wire.errors import EncodeError, FieldError

# The values handlers see in a decoded message.
Value: TypeAlias = int | bytes | str | list["Value"] | dict[str, "Value"]


def _err(remote: bool, text: str) -> Exception:
    return FieldError(text) if remote else EncodeError(text)


class FieldType(Protocol):
    def parse(self, raw: BValue, path: str) -> Value:
        """Validate a decoded bencode value from a peer; raise ``FieldError``."""
        ...

    def check(self, value: object, path: str) -> EValue:
        """Validate a value we are about to send; raise ``EncodeError``."""
        ...

    def describe(self) -> str:
        """A short human description for docs and error messages."""
        ...


@dataclass(frozen=True, slots=True)
class UInt:
    """An unsigned integer of at most ``bits`` bits (or at most ``maximum`` if given)."""

    bits: int = 64
    maximum: int | None = None

    @property
    def limit(self) -> int:
        return self.maximum if self.maximum is not None else (1 << self.bits) - 1

    def _validate(self, value: object, path: str, remote: bool) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _err(remote, f"{path}: expected an integer, got {type(value).__name__}")
        if value < 0 or value > self.limit:
            raise _err(remote, f"{path}: {value} outside 0..{self.limit}")
        return value

    def parse(self, raw: BValue, path: str) -> Value:
        return self._validate(raw, path, True)

    def check(self, value: object, path: str) -> EValue:
        return self._validate(value, path, False)

    def describe(self) -> str:
        return f"uint<={self.limit}" if self.maximum is not None else f"u{self.bits}"


@dataclass(frozen=True, slots=True)
class Bytes:
    """A byte string of ``min_len``..``max_len`` bytes."""

    max_len: int
    min_len: int = 0

    def _validate(self, value: object, path: str, remote: bool) -> bytes:
        if not isinstance(value, bytes):
            raise _err(remote, f"{path}: expected bytes, got {type(value).__name__}")
        if not self.min_len <= len(value) <= self.max_len:
            raise _err(remote, f"{path}: {len(value)} bytes outside {self.min_len}..{self.max_len}")
        return value

    def parse(self, raw: BValue, path: str) -> Value:
        return self._validate(raw, path, True)

    def check(self, value: object, path: str) -> EValue:
        return self._validate(value, path, False)

    def describe(self) -> str:
        if self.min_len == self.max_len:
            return f"bytes[{self.max_len}]"
        return f"bytes[{self.min_len}..{self.max_len}]"


def Fixed(n: int) -> Bytes:  # noqa: N802 - reads like a type in the table
    """Exactly ``n`` bytes (hashes, keys, ids)."""
    return Bytes(max_len=n, min_len=n)


@dataclass(frozen=True, slots=True)
class Text:
    """UTF-8 text of at most ``max_len`` encoded bytes."""

    max_len: int

    def parse(self, raw: BValue, path: str) -> Value:
        if not isinstance(raw, bytes):
            raise FieldError(f"{path}: expected text, got {type(raw).__name__}")
        if len(raw) > self.max_len:
            raise FieldError(f"{path}: {len(raw)} bytes of text exceed {self.max_len}")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FieldError(f"{path}: text is not valid UTF-8") from exc

    def check(self, value: object, path: str) -> EValue:
        if not isinstance(value, str):
            raise EncodeError(f"{path}: expected str, got {type(value).__name__}")
        if len(value.encode("utf-8")) > self.max_len:
            raise EncodeError(f"{path}: text longer than {self.max_len} bytes")
        return value

    def describe(self) -> str:
        return f"text[..{self.max_len}]"


@dataclass(frozen=True, slots=True)
class Scalar:
    """Either an unsigned 64-bit integer or a byte string of at most ``max_len`` bytes.

    For generic parameter maps whose exact shape the channel layer still decides.
    """

    max_len: int = 256

    def parse(self, raw: BValue, path: str) -> Value:
        if isinstance(raw, int):
            return UInt(64).parse(raw, path)
        return Bytes(self.max_len).parse(raw, path)

    def check(self, value: object, path: str) -> EValue:
        if isinstance(value, int) and not isinstance(value, bool):
            return UInt(64).check(value, path)
        return Bytes(self.max_len).check(value, path)

    def describe(self) -> str:
        return f"u64|bytes[..{self.max_len}]"


@dataclass(frozen=True, slots=True)
class ListOf:
    """A list of at most ``max_items`` items of one type."""

    item: FieldType
    max_items: int

    def parse(self, raw: BValue, path: str) -> Value:
        if not isinstance(raw, list):
            raise FieldError(f"{path}: expected a list, got {type(raw).__name__}")
        if len(raw) > self.max_items:
            raise FieldError(f"{path}: {len(raw)} items exceed {self.max_items}")
        return [self.item.parse(v, f"{path}[{i}]") for i, v in enumerate(raw)]

    def check(self, value: object, path: str) -> EValue:
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            raise EncodeError(f"{path}: expected a list, got {type(value).__name__}")
        if len(value) > self.max_items:
            raise EncodeError(f"{path}: {len(value)} items exceed {self.max_items}")
        return [self.item.check(v, f"{path}[{i}]") for i, v in enumerate(value)]

    def describe(self) -> str:
        return f"list[..{self.max_items}] of {self.item.describe()}"


_KEY_CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789_-.:")


@dataclass(frozen=True, slots=True)
class MapOf:
    """A dict from short ASCII keys (``[a-z0-9_.:-]``) to values of one type."""

    value: FieldType
    max_items: int
    max_key_len: int = 32

    def parse(self, raw: BValue, path: str) -> Value:
        if not isinstance(raw, dict):
            raise FieldError(f"{path}: expected a dict, got {type(raw).__name__}")
        if len(raw) > self.max_items:
            raise FieldError(f"{path}: {len(raw)} entries exceed {self.max_items}")
        out: dict[str, Value] = {}
        for k, v in raw.items():
            if not k or len(k) > self.max_key_len or any(c not in _KEY_CHARS for c in k):
                raise FieldError(f"{path}: bad key {k[:40]!r}")
            key = k.decode("ascii")
            out[key] = self.value.parse(v, f"{path}.{key}")
        return out

    def check(self, value: object, path: str) -> EValue:
        if not isinstance(value, Mapping):
            raise EncodeError(f"{path}: expected a dict, got {type(value).__name__}")
        if len(value) > self.max_items:
            raise EncodeError(f"{path}: {len(value)} entries exceed {self.max_items}")
        out: dict[str, EValue] = {}
        for k, v in value.items():
            if not isinstance(k, str) or not k or len(k) > self.max_key_len or any(
                c not in _KEY_CHARS for c in k.encode("utf-8")
            ):
                raise EncodeError(f"{path}: bad key {k!r}")
            out[k] = self.value.check(v, f"{path}.{k}")
        return out

    def describe(self) -> str:
        return f"map[..{self.max_items}] of {self.value.describe()}"


@dataclass(frozen=True, slots=True)
class Field:
    """One declared field of a message."""

    name: str
    type: FieldType
    optional: bool = False
    doc: str = ""


@dataclass(frozen=True, slots=True)
class MessageSpec:
    """One row of the message table."""

    name: str
    type_id: int
    fields: tuple[Field, ...]
    doc: str = ""

    def field(self, name: str) -> Field | None:
        for f in self.fields:
            if f.name == name:
                return f
        return None
