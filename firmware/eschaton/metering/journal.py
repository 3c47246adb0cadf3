"""Durable meter totals: an append-only, crash-safe journal with group commit.

Rules / theory of operation (the record format and policy are in
``eschaton.core.metering.journal_codec``):
- Files are segments ``totals-<first seq>.log`` in one directory. A commit appends the changed
  totals as one ``write()`` and ``fsync()``s the file: at most one commit per interval, and none
  while nothing changes, so an SD card sees a bounded number of writes per hour (``stats()``).
- Opening recovers: every segment is decoded, each meter resumes from its highest-seq record, and
  a torn tail (a write cut by a power cut) is truncated away before anything is appended.
- When the active segment passes ``segment_bytes`` a new segment is started with a snapshot of
  every total, fsynced together with the directory, and only then are older segments deleted. A
  crash at any point leaves a set of segments from which the same totals are recovered.
- One writer per directory: the writer holds an exclusive ``flock`` on ``LOCK``. Readers that must
  not disturb a running writer (the CLI) use ``read_committed``, which never truncates.
- ``fsync`` can be disabled only for benchmarks that measure everything but the disk.
"""
from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from eschaton.core.metering.journal_codec import (
    GroupCommit,
    JournalRecord,
    decode_segment,
    encode_record,
    latest_totals,
)
from eschaton.errors import LocalError
from eschaton.store.private import make_dirs

_PREFIX = "totals-"
_SUFFIX = ".log"


class JournalError(LocalError):
    """The journal directory is unusable (permissions, not a directory)."""


@dataclass(frozen=True, slots=True)
class JournalStats:
    """What the journal has cost the storage since it was opened."""

    commits: int
    """Write+fsync operations (each one batch)."""
    records: int
    """Records written."""
    bytes_written: int
    """Bytes appended (including rotation snapshots)."""
    rotations: int
    """Segments started."""
    elapsed_s: float
    """Seconds since the journal was opened."""
    corrupt_lines: int
    """Invalid lines found in the middle of segments at open (real corruption)."""
    torn_tail_bytes: int
    """Bytes of a torn final write truncated at open."""

    @property
    def commits_per_hour(self) -> float:
        return self.commits * 3600.0 / self.elapsed_s if self.elapsed_s > 0 else 0.0


def _segments(directory: Path) -> list[Path]:
    def first_seq(p: Path) -> int:
        try:
            return int(p.name[len(_PREFIX):-len(_SUFFIX)])
        except ValueError:
            return -1
    segs = [p for p in directory.iterdir() if p.name.startswith(_PREFIX) and p.name.endswith(_SUFFIX)]
    return sorted((p for p in segs if first_seq(p) >= 0), key=first_seq)


def read_committed(directory: str | os.PathLike[str]) -> dict[str, JournalRecord]:
    """Last committed record per meter, read without locking or repairing anything."""
    d = Path(directory)
    if not d.is_dir():
        return {}
    for _ in range(5):
        records: list[JournalRecord] = []
        try:
            for seg in _segments(d):
                records.extend(decode_segment(seg.read_bytes()).records)
        except FileNotFoundError:
            continue  # rotated away while we listed; list again and find the snapshot
        return latest_totals(records)
    raise JournalError(f"journal {d} keeps rotating under the reader")


