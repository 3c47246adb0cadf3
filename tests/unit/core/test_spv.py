"""The SPV core: compact targets, difficulty rules per network (Core's own vectors for mainnet),
header linkage and proof of work, forks chosen by work, and merkle proofs that bind only to the
header of the branch we follow."""
from __future__ import annotations

import hashlib
import struct

import pytest

from eschaton.core.spv import merkle
from eschaton.core.spv.headers import BadHeader, HeaderChain, Unlinked, header_hash
from eschaton.core.spv.pow import NETWORKS, bits_from_target, next_bits, pow_error, target_from_bits
from eschaton.core.txcodec import merkle_root, sha256d

REGTEST = NETWORKS["regtest"]
GENESIS_REGTEST = REGTEST.genesis_header


def mk(prev: bytes, root: bytes, t: int, bits: int = 0x207FFFFF, *, valid_pow: bool = True) -> bytes:
    """A header over ``prev`` (80 raw bytes), ground until its proof of work holds (or fails)."""
    for nonce in range(1 << 20):
        h = struct.pack("<i32s32sIII", 0x20000000, header_hash(prev), root, t, bits, nonce)
        ok = pow_error(REGTEST, header_hash(h), bits) is None
        if ok == valid_pow:
            return h
    raise AssertionError("no nonce found")


def branch(below: bytes, n: int, t0: int, tag: bytes = b"a") -> list[bytes]:
    out, prev = [], below
    for i in range(n):
        prev = mk(prev, hashlib.sha256(tag + bytes([i])).digest(), t0 + i)
        out.append(prev)
    return out


def test_genesis_headers_hash_to_their_networks_genesis() -> None:
    for p in NETWORKS.values():
        assert header_hash(p.genesis_header)[::-1].hex() == p.genesis_hash
        assert pow_error(p, header_hash(p.genesis_header), p.limit_bits) is None
    with pytest.raises(BadHeader):
        HeaderChain(NETWORKS["mainnet"], GENESIS_REGTEST)


def test_compact_targets() -> None:
    assert target_from_bits(0x1D00FFFF) == 0xFFFF << 208
    assert bits_from_target(0xFFFF << 208) == 0x1D00FFFF
    assert bits_from_target(target_from_bits(0x207FFFFF)) == 0x207FFFFF
    assert bits_from_target(0x80) == 0x02008000  # the sign bit moves the mantissa a byte up
    for bad in (0x04923456, 0xFF123456):  # negative, overflowing
        with pytest.raises(ValueError):
            target_from_bits(bad)


@pytest.mark.parametrize(("first_time", "last_height", "last_time", "bits", "want"), [
    (1261130161, 32255, 1262152739, 0x1D00FFFF, 0x1D00D86A),  # block 32256, the first real retarget
    (1231006505, 2015, 1233061996, 0x1D00FFFF, 0x1D00FFFF),  # slower than aimed: capped at the limit
    (1279008237, 68543, 1279297671, 0x1C05A3F4, 0x1C0168FD),  # a short period: clamped to 1/4
    (1263163443, 46367, 1269211443, 0x1C387F6F, 0x1D00E1FD),  # a long period: clamped to 4x
])
def test_mainnet_retarget_matches_core(first_time: int, last_height: int, last_time: int, bits: int,
                                       want: int) -> None:
    p = NETWORKS["mainnet"]
    times = {last_height: last_time, last_height - 2015: first_time}
    got = next_bits(p, last_height + 1, last_time + 600, lambda h: bits, lambda h: times[h])
    assert got == want


def test_mainnet_keeps_bits_inside_a_period_and_testnet_allows_min_difficulty() -> None:
    main, test = NETWORKS["mainnet"], NETWORKS["testnet"]
    hard = 0x1B0404CB
    assert next_bits(main, 1001, 10_000_000, lambda h: hard, lambda h: 1000) == hard
    # Testnet: a block 20 minutes after the previous may use the limit ...
    assert next_bits(test, 1001, 1000 + 1201, lambda h: hard, lambda h: 1000) == test.limit_bits
    assert next_bits(test, 1001, 1000 + 1200, lambda h: hard, lambda h: 1000) == hard
    # ... and the next prompt block goes back to the last real difficulty, not the limit.
    bits = {998: hard, 999: test.limit_bits, 1000: test.limit_bits}
    assert next_bits(test, 1001, 1000 + 60, lambda h: bits[h], lambda h: 1000) == hard


