"""Strict decoding of consensus-serialised transactions and blocks.

Why hand-written and not embit or pbk: libbitcoinkernel's transaction parser accepts trailing
garbage (it stops reading after nLockTime), and embit raises assorted built-in exceptions on bad
input. The mempool needs one decode path that either returns a fully-consumed, well-formed
transaction or raises ``TxDecodeError`` (bitcoind's ``TX decode failed``), and it needs txid,
wtxid, weight and the witness stacks cheaply. This module is that path; it is pure (hashlib only).

Rules (Bitcoin Core's ``UnserializeTransaction``):
- An empty vin count followed by a non-zero flag byte means the extended (segwit) format; the
  flag must be 0x01, and a witness section whose stacks are all empty is refused ("superfluous
  witness record").
- Compact sizes must be canonical and at most 0x02000000 (MAX_SIZE).
- Every byte must be consumed.

``TxIn``/``TxOut``/``Tx`` are NamedTuples rather than frozen dataclasses: indexing a block builds
one per input and output, and a NamedTuple constructs about five times faster.
"""
from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import NamedTuple

from eschaton.errors import RemoteError


class TxDecodeError(RemoteError):
    """Bytes that are not exactly one well-formed transaction (bitcoind: ``TX decode failed``)."""

    reason = "TX decode failed"

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"TX decode failed: {detail}")


MAX_SIZE = 0x02000000
WITNESS_SCALE_FACTOR = 4


def sha256d(b: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(b).digest()).digest()


class TxIn(NamedTuple):
    prev_txid: bytes  # 32 bytes, internal (little-endian) order
    prev_vout: int
    script_sig: bytes
    sequence: int
    witness: tuple[bytes, ...]

    @property
    def prev_txid_hex(self) -> str:
        """Display-order hex of the spent transaction."""
        return self.prev_txid[::-1].hex()

    @property
    def is_null(self) -> bool:
        return self.prev_vout == 0xFFFFFFFF and self.prev_txid == b"\x00" * 32


class TxOut(NamedTuple):
    value: int
    script_pubkey: bytes


class Tx(NamedTuple):
    version: int
    inputs: tuple[TxIn, ...]
    outputs: tuple[TxOut, ...]
    locktime: int
    raw: bytes
    txid: str  # display-order hex
    wtxid: str
    base_size: int  # size without witness data

    @property
    def has_witness(self) -> bool:
        return any(i.witness for i in self.inputs)

    @property
    def weight(self) -> int:
        return self.base_size * (WITNESS_SCALE_FACTOR - 1) + len(self.raw)

    @property
    def vsize(self) -> int:
        return (self.weight + WITNESS_SCALE_FACTOR - 1) // WITNESS_SCALE_FACTOR

    @property
    def is_coinbase(self) -> bool:
        return len(self.inputs) == 1 and self.inputs[0].is_null


_MIN_FOR_WIDTH = {2: 0xFD, 4: 0x10000, 8: 0x100000000}
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_I64 = struct.Struct("<q")


