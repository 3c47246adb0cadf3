"""A verified header chain that follows the branch with the most work.

Rules / theory of operation:
- The chain holds every header from genesis as 80-byte records in one buffer (a mainnet chain
  is ~70 MB, signet and regtest far less); header 0 must be the network's genesis.
- ``apply(start, headers)`` offers headers for heights ``start, start+1, ...`` (a server's
  answer to ``blockchain.block.headers`` or a tip notification). Each must link to the one
  below it, carry the bits the network's difficulty rules demand (``pow.next_bits``), meet its
  proof of work, and have a time above the median of the 11 before it. A header that breaks a
  rule raises ``BadHeader``: the server that sent it lies.
- Headers equal to ours are skipped. If the rest forks from ours, the branch replaces ours only
  if it has more work than what it replaces (``Applied.reorg`` names the fork height and the
  disconnected hashes, top first); a branch with less or equal work is ignored (``applied``
  false): a server behind us, or on a weaker fork, cannot take confirmations away.
- ``apply`` raises ``Unlinked`` when the first header does not link to our header at
  ``start - 1``: the caller asks for earlier headers to find the fork point.
- A merkle proof is believed only against a header of this chain (``merkle.proves``).
"""
from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from eschaton.core.spv.pow import NetParams, last_real_bits, next_bits, pow_error, work_of
from eschaton.errors import RemoteError

HEADER = 80
MTP_SPAN = 11


class BadHeader(RemoteError):
    """A header that breaks a consensus rule: whoever sent it is not to be trusted."""

    def __init__(self, height: int, reason: str) -> None:
        self.height = height
        self.reason = reason
        super().__init__(f"header {height}: {reason}")


class Unlinked(RemoteError):
    """The offered headers do not link to ours at ``start - 1`` (a fork further down)."""


@dataclass(frozen=True, slots=True)
class Applied:
    applied: bool  # False: nothing new, or a branch with no more work than ours (ignored)
    fork_height: int | None = None  # set when headers of ours were replaced
    disconnected: tuple[str, ...] = ()  # their hashes, top first
    first_new: int | None = None  # height of the first header added


def header_hash(raw: bytes) -> bytes:
    """Internal byte order."""
    return hashlib.sha256(hashlib.sha256(raw[:HEADER]).digest()).digest()


def _time(raw: bytes | bytearray, off: int = 0) -> int:
    return int(struct.unpack_from("<I", raw, off + 68)[0])


def _bits(raw: bytes | bytearray, off: int = 0) -> int:
    return int(struct.unpack_from("<I", raw, off + 72)[0])


class HeaderChain:
    def __init__(self, params: NetParams, raw: bytes) -> None:
        """``raw``: the headers from genesis, concatenated (as stored; checked when they came in)."""
        if not raw or len(raw) % HEADER:
            raise ValueError("a header chain starts at genesis and holds whole headers")
        if header_hash(raw[:HEADER])[::-1].hex() != params.genesis_hash:
            raise BadHeader(0, f"not the {params.name} genesis block")
        self.params = params
        self._buf = bytearray(raw)
        self._tip_hash = header_hash(raw[-HEADER:])

    # --- reading -------------------------------------------------------------------------------

    @property
    def height(self) -> int:
        return len(self._buf) // HEADER - 1

    def header(self, height: int) -> bytes:
        if not 0 <= height <= self.height:
            raise IndexError(f"no header at {height} (tip {self.height})")
        return bytes(self._buf[height * HEADER:(height + 1) * HEADER])

    def hash_at(self, height: int) -> str:
        """Display hex."""
        if height == self.height:
            return self._tip_hash[::-1].hex()
        return header_hash(self.header(height))[::-1].hex()

    def tip_hash(self) -> str:
        return self._tip_hash[::-1].hex()

    def median_time_past(self, height: int | None = None) -> int:
        h = self.height if height is None else height
        times = sorted(_time(self._buf, x * HEADER) for x in range(max(0, h - MTP_SPAN + 1), h + 1))
        return times[len(times) // 2]

    def raw_from(self, height: int) -> bytes:
        return bytes(self._buf[height * HEADER:])

    # --- extending -----------------------------------------------------------------------------

    def apply(self, start: int, headers: list[bytes]) -> Applied:
        if start < 1:  # genesis is fixed: skip it if offered
            headers, start = headers[1 - start:], 1
        if start > self.height + 1:
            raise Unlinked(f"headers from {start} leave a gap above our tip {self.height}")
        for i, h in enumerate(headers):
            if len(h) != HEADER:
                raise BadHeader(start + i, f"{len(h)} bytes, not {HEADER}")
        # Skip what we already have.
        skip = 0
        while skip < len(headers) and start + skip <= self.height and headers[skip] == self.header(start + skip):
            skip += 1
        headers, start = headers[skip:], start + skip
        if not headers:
            return Applied(False)
        if headers[0][4:36] != header_hash(self.header(start - 1)):
            raise Unlinked(f"header {start} does not link to our header {start - 1}")
        branch = self._check(start, headers)
        new_end = start + len(headers) - 1
        if start <= self.height:
            ours = sum(work_of(_bits(self._buf, x * HEADER)) for x in range(start, self.height + 1))
            theirs = sum(work_of(_bits(h)) for h in headers)
            if theirs <= ours:
                return Applied(False)
            gone = tuple(self.hash_at(x) for x in range(self.height, start - 1, -1))
            del self._buf[start * HEADER:]
            self._buf += branch
            self._tip_hash = header_hash(headers[-1])
            return Applied(True, start - 1, gone, start)
        self._buf += branch
        self._tip_hash = header_hash(headers[-1])
        assert self.height == new_end
        return Applied(True, None, (), start)

    def _check(self, start: int, headers: list[bytes]) -> bytes:
        """Validate ``headers`` at ``start``.. on top of ours below ``start``; their concatenation."""
        params = self.params
        branch = b"".join(headers)

        def raw_at(h: int) -> tuple[bytes | bytearray, int]:
            return (branch, (h - start) * HEADER) if h >= start else (self._buf, h * HEADER)

        def bits_at(h: int) -> int:
            buf, off = raw_at(h)
            return _bits(buf, off)

        def time_at(h: int) -> int:
            buf, off = raw_at(h)
            return _time(buf, off)

        memo: dict[int, int] = {}

        def real_bits(h: int) -> int:
            # last_real_bits(h), each answer reused by the next header's (they walk the same way).
            if h not in memo:
                b = bits_at(h)
                if h > 0 and h % params.interval != 0 and b == params.limit_bits:
                    b = memo[h - 1] if h - 1 in memo else last_real_bits(params, h - 1, bits_at)
                memo[h] = b
            return memo[h]

        prev = header_hash(self.header(start - 1))
        for i, h in enumerate(headers):
            height = start + i
            if h[4:36] != prev:
                raise BadHeader(height, "does not link to the header below it")
            digest = header_hash(h)
            bits = _bits(h)
            why = pow_error(params, digest, bits)
            if why is not None:
                raise BadHeader(height, why)
            want = next_bits(params, height, _time(h), bits_at, time_at, real_bits)
            if bits != want:
                raise BadHeader(height, f"bits {bits:08x} where the {params.name} rules demand {want:08x}")
            times = sorted(time_at(x) for x in range(max(0, height - MTP_SPAN), height))
            if _time(h) <= times[len(times) // 2]:
                raise BadHeader(height, "time not above the median of the 11 before it")
            prev = digest
        return branch
