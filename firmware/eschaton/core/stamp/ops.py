"""The OpenTimestamps operations a proof is made of, and their byte encoding.

Rules:
- A proof is a path of operations from a message (a file's digest) to a block's Merkle root:
  ``sha256`` (tag 0x08), ``append`` (0xf0) and ``prepend`` (0xf1) with a 1..4096-byte argument.
  These three are all a Bitcoin commitment needs (double SHA-256 is two ``sha256``). Other
  operations of the format (sha1, ripemd160, keccak, reverse, hexlify) are refused by the
  decoder: a proof that uses them did not come from us, and accepting fewer forms means a
  changed bit cannot turn into another valid operation.
- Integers are unsigned LEB128 ("varuint"); byte strings are a varuint length then the bytes.
  The decoder refuses non-minimal varuints (a trailing zero group), so every value has exactly
  one encoding.
- Every message and result is at most 4096 bytes, as the format's reference says.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from eschaton.errors import RemoteError

SHA256 = 0x08
APPEND = 0xF0
PREPEND = 0xF1
MAX_MSG = 4096
MAX_VARUINT = (1 << 63) - 1


class ProofError(RemoteError):
    """A proof (or a ``.ots`` file) that is malformed or does not verify."""


@dataclass(frozen=True, slots=True)
class Op:
    tag: int
    arg: bytes = b""

    def apply(self, msg: bytes) -> bytes:
        if self.tag == SHA256:
            return hashlib.sha256(msg).digest()
        out = msg + self.arg if self.tag == APPEND else self.arg + msg
        if len(out) > MAX_MSG:
            raise ProofError(f"operation result too long ({len(out)} > {MAX_MSG} bytes)")
        return out

    def encode(self) -> bytes:
        if self.tag == SHA256:
            return b"\x08"
        return bytes([self.tag]) + varbytes(self.arg)

    def __str__(self) -> str:
        return {SHA256: "sha256", APPEND: "append", PREPEND: "prepend"}[self.tag] + (
            f" {self.arg.hex()}" if self.arg else "")


def sha256() -> Op:
    return Op(SHA256)


def append(arg: bytes) -> Op:
    return Op(APPEND, arg)


def prepend(arg: bytes) -> Op:
    return Op(PREPEND, arg)


def run(msg: bytes, ops: tuple[Op, ...] | list[Op]) -> bytes:
    for op in ops:
        msg = op.apply(msg)
    return msg


def varuint(n: int) -> bytes:
    if n < 0 or n > MAX_VARUINT:
        raise ValueError(f"varuint out of range: {n}")
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def varbytes(b: bytes) -> bytes:
    return varuint(len(b)) + b


class Reader:
    """A cursor over untrusted bytes: every read is bounded, every failure a ``ProofError``."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.buf):
            raise ProofError("truncated proof")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def byte(self) -> int:
        return self.take(1)[0]

    def varuint(self) -> int:
        n = shift = 0
        while True:
            if shift > 56:  # nine groups hold 63 bits: anything longer is not ours
                raise ProofError("integer too large in proof")
            b = self.byte()
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                if b == 0 and shift:
                    raise ProofError("non-minimal integer in proof")
                return n
            shift += 7

    def varbytes(self, max_len: int, min_len: int = 0) -> bytes:
        n = self.varuint()
        if n > max_len or n < min_len:
            raise ProofError(f"byte string of {n} bytes out of bounds ({min_len}..{max_len})")
        return self.take(n)

    def op(self, tag: int) -> Op:
        if tag == SHA256:
            return Op(SHA256)
        if tag in (APPEND, PREPEND):
            return Op(tag, self.varbytes(MAX_MSG, 1))
        raise ProofError(f"unsupported operation 0x{tag:02x} in proof")

    def done(self) -> bool:
        return self.pos == len(self.buf)