class TotalsJournal:
    """Cumulative meter totals on disk. Thread-safe: one lock around commits."""

    def __init__(self, directory: str | os.PathLike[str], *, interval_s: float = 1.0,
                 segment_bytes: int = 1 << 20, fsync: bool = True,
                 clock: Callable[[], float] = time.monotonic,
                 wall_ns: Callable[[], int] = time.time_ns) -> None:
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self._fsync = fsync
        self._clock = clock
        self._wall_ns = wall_ns
        self._lock = threading.Lock()
        try:
            make_dirs(self.directory)
        except OSError as e:
            raise JournalError(f"journal directory {self.directory}: {e.strerror}") from None
        self._lockfd = os.open(self.directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lockfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lockfd)
            raise JournalError(f"journal {self.directory} is in use by another process "
                               "(is the node running?)") from None
        self._opened_at = clock()
        self._commits = self._records = self._bytes = self._rotations = 0
        self._corrupt = 0
        self._torn = 0
        self._latest: dict[str, JournalRecord] = {}
        self._next_seq = 0
        self._recover()
        self.policy = GroupCommit(interval_s, {m: r.total for m, r in self._latest.items()})
        self._fd: int | None = None
        self._segment: Path | None = None
        self._segment_size = 0
        self._open_active()

    # -- recovery ------------------------------------------------------------------------
    def _segments(self) -> list[Path]:
        return _segments(self.directory)

    def _recover(self) -> None:
        records: list[JournalRecord] = []
        segs = self._segments()
        for i, seg in enumerate(segs):
            data = seg.read_bytes()
            dec = decode_segment(data)
            records.extend(dec.records)
            self._corrupt += dec.corrupt_lines
            if dec.torn_tail and i == len(segs) - 1:
                # Only the newest segment can hold a write cut short; drop it so the next
                # append starts on a line boundary.
                self._torn = len(data) - dec.good_length
                with open(seg, "r+b") as f:
                    f.truncate(dec.good_length)
                    f.flush()
                    os.fsync(f.fileno())
            elif dec.torn_tail:
                self._corrupt += 1
        self._latest = latest_totals(records)
        self._next_seq = max((r.seq for r in records), default=-1) + 1

    def _open_active(self) -> None:
        segs = self._segments()
        if segs:
            self._segment = segs[-1]
            self._fd = os.open(self._segment, os.O_WRONLY | os.O_APPEND)
            self._segment_size = os.fstat(self._fd).st_size
        else:
            self._start_segment(snapshot=False)

    def _fsync_dir(self) -> None:
        if not self._fsync:
            return
        dfd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def _start_segment(self, *, snapshot: bool) -> None:
        old = self._segments()
        path = self.directory / f"{_PREFIX}{self._next_seq:012d}{_SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        size = 0
        if snapshot and self._latest:
            wall = self._wall_ns()
            recs = []
            for meter in sorted(self._latest):
                recs.append(JournalRecord(self._next_seq, wall, meter, self._latest[meter].total))
                self._next_seq += 1
            data = b"".join(encode_record(r) for r in recs)
            os.write(fd, data)
            size = len(data)
            self._bytes += size
            for r in recs:
                self._latest[r.meter] = r
        if self._fsync:
            os.fsync(fd)
        self._fsync_dir()
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._segment, self._segment_size = fd, path, size
        self._rotations += 1
        if snapshot:
            for p in old:
                p.unlink()
            self._fsync_dir()

    # -- API -----------------------------------------------------------------------------
    def totals(self) -> dict[str, int]:
        """Last committed total of every meter (the resume point after a restart)."""
        with self._lock:
            return {m: r.total for m, r in self._latest.items()}

    def total(self, meter: str) -> int:
        """Last committed total of one meter (0 if never committed)."""
        with self._lock:
            r = self._latest.get(meter)
            return 0 if r is None else r.total

    def last_record(self, meter: str) -> JournalRecord | None:
        with self._lock:
            return self._latest.get(meter)

    def maybe_commit(self, totals: Mapping[str, int], now: float | None = None, *,
                     force: bool = False) -> int:
        """Commit the changed totals if the interval allows (or ``force``); returns records written."""
        with self._lock:
            if self._fd is None:
                raise JournalError("journal is closed")
            now = self._clock() if now is None else now
            batch = self.policy.batch(totals, now, force=force)
            if not batch:
                return 0
            wall = self._wall_ns()
            recs = []
            for meter, total in batch:
                recs.append(JournalRecord(self._next_seq, wall, meter, total))
                self._next_seq += 1
            data = b"".join(encode_record(r) for r in recs)
            self._append(data)
            self._commits += 1
            self._records += len(recs)
            self._bytes += len(data)
            self._segment_size += len(data)
            for r in recs:
                self._latest[r.meter] = r
            self.policy.done(batch, now)
            if self._segment_size >= self.segment_bytes:
                self._start_segment(snapshot=True)
            return len(recs)

    def _append(self, data: bytes) -> None:
        """Append one batch durably, or leave the segment exactly as it was and raise."""
        assert self._fd is not None
        try:
            view = memoryview(data)
            while view:  # one write() in practice (a SIGKILL cannot split it); loop for ENOSPC
                n = os.write(self._fd, view)
                view = view[n:]
            if self._fsync:
                os.fsync(self._fd)
        except OSError as e:
            # Cut a partial batch off again: the next append must start on a line boundary,
            # or its first record would be glued to a fragment and lost at recovery.
            try:
                os.ftruncate(self._fd, self._segment_size)
            except OSError:
                pass  # recovery at the next open truncates the torn tail instead
            raise JournalError(f"journal {self.directory}: commit failed: {e.strerror}") from None

    def stats(self) -> JournalStats:
        with self._lock:
            return JournalStats(self._commits, self._records, self._bytes, self._rotations,
                                self._clock() - self._opened_at, self._corrupt, self._torn)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
                os.close(self._lockfd)  # releases the flock

    def __enter__(self) -> TotalsJournal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
