"""The totals journal: record format, torn writes, recovery, rotation, group commit, locking."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from eschaton.core.metering.journal_codec import (
    GroupCommit,
    JournalFormatError,
    JournalRecord,
    decode_line,
    decode_segment,
    encode_record,
)
from eschaton.metering.journal import JournalError, TotalsJournal, read_committed
from hw.mock import FakeClock


def test_record_roundtrip_and_crc() -> None:
    rec = JournalRecord(seq=7, wall_ns=1_700_000_000_000_000_000, meter="water", total=123456)
    line = encode_record(rec)
    assert line.endswith(b"\n")
    assert decode_line(line[:-1]) == rec
    flipped = line.replace(b"123456", b"123457")
    assert decode_line(flipped[:-1]) is None  # CRC catches a changed digit
    with pytest.raises(JournalFormatError):
        encode_record(JournalRecord(0, 0, "bad name", 1))
    with pytest.raises(JournalFormatError):
        encode_record(JournalRecord(0, 0, "water", -1))


def test_torn_tail_and_corruption_are_told_apart() -> None:
    a = encode_record(JournalRecord(0, 1, "a", 10))
    b = encode_record(JournalRecord(1, 1, "b", 20))
    c = encode_record(JournalRecord(2, 1, "a", 30))
    dec = decode_segment(a + b"garbage\n" + b + c[:-5])
    assert [r.total for r in dec.records] == [10, 20]
    assert dec.corrupt_lines == 1
    assert dec.torn_tail
    assert dec.good_length == len(a) + len(b"garbage\n") + len(b)


def test_group_commit_policy() -> None:
    g = GroupCommit(1.0)
    assert g.batch({"a": 1}, 0.0) == [("a", 1)]
    g.done([("a", 1)], 0.0)
    assert g.batch({"a": 2}, 0.5) == []  # not yet
    assert g.batch({"a": 1}, 5.0) == []  # nothing changed: no write at all
    assert g.batch({"a": 2, "b": 0}, 5.0) == [("a", 2), ("b", 0)]
    assert g.batch({"a": 2}, 0.5, force=True) == [("a", 2)]


def test_recovery_resumes_from_the_last_committed_totals(tmp_path: Path) -> None:
    clock = FakeClock()
    with TotalsJournal(tmp_path, clock=clock) as j:
        assert j.maybe_commit({"water": 100, "grid": 5}) == 2
        clock.advance(0.3)
        assert j.maybe_commit({"water": 150, "grid": 5}) == 0  # within the interval
        clock.advance(0.7)
        assert j.maybe_commit({"water": 150, "grid": 5}) == 1  # only the changed meter
    with TotalsJournal(tmp_path, clock=clock) as j:
        assert j.totals() == {"water": 150, "grid": 5}
        assert j.last_record("water").seq == 2  # type: ignore[union-attr]
    assert {m: r.total for m, r in read_committed(tmp_path).items()} == {"water": 150, "grid": 5}


def test_a_torn_write_is_truncated_and_appending_continues(tmp_path: Path) -> None:
    clock = FakeClock()
    with TotalsJournal(tmp_path, clock=clock) as j:
        j.maybe_commit({"water": 100})
        seg = j._segment
    assert seg is not None
    # A power cut in the middle of the next commit leaves half a line.
    half = encode_record(JournalRecord(1, 5, "water", 200))[:20]
    with open(seg, "ab") as f:
        f.write(half)
    with TotalsJournal(tmp_path, clock=clock) as j:
        assert j.totals() == {"water": 100}  # never more than was committed
        assert j.stats().torn_tail_bytes == len(half)
        clock.advance(2)
        j.maybe_commit({"water": 300})
    assert read_committed(tmp_path)["water"].total == 300
    assert decode_segment(seg.read_bytes()).corrupt_lines == 0


def test_rotation_keeps_totals_and_bounds_the_files(tmp_path: Path) -> None:
    clock = FakeClock()
    with TotalsJournal(tmp_path, clock=clock, segment_bytes=2000) as j:
        for i in range(1, 400):
            clock.advance(1.0)
            j.maybe_commit({"water": i * 10, "grid": i // 7})
        st = j.stats()
    segs = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("totals-"))
    assert len(segs) == 1
    assert st.rotations > 10
    assert (tmp_path / segs[0]).stat().st_size < 2000 + 200
    with TotalsJournal(tmp_path, clock=clock) as j:
        assert j.totals() == {"water": 3990, "grid": 399 // 7}


def test_crash_during_rotation_leaves_recoverable_segments(tmp_path: Path) -> None:
    """Old and new segments both present (crash before the old one was deleted)."""
    clock = FakeClock()
    with TotalsJournal(tmp_path, clock=clock) as j:
        j.maybe_commit({"water": 10, "grid": 1})
        old = j._segment
    assert old is not None
    copy = old.read_bytes()
    with TotalsJournal(tmp_path, clock=clock, segment_bytes=1) as j:
        clock.advance(1)
        j.maybe_commit({"water": 20, "grid": 1})  # rotates: snapshot in a new segment
    old.write_bytes(copy)  # resurrect the old segment as if the unlink never happened
    with TotalsJournal(tmp_path, clock=clock) as j:
        assert j.totals() == {"water": 20, "grid": 1}


def test_writes_per_hour_are_bounded_and_reported(tmp_path: Path) -> None:
    clock = FakeClock()
    with TotalsJournal(tmp_path, clock=clock, interval_s=1.0, fsync=False) as j:
        total = 0
        for _ in range(36_000):  # one simulated hour, polled every 0.1 s, 225 Hz of pulses
            clock.advance(0.1)
            total += 22
            j.maybe_commit({"water": total})
        st = j.stats()
    assert st.elapsed_s == pytest.approx(3600.0)
    assert st.commits <= 3600
    assert st.commits_per_hour == pytest.approx(3600.0, rel=0.01)


def test_idle_meters_cost_no_writes(tmp_path: Path) -> None:
    clock = FakeClock()
    with TotalsJournal(tmp_path, clock=clock) as j:
        j.maybe_commit({"water": 1})
        for _ in range(1000):
            clock.advance(1.0)
            j.maybe_commit({"water": 1})
        assert j.stats().commits == 1


def test_one_writer_per_directory(tmp_path: Path) -> None:
    with TotalsJournal(tmp_path):
        with pytest.raises(JournalError, match="in use by another process"):
            TotalsJournal(tmp_path)
    TotalsJournal(tmp_path).close()  # released on close


def test_unusable_directory_is_a_typed_error(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(JournalError):
        TotalsJournal(f / "sub")
    assert os.path.exists(f)


def test_a_failed_commit_leaves_the_segment_clean(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Disk full mid-batch: the fragment is cut off, the error is typed, the next commit works."""
    import eschaton.metering.journal as jmod

    clock = FakeClock()
    with TotalsJournal(tmp_path, clock=clock) as j:
        j.maybe_commit({"water": 100})
        real_write = os.write
        calls = {"n": 0}

        def short_then_enospc(fd: int, data: bytes | memoryview) -> int:
            calls["n"] += 1
            if calls["n"] == 1:
                return real_write(fd, bytes(data)[:7])  # a partial line reaches the disk
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(jmod.os, "write", short_then_enospc)
        clock.advance(1)
        with pytest.raises(JournalError, match="No space left on device"):
            j.maybe_commit({"water": 200})
        monkeypatch.setattr(jmod.os, "write", real_write)
        assert j.maybe_commit({"water": 300}) == 1
        seg = j._segment
    assert seg is not None
    dec = decode_segment(seg.read_bytes())
    assert (dec.corrupt_lines, dec.torn_tail) == (0, False)
    assert [r.total for r in dec.records] == [100, 300]
