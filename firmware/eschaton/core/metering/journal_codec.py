"""Meter-totals journal: record format, validation, recovery and the group-commit policy (sans-IO).

Rules / theory of operation:
- The journal records **cumulative** totals, never increments. Replaying it cannot double-count:
  after a crash the total resumes from the last committed value, which is <= the true count.
  A power cut loses at most the pulses since the last commit.
- One record is one ASCII line: ``J1 <seq> <wall_ns> <meter> <total> <crc32>``. The CRC32 (hex)
  covers everything before its separating space. A line that fails the CRC, the grammar or the
  value checks is rejected; lines are self-contained, so a batch torn by a power cut still yields
  its complete lines (each a valid, older-or-equal total).
- ``seq`` grows by one per record over the journal's life. Recovery keeps, per meter, the record
  with the highest ``seq``; rotation writes a snapshot into a new segment before deleting the old
  one, so a crash during rotation leaves duplicates that recovery resolves the same way.
- ``GroupCommit`` decides when to write: only meters whose total changed, and at most once per
  ``interval_s`` (bounded writes per hour, gentle on SD cards). An idle meter costs no writes;
  the first change after an idle spell is written at once.
"""
from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from eschaton.errors import LocalError

MAGIC = "J1"
METER_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_TOTAL = 2**63 - 1


class JournalFormatError(LocalError):
    """A record cannot be encoded (bad meter name or total)."""


@dataclass(frozen=True, slots=True)
class JournalRecord:
    """One committed cumulative total."""

    seq: int
    """Record sequence number, increasing by one per record over the journal's life."""
    wall_ns: int
    """Wall-clock time of the reading, nanoseconds since the Unix epoch."""
    meter: str
    """Meter name from the configuration."""
    total: int
    """Cumulative count (pulses, or a meter's own register in its smallest unit)."""


def encode_record(rec: JournalRecord) -> bytes:
    """The record as one line, newline included."""
    if not METER_NAME_RE.match(rec.meter):
        raise JournalFormatError(f"meter name {rec.meter!r} is not [A-Za-z0-9_.-]{{1,64}}")
    if not 0 <= rec.total <= MAX_TOTAL or rec.seq < 0 or rec.wall_ns < 0:
        raise JournalFormatError(f"record out of range: {rec}")
    body = f"{MAGIC} {rec.seq} {rec.wall_ns} {rec.meter} {rec.total}"
    crc = zlib.crc32(body.encode("ascii"))
    return f"{body} {crc:08x}\n".encode("ascii")


def decode_line(line: bytes) -> JournalRecord | None:
    """Parse one line (without its newline); None if it is not a valid record."""
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        return None
    body, sep, crc_hex = text.rpartition(" ")
    if not sep or len(crc_hex) != 8:
        return None
    try:
        crc = int(crc_hex, 16)
    except ValueError:
        return None
    if zlib.crc32(body.encode("ascii")) != crc:
        return None
    parts = body.split(" ")
    if len(parts) != 5 or parts[0] != MAGIC or not METER_NAME_RE.match(parts[3]):
        return None
    try:
        seq, wall_ns, total = int(parts[1]), int(parts[2]), int(parts[4])
    except ValueError:
        return None
    if seq < 0 or wall_ns < 0 or not 0 <= total <= MAX_TOTAL:
        return None
    return JournalRecord(seq=seq, wall_ns=wall_ns, meter=parts[3], total=total)


@dataclass(frozen=True, slots=True)
class DecodedSegment:
    """What a segment's bytes hold."""

    records: tuple[JournalRecord, ...]
    """Valid records in file order."""
    good_length: int
    """Byte offset just after the last valid complete line; appends continue from here."""
    corrupt_lines: int
    """Invalid complete lines before the tail (real corruption, not a torn write)."""
    torn_tail: bool
    """The segment ends in an incomplete or invalid last line (a write cut short)."""


def decode_segment(data: bytes) -> DecodedSegment:
    """Split a segment into valid records; a bad last line is a torn tail, not corruption."""
    records: list[JournalRecord] = []
    good = 0
    corrupt = 0
    torn = False
    pos = 0
    n = len(data)
    while pos < n:
        end = data.find(b"\n", pos)
        if end < 0:
            torn = True  # no newline: the final write was cut short
            break
        rec = decode_line(data[pos:end])
        if rec is None:
            if end + 1 >= n:
                torn = True
            else:
                corrupt += 1
        else:
            records.append(rec)
            good = end + 1
        pos = end + 1
    return DecodedSegment(tuple(records), good, corrupt, torn)


def latest_totals(records: Iterable[JournalRecord]) -> dict[str, JournalRecord]:
    """Per meter, the record with the highest seq."""
    out: dict[str, JournalRecord] = {}
    for r in records:
        cur = out.get(r.meter)
        if cur is None or r.seq > cur.seq:
            out[r.meter] = r
    return out


class GroupCommit:
    """Decides which totals to write and when (at most one commit per ``interval_s``)."""

    def __init__(self, interval_s: float = 1.0, committed: Mapping[str, int] | None = None) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.interval_s = interval_s
        self.committed: dict[str, int] = dict(committed or {})
        self.last_commit_at: float | None = None

    def batch(self, totals: Mapping[str, int], now: float, *, force: bool = False) -> list[tuple[str, int]]:
        """The (meter, total) pairs to commit now; empty if nothing is due."""
        if (not force and self.last_commit_at is not None
                and now - self.last_commit_at < self.interval_s - 1e-6):  # float clock jitter
            return []
        return [(m, t) for m, t in sorted(totals.items()) if self.committed.get(m) != t]

    def done(self, batch: Iterable[tuple[str, int]], now: float) -> None:
        """Record that ``batch`` is durable."""
        wrote = False
        for m, t in batch:
            self.committed[m] = t
            wrote = True
        if wrote:
            self.last_commit_at = now

    def next_deadline(self) -> float | None:
        """Earliest time a new commit may happen (None: at once)."""
        return None if self.last_commit_at is None else self.last_commit_at + self.interval_s