def test_headers_extend_and_break_rules() -> None:
    c = HeaderChain(REGTEST, GENESIS_REGTEST)
    hs = branch(GENESIS_REGTEST, 20, 1_600_000_000)
    r = c.apply(1, hs[:10])
    assert r.applied and r.fork_height is None and c.height == 10
    assert c.apply(1, hs[:10]).applied is False  # nothing new
    assert c.apply(5, hs[4:]).applied and c.height == 20  # overlapping is fine
    assert c.tip_hash() == header_hash(hs[-1])[::-1].hex() == c.hash_at(20)
    top = c.header(20)
    with pytest.raises(BadHeader, match="proof of work"):
        c.apply(21, [mk(top, b"\x01" * 32, 1_600_000_100, valid_pow=False)])
    with pytest.raises(BadHeader, match="rules demand"):  # regtest never retargets
        c.apply(21, [mk(top, b"\x01" * 32, 1_600_000_100, bits=0x200FFFFF)])
    with pytest.raises(BadHeader, match="median"):
        c.apply(21, [mk(top, b"\x01" * 32, 1_600_000_005)])
    nxt = mk(top, b"\x01" * 32, 1_600_000_100)
    with pytest.raises(BadHeader, match="does not link"):
        c.apply(21, [nxt, mk(GENESIS_REGTEST, b"\x02" * 32, 1_600_000_101)])
    with pytest.raises(Unlinked):
        c.apply(21, [mk(c.header(19), b"\x03" * 32, 1_600_000_100)])
    with pytest.raises(Unlinked):
        c.apply(23, [nxt])
    assert c.height == 20  # nothing of the refused batches stuck


def test_a_fork_with_more_work_wins_and_a_proof_from_the_losing_branch_is_refused() -> None:
    c = HeaderChain(REGTEST, GENESIS_REGTEST)
    base = branch(GENESIS_REGTEST, 5, 1_600_000_000)
    c.apply(1, base)
    # Block 6 of the first branch holds two transactions; its proof verifies against its header.
    txids = [sha256d(b"tx-a"), sha256d(b"tx-b")]
    root = merkle_root(txids)
    losing = [mk(base[-1], root, 1_600_000_010)]
    losing.append(mk(losing[0], b"\x00" * 32, 1_600_000_011))
    assert c.apply(6, losing).applied and c.height == 7
    tx_b = txids[1][::-1].hex()
    proof = [txids[0][::-1].hex()]
    assert merkle.proves(c.header(6), tx_b, proof, 1)
    old_hashes = (c.hash_at(7), c.hash_at(6))
    # An equally long fork from 5 is ignored (no more work) ...
    rival = branch(base[-1], 2, 1_600_000_020, b"b")
    assert c.apply(6, rival).applied is False and c.hash_at(7) == old_hashes[0]
    # ... a longer one replaces both blocks.
    rival = branch(base[-1], 3, 1_600_000_020, b"b")
    r = c.apply(6, rival)
    assert r.applied and r.fork_height == 5 and r.disconnected == old_hashes and c.height == 8
    # The proof from the losing branch no longer binds to the header at 6.
    assert not merkle.proves(c.header(6), tx_b, proof, 1)
    # The winning chain survives a reload from its raw bytes.
    again = HeaderChain(REGTEST, GENESIS_REGTEST + c.raw_from(1))
    assert again.tip_hash() == c.tip_hash() and again.height == 8


def test_merkle_branches_match_the_tree() -> None:
    for n in (1, 2, 3, 5, 8, 13):
        leaves = [sha256d(bytes([i])) for i in range(n)]
        root = merkle_root(leaves)
        for pos in range(n):
            layer, p, proof = list(leaves), pos, []
            while len(layer) > 1:
                if len(layer) % 2:
                    layer.append(layer[-1])
                proof.append(layer[p ^ 1][::-1].hex())
                layer = [sha256d(layer[i] + layer[i + 1]) for i in range(0, len(layer), 2)]
                p >>= 1
            assert merkle.root_from_branch(leaves[pos][::-1].hex(), proof, pos) == root
    with pytest.raises(ValueError):
        merkle.root_from_branch("00" * 32, ["11" * 32], 2)  # position beyond the branch


def test_a_64_byte_transaction_cannot_be_proven() -> None:
    assert not merkle.tx_may_be_proven(b"\x00" * 64, "00" * 32)
