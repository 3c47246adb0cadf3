"""Proof of work and the difficulty rules of each network, as Bitcoin Core applies them to headers.

Rules / theory of operation:
- ``bits`` is the compact target of a header. ``target_from_bits`` refuses the encodings Core
  refuses (negative, overflowing); a header's hash, read as a little-endian number, must not
  exceed its target, and the target must not exceed the network's proof-of-work limit.
- ``next_bits`` is Core's ``GetNextWorkRequired``: the bits a header at ``height`` must carry,
  given the headers below it. Mainnet and signet retarget every 2,016 blocks from the time the
  last period took (clamped to a factor of 4). Testnet (version 3) also allows a
  minimum-difficulty block when one comes more than 20 minutes after the previous one. Regtest
  never retargets (``no_retarget``) and allows minimum difficulty, so every header carries the
  bits of the one before it, or the limit.
- Not checked here: signet's block signature (a script in the coinbase, which headers do not
  carry: an SPV client on signet trusts the proof of work alone, which on signet is low), and
  testnet4's BIP94 rules (``testnet`` means testnet3).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class NetParams:
    name: str
    genesis_hash: str  # display hex
    genesis_header: bytes
    pow_limit: int
    interval: int = 2016  # blocks per difficulty period
    spacing: int = 600  # seconds between blocks the difficulty aims at
    allow_min_difficulty: bool = False
    no_retarget: bool = False

    @property
    def timespan(self) -> int:
        return self.interval * self.spacing

    @property
    def limit_bits(self) -> int:
        return bits_from_target(self.pow_limit)


# Every network's genesis block shares its version, coinbase and merkle root; time, bits and nonce differ.
_GENESIS = bytes.fromhex("01000000" + "00" * 32
                         + "3ba3edfd7a7b12b27ac72c3e67768f617fc81bc3888a51323a9fb8aa4b1e5e4a")

NETWORKS: dict[str, NetParams] = {
    "mainnet": NetParams("mainnet", "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f",
                         _GENESIS + bytes.fromhex("29ab5f49ffff001d1dac2b7c"), 0x00000000FFFF << 208),
    "testnet": NetParams("testnet", "000000000933ea01ad0ee984209779baaec3ced90fa3f408719526f8d77f4943",
                         _GENESIS + bytes.fromhex("dae5494dffff001d1aa4ae18"), 0x00000000FFFF << 208,
                         allow_min_difficulty=True),
    "signet": NetParams("signet", "00000008819873e925422c1ff0f99f7cc9bbb232af63a077a480a3633bee1ef6",
                        _GENESIS + bytes.fromhex("008f4d5fae77031e8ad22203"), 0x00000377AE << 216),
    "regtest": NetParams("regtest", "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206",
                         _GENESIS + bytes.fromhex("dae5494dffff7f2002000000"), 0x7FFFFF << 232,
                         allow_min_difficulty=True, no_retarget=True),
}


class BadBits(ValueError):
    """A compact target Core would refuse (negative or overflowing)."""


def target_from_bits(bits: int) -> int:
    size = bits >> 24
    word = bits & 0x007FFFFF
    if word and bits & 0x00800000:
        raise BadBits(f"negative target in bits {bits:08x}")
    if word and (size > 34 or (word > 0xFF and size > 33) or (word > 0xFFFF and size > 32)):
        raise BadBits(f"target overflows in bits {bits:08x}")
    return word >> 8 * (3 - size) if size <= 3 else word << 8 * (size - 3)


def bits_from_target(target: int) -> int:
    size = (target.bit_length() + 7) // 8
    compact = target << 8 * (3 - size) if size <= 3 else target >> 8 * (size - 3)
    if compact & 0x00800000:  # the sign bit: move one byte up
        compact >>= 8
        size += 1
    return compact | size << 24


def work_of(bits: int) -> int:
    """Expected hashes for a header at this target (Core's ``GetBlockProof``)."""
    target = target_from_bits(bits)
    return (1 << 256) // (target + 1) if target > 0 else 0


def pow_error(params: NetParams, header_hash: bytes, bits: int) -> str | None:
    """Why ``header_hash`` (internal byte order) fails its proof of work, or None if it holds."""
    try:
        target = target_from_bits(bits)
    except BadBits as e:
        return str(e)
    if target <= 0 or target > params.pow_limit:
        return f"target of bits {bits:08x} is outside the {params.name} limit"
    if int.from_bytes(header_hash, "little") > target:
        return "hash above its target (no proof of work)"
    return None


def last_real_bits(params: NetParams, height: int, bits_at: Callable[[int], int]) -> int:
    """Walking down from ``height``: the bits of the first header that is a period's first or
    not at minimum difficulty (what a prompt block on a min-difficulty network must carry)."""
    limit = params.limit_bits
    h = height
    while h > 0 and h % params.interval != 0 and bits_at(h) == limit:
        h -= 1
    return bits_at(h)


def next_bits(params: NetParams, height: int, time: int, bits_at: Callable[[int], int],
              time_at: Callable[[int], int], real_bits: Callable[[int], int] | None = None) -> int:
    """The bits a header at ``height`` (> 0) with timestamp ``time`` must carry.

    ``bits_at(h)``/``time_at(h)`` read the headers below ``height`` of the branch being checked;
    ``real_bits(h)`` may answer ``last_real_bits`` from a memo (the walk is up to a period long)."""
    last = height - 1
    limit = params.limit_bits
    if height % params.interval != 0:
        if params.allow_min_difficulty:
            if time > time_at(last) + 2 * params.spacing:
                return limit
            return real_bits(last) if real_bits is not None else last_real_bits(params, last, bits_at)
        return bits_at(last)
    if params.no_retarget:
        return bits_at(last)
    first_time = time_at(height - params.interval)
    span = min(max(time_at(last) - first_time, params.timespan // 4), params.timespan * 4)
    new = target_from_bits(bits_at(last)) * span // params.timespan
    return bits_from_target(min(new, params.pow_limit))