def _compact_at(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    if pos >= end:
        raise TxDecodeError("unexpected end of data")
    first = buf[pos]
    if first < 0xFD:
        return first, pos + 1
    width = 2 if first == 0xFD else 4 if first == 0xFE else 8
    if pos + 1 + width > end:
        raise TxDecodeError("unexpected end of data")
    n = int.from_bytes(buf[pos + 1 : pos + 1 + width], "little")
    if n < _MIN_FOR_WIDTH[width]:
        raise TxDecodeError("non-canonical compact size")
    if n > MAX_SIZE:
        raise TxDecodeError("compact size too large")
    return n, pos + 1 + width


def _read_tx_at(buf: bytes, pos: int) -> tuple[Tx, int]:
    """Decode the transaction starting at ``pos``; returns it and the position after it.

    Written with local positions rather than a reader object: block indexing decodes every
    transaction, and this is several times faster."""
    end = len(buf)
    start = pos
    if pos + 4 > end:
        raise TxDecodeError("unexpected end of data")
    version = _I32.unpack_from(buf, pos)[0]
    n_in, pos = _compact_at(buf, pos + 4, end)
    segwit = False
    if n_in == 0:
        if pos >= end:
            raise TxDecodeError("unexpected end of data")
        flag = buf[pos]
        pos += 1
        if flag != 0:
            if flag != 1:
                raise TxDecodeError("unknown transaction optional data")
            segwit = True
            n_in, pos = _compact_at(buf, pos, end)
    if n_in * 41 > end - pos:
        raise TxDecodeError("vector longer than the data")
    ins_raw: list[tuple[bytes, int, bytes, int]] = []
    for _ in range(n_in):
        if pos + 37 > end:
            raise TxDecodeError("unexpected end of data")
        prev = buf[pos : pos + 32]
        vout = _U32.unpack_from(buf, pos + 32)[0]
        ln, pos = _compact_at(buf, pos + 36, end)
        if pos + ln + 4 > end:
            raise TxDecodeError("unexpected end of data")
        ss = buf[pos : pos + ln]
        pos += ln
        ins_raw.append((prev, vout, ss, _U32.unpack_from(buf, pos)[0]))
        pos += 4
    n_out, pos = _compact_at(buf, pos, end)
    if n_out * 9 > end - pos:
        raise TxDecodeError("vector longer than the data")
    outs: list[TxOut] = []
    for _ in range(n_out):
        if pos + 9 > end:
            raise TxDecodeError("unexpected end of data")
        value = _I64.unpack_from(buf, pos)[0]
        ln, pos = _compact_at(buf, pos + 8, end)
        if pos + ln > end:
            raise TxDecodeError("unexpected end of data")
        outs.append(TxOut(value, buf[pos : pos + ln]))
        pos += ln
    after_outputs = pos
    witnesses: list[tuple[bytes, ...]] = [()] * n_in
    if segwit:
        any_witness = False
        for i in range(n_in):
            n_items, pos = _compact_at(buf, pos, end)
            if n_items > end - pos:
                raise TxDecodeError("vector longer than the data")
            items = []
            for _ in range(n_items):
                ln, pos = _compact_at(buf, pos, end)
                if pos + ln > end:
                    raise TxDecodeError("unexpected end of data")
                items.append(buf[pos : pos + ln])
                pos += ln
            if items:
                any_witness = True
                witnesses[i] = tuple(items)
        if not any_witness:
            raise TxDecodeError("superfluous witness record")
    witness_end = pos
    if pos + 4 > end:
        raise TxDecodeError("unexpected end of data")
    locktime = _U32.unpack_from(buf, pos)[0]
    pos += 4
    raw = buf[start:pos]
    if segwit:
        # The txid commits to the legacy serialisation: drop marker+flag and the witness section.
        stripped = raw[:4] + buf[start + 6 : after_outputs] + buf[witness_end:pos]
    else:
        stripped = raw
    inputs = tuple(TxIn(p, v, s, q, w) for (p, v, s, q), w in zip(ins_raw, witnesses, strict=True))
    txid = sha256d(stripped)[::-1].hex()
    tx = Tx(
        version=version,
        inputs=inputs,
        outputs=tuple(outs),
        locktime=locktime,
        raw=raw,
        txid=txid,
        wtxid=sha256d(raw)[::-1].hex() if segwit else txid,
        base_size=len(stripped),
    )
    return tx, pos


def decode_tx(data: bytes) -> Tx:
    """Decode one transaction that must span all of ``data``; raises ``TxDecodeError``."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TxDecodeError("not bytes")
    data = bytes(data)
    tx, pos = _read_tx_at(data, 0)
    if pos != len(data):
        raise TxDecodeError("trailing data after transaction")
    return tx


@dataclass(frozen=True, slots=True)
class BlockHeader:
    version: int
    prev_hash: str  # display hex
    merkle_root: bytes  # internal order
    time: int
    bits: int
    nonce: int
    hash: str  # display hex


@dataclass(frozen=True, slots=True)
class Block:
    header: BlockHeader
    txs: tuple[Tx, ...]
    raw: bytes


def decode_header(data: bytes) -> BlockHeader:
    if len(data) < 80:
        raise TxDecodeError("block header too short")
    version, prev, merkle, t, bits, nonce = struct.unpack_from("<i32s32sIII", data, 0)
    return BlockHeader(version, prev[::-1].hex(), merkle, t, bits, nonce, sha256d(data[:80])[::-1].hex())


def decode_block(data: bytes) -> Block:
    """Decode a full block; raises ``TxDecodeError`` (block decode failures share the type)."""
    data = bytes(data)
    header = decode_header(data)
    n, pos = _compact_at(data, 80, len(data))
    if n * 60 > len(data) - pos:
        raise TxDecodeError("vector longer than the data")
    txs = []
    for _ in range(n):
        tx, pos = _read_tx_at(data, pos)
        txs.append(tx)
    if pos != len(data):
        raise TxDecodeError("trailing data after block")
    return Block(header, tuple(txs), data)


def _skip_tx_at(buf: bytes, pos: int, end: int) -> int:
    """``_read_tx_at`` without building anything: the same checks, the position after the tx."""
    if pos + 4 > end:
        raise TxDecodeError("unexpected end of data")
    n_in, pos = _compact_at(buf, pos + 4, end)
    segwit = False
    if n_in == 0:
        if pos >= end:
            raise TxDecodeError("unexpected end of data")
        flag = buf[pos]
        pos += 1
        if flag != 0:
            if flag != 1:
                raise TxDecodeError("unknown transaction optional data")
            segwit = True
            n_in, pos = _compact_at(buf, pos, end)
    if n_in * 41 > end - pos:
        raise TxDecodeError("vector longer than the data")
    for _ in range(n_in):
        if pos + 37 > end:
            raise TxDecodeError("unexpected end of data")
        ln, pos = _compact_at(buf, pos + 36, end)
        pos += ln + 4
        if pos > end:
            raise TxDecodeError("unexpected end of data")
    n_out, pos = _compact_at(buf, pos, end)
    if n_out * 9 > end - pos:
        raise TxDecodeError("vector longer than the data")
    for _ in range(n_out):
        if pos + 9 > end:
            raise TxDecodeError("unexpected end of data")
        ln, pos = _compact_at(buf, pos + 8, end)
        pos += ln
        if pos > end:
            raise TxDecodeError("unexpected end of data")
    if segwit:
        any_witness = False
        for _ in range(n_in):
            n_items, pos = _compact_at(buf, pos, end)
            if n_items > end - pos:
                raise TxDecodeError("vector longer than the data")
            if n_items:
                any_witness = True
            for _ in range(n_items):
                ln, pos = _compact_at(buf, pos, end)
                pos += ln
                if pos > end:
                    raise TxDecodeError("unexpected end of data")
        if not any_witness:
            raise TxDecodeError("superfluous witness record")
    if pos + 4 > end:
        raise TxDecodeError("unexpected end of data")
    return pos + 4


def scan_block(data: bytes) -> tuple[str, str]:
    """Check that ``data`` is exactly one well-formed block, as ``decode_block`` would (it raises
    the same ``TxDecodeError`` for the same bytes), and return (its hash, its parent's hash), in
    display hex. It builds no header and no transactions and hashes nothing but the header, so
    it costs a fraction of ``decode_block``: a caller can refuse malformed bytes up front and
    decode elsewhere (another thread). It runs between two kernel calls, where every Python
    operation costs about three times what it costs in a warm loop, hence the bare tuple."""
    if len(data) < 80:
        raise TxDecodeError("block header too short")
    end = len(data)
    n, pos = _compact_at(data, 80, end)
    if n * 60 > end - pos:
        raise TxDecodeError("vector longer than the data")
    for _ in range(n):
        pos = _skip_tx_at(data, pos, end)
    if pos != end:
        raise TxDecodeError("trailing data after block")
    return sha256d(data[:80])[::-1].hex(), data[35:3:-1].hex()


def merkle_root(hashes: list[bytes]) -> bytes:
    """Merkle root over internal-order 32-byte hashes (Bitcoin's duplicate-last rule)."""
    if not hashes:
        return b"\x00" * 32
    layer = list(hashes)
    while len(layer) > 1:
        if len(layer) % 2:
            layer.append(layer[-1])
        layer = [sha256d(layer[i] + layer[i + 1]) for i in range(0, len(layer), 2)]
    return layer[0]


def compact_size(n: int) -> bytes:
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + n.to_bytes(2, "little")
    if n <= 0xFFFFFFFF:
        return b"\xfe" + n.to_bytes(4, "little")
    return b"\xff" + n.to_bytes(8, "little")
