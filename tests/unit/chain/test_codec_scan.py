"""``scan_block`` (the up-front layout check) refuses exactly the bytes ``decode_block`` refuses."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from eschaton.chain.embedded.blocks import build_block
from eschaton.core.txcodec import TxDecodeError, decode_block, decode_tx, scan_block
from tests.unit.chain.helpers import Key, build_tx, sign_p2wpkh

GENESIS = "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"


def _sample_block() -> bytes:
    k = Key(1)
    tx = build_tx([("11" * 32, 1)], [(5_000, k.p2wpkh), (0, b"\x6a\x01\x02")])
    sign_p2wpkh(tx, 0, k, 6_000)
    return build_block(GENESIS, 1, 1_700_000_000, k.p2wpkh, [decode_tx(tx.serialize())], 1_000)


SAMPLE = _sample_block()


def _outcome(f: object, data: bytes) -> str:
    try:
        f(data)  # type: ignore[operator]
    except TxDecodeError as e:
        return e.detail
    return "ok"


def test_sample_and_every_truncation_agree() -> None:
    header = decode_block(SAMPLE).header
    assert scan_block(SAMPLE) == (header.hash, header.prev_hash)
    for n in range(len(SAMPLE) + 1):
        assert _outcome(scan_block, SAMPLE[:n]) == _outcome(decode_block, SAMPLE[:n])
    assert _outcome(scan_block, SAMPLE + b"\x00") == "trailing data after block"


@settings(max_examples=3000, deadline=None)
@given(st.integers(80, len(SAMPLE) - 1), st.integers(0, 255), st.booleans(), st.integers(0, len(SAMPLE)))
def test_mutated_blocks_agree(pos: int, byte: int, truncate: bool, cut: int) -> None:
    data = bytearray(SAMPLE)
    data[pos] = byte
    if truncate:
        data = data[:cut]
    assert _outcome(scan_block, bytes(data)) == _outcome(decode_block, bytes(data))


@settings(max_examples=1000, deadline=None)
@given(st.binary(min_size=80, max_size=300))
def test_random_bytes_agree(data: bytes) -> None:
    assert _outcome(scan_block, data) == _outcome(decode_block, data)
