"""WAL checkpoints for the chain index, with the waiting done on a thread of their own.

Rules / theory of operation:
- In WAL mode a commit appends pages to ``<db>-wal`` without an fsync (``synchronous=NORMAL``);
  a checkpoint fsyncs the WAL, copies its pages into the database file and fsyncs that. SQLite's
  automatic checkpoint runs inside the ``COMMIT`` that crosses its threshold, and on this
  machine nearly all of its time is the two fsyncs (measured: 90-110 ms per 1000 empty
  blocks, of which copying the pages is 1.5 ms). That is waiting for the disk, not CPU, so it
  belongs on a thread that may wait.
- So the writer's automatic checkpoint is off. The writer calls ``committed()`` after each
  commit; at most every ``interval`` seconds that wakes the thread, which runs
  ``PRAGMA wal_checkpoint(PASSIVE)`` on its own connection: passive checkpoints never block the
  writer, and sqlite3 releases the GIL while it waits for the disk.
- A WAL file only restarts from its beginning when every frame has been copied before the
  writer's next transaction starts, which a thread racing a busy writer rarely sees (measured:
  the WAL grew to 180 MB). So once a background pass finds the WAL longer than
  ``restart_frames``, the writer, in its next ``begin()``, checkpoints the few frames committed
  since the pass began (``before_begin()``); the bulk is already on disk, and the transaction
  then restarts the WAL. The thread repeats its pass while the writer added many pages during
  the last one, so that tail is small (measured: a single pass left ~3 MB to the writer).
- Why a threshold and not a restart after every pass: the tail costs the writer two fsyncs,
  ~5 ms on this machine whatever its size, and the writer is on the path of every block
  (measured under a flood of empty blocks, a pass every 0.25 s: ~10-15 us per block, a tenth
  of the chain layer's own cost). A WAL of up to ``restart_frames`` pages (64 MiB at the
  default page size; ``journal_size_limit`` trims the file back to that after a restart) is
  a small price on an SD card; between floods of blocks the WAL stays far below it.
- Durability is unchanged: commits are exactly as durable as before (the WAL, then the
  checkpoint with both fsyncs); only who waits for the checkpoint changes.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from eschaton.store.sqlite import Connection, Error, connect

log = logging.getLogger(__name__)


class Checkpointer:
    MAX_PASSES = 6
    SMALL_TAIL = 64  # frames (pages); fsync cost here grows with the bytes (3 MB: 5 ms, 30 kB: 0.2 ms)
    RESTART_FRAMES = 16384  # restart the WAL once a pass finds it longer than this (module doc)

    def __init__(
        self, writer: Connection, path: Path, *, interval: float = 0.25, restart_frames: int = RESTART_FRAMES
    ) -> None:
        self.writer = writer
        self.interval = interval
        self.restart_frames = restart_frames
        # A second connection to the writer's database (open_db opened and migrated it).
        self._db = connect(path, synchronous="NORMAL", check_same_thread=False)
        writer.execute("PRAGMA wal_autocheckpoint=0")
        page_size = writer.execute("PRAGMA page_size").fetchone()[0]
        writer.execute(f"PRAGMA journal_size_limit={restart_frames * (page_size + 24) + 32}")
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._stopping = False
        self._last = time.monotonic()
        self._running = False  # a pass is queued or running (writer sets, thread clears)
        self._tail_due = False  # a pass finished: the writer copies the rest before its next begin
        self.passes = 0
        self.tails = 0  # checkpoints the writer ran to restart the WAL
        self._thread = threading.Thread(target=self._run, name="chain-index-checkpoint", daemon=True)
        self._thread.start()

    def committed(self) -> None:
        """Writer, after a commit: now and then, hand the WAL to the thread."""
        if self._running or self._tail_due:
            return
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._running = True
            self._idle.clear()
            self._wake.set()

    def before_begin(self) -> None:
        """Writer, before it opens a transaction: after a background pass, copy what was
        committed since, so that this transaction restarts the WAL."""
        if self._tail_due:
            self._tail_due = False
            self.tails += 1
            self.writer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            try:
                # Pass again while the writer added much during the last pass: each pass is
                # shorter, so the tail left to the writer (and its fsync) ends up small.
                before = frames = -1
                for _ in range(self.MAX_PASSES):
                    _busy, frames, _done = self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self.passes += 1
                    if frames < 0 or (before >= 0 and frames - before <= self.SMALL_TAIL):
                        break
                    before = frames
                self._tail_due = frames >= self.restart_frames
            except Error:  # supervision boundary: a failed checkpoint loses nothing
                log.exception("chain index checkpoint failed")
            self._running = False
            self._idle.set()

    def wait_idle(self, timeout: float) -> bool:
        """Block until no background pass is queued or running (for tests and shutdown)."""
        return self._idle.wait(timeout)

    def close(self) -> None:
        """Stop the thread and close its connection (closing the writer checkpoints the rest)."""
        self._stopping = True
        self._wake.set()
        self._thread.join()
        self._db.close()
