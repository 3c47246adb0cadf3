"""Encode and decode wire messages declared in ``messages.MESSAGES``.

Rules / theory of operation:
- A message on the wire is ``type id (u16, big-endian) || canonical bencode dict of fields``.
  It travels as the plaintext of one Noise transport message, so it is at most
  ``MAX_MESSAGE_SIZE`` bytes.
- Decoding is strict: unknown type id, unknown field, missing required field, wrong type,
  out-of-limit value, non-canonical bencode or trailing bytes all raise a ``WireError``. Nothing
  else leaves ``decode_message`` (fuzzed). An unknown type id raises ``UnknownMessage`` (carrying
  the id, checked before the body is read), anything wrong with a known message another
  ``WireError``: the link ignores the first when the id is odd and closes on the second.
- Encoding checks the same limits, raising ``EncodeError`` (our bug), so we never send what the
  peer would refuse.
- Who handles a decoded message is the router's business (``eschaton.net.router``), not the
  codec's.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from eschaton.core.wire import bencode
from eschaton.core.wire.errors import EncodeError, FieldError, UnknownMessage, WireError
from eschaton.core.wire.fields import Field, MessageSpec, Value
from eschaton.core.wire.messages import BY_ID, BY_NAME

NOISE_MAX_MESSAGE = 65535
NOISE_TAG = 16
MAX_MESSAGE_SIZE = NOISE_MAX_MESSAGE - NOISE_TAG
"""Largest encoded message: one Noise transport message minus its 16-byte tag."""

_BODY_LIMITS = bencode.Limits(max_size=MAX_MESSAGE_SIZE, max_depth=4, max_items=1024)
# Field lookup by (raw key bytes) per message, built once from the table.
_FIELDS: dict[str, dict[bytes, tuple[Field, str]]] = {
    spec.name: {f.name.encode("ascii"): (f, f"{spec.name}.{f.name}") for f in spec.fields}
    for spec in BY_NAME.values()}


@dataclass(frozen=True, slots=True)
class Message:
    """A validated message: its table name and its field values."""

    name: str
    fields: Mapping[str, Value] = field(default_factory=dict)

    @property
    def spec(self) -> MessageSpec:
        return BY_NAME[self.name]

    def __getitem__(self, key: str) -> Value:
        return self.fields[key]

    def get(self, key: str, default: Value | None = None) -> Value | None:
        return self.fields.get(key, default)

    def get_int(self, key: str) -> int:
        v = self.fields[key]
        if not isinstance(v, int):
            raise TypeError(f"{self.name}.{key} is not an int")
        return v

    def get_bytes(self, key: str) -> bytes:
        v = self.fields[key]
        if not isinstance(v, bytes):
            raise TypeError(f"{self.name}.{key} is not bytes")
        return v

    def get_text(self, key: str) -> str:
        v = self.fields[key]
        if not isinstance(v, str):
            raise TypeError(f"{self.name}.{key} is not text")
        return v


def make(name: str, /, **fields: Any) -> Message:
    """Build a message, checking it against the table (raises ``EncodeError``)."""
    spec = BY_NAME.get(name)
    if spec is None:
        raise EncodeError(f"no message named {name!r} in the table")
    _check_fields(spec, fields)
    return Message(name, dict(fields))


def _check_fields(spec: MessageSpec, fields: Mapping[str, object]) -> dict[str, bencode.EValue]:
    out: dict[str, bencode.EValue] = {}
    for key, value in fields.items():
        f = spec.field(key)
        if f is None:
            raise EncodeError(f"{spec.name}: no field {key!r} in the table")
        if value is None and f.optional:
            continue
        out[key] = f.type.check(value, f"{spec.name}.{key}")
    for f in spec.fields:
        if not f.optional and f.name not in out:
            raise EncodeError(f"{spec.name}: required field {f.name!r} missing")
    return out


def encode_message(msg: Message) -> bytes:
    """The wire bytes of ``msg`` (re-validated against the table)."""
    spec = BY_NAME.get(msg.name)
    if spec is None:
        raise EncodeError(f"no message named {msg.name!r} in the table")
    body = bencode.encode(_check_fields(spec, msg.fields))
    out = spec.type_id.to_bytes(2, "big") + body
    if len(out) > MAX_MESSAGE_SIZE:
        raise EncodeError(f"{spec.name}: {len(out)} bytes exceed {MAX_MESSAGE_SIZE}")
    return out


def decode_message(data: bytes) -> Message:
    """Parse wire bytes into a ``Message``; raises only ``WireError``."""
    if not isinstance(data, bytes):
        raise WireError("message must be bytes")
    if len(data) < 3:
        raise WireError(f"message of {len(data)} bytes is too short")
    if len(data) > MAX_MESSAGE_SIZE:
        raise WireError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_SIZE}")
    type_id = int.from_bytes(data[:2], "big")
    spec = BY_ID.get(type_id)
    if spec is None:
        raise UnknownMessage(type_id)
    raw = bencode.decode(data[2:], _BODY_LIMITS)
    if not isinstance(raw, dict):
        raise FieldError(f"{spec.name}: body is not a dict")
    fields: dict[str, Value] = {}
    known = _FIELDS[spec.name]
    for key, value in raw.items():
        entry = known.get(key)
        if entry is None:
            raise FieldError(f"{spec.name}: unknown field {key[:40]!r}")
        f, path = entry
        fields[f.name] = f.type.parse(value, path)
    for f in spec.fields:
        if not f.optional and f.name not in fields:
            raise FieldError(f"{spec.name}: required field {f.name!r} missing")
    return Message(spec.name, fields)
