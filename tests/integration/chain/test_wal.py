"""The chain index's WAL is checkpointed off the writer's commits and still restarts."""
from __future__ import annotations

import os
from pathlib import Path

from eschaton.chain.embedded.index import ChainIndex


def _wal_restart_count(wal: Path) -> int:
    """The WAL header's checkpoint sequence number (big-endian u32 at byte 12)."""
    with open(wal, "rb") as f:
        header = f.read(32)
    return int.from_bytes(header[12:16], "big")


def _write_round(idx: ChainIndex, r: int) -> None:
    """40 commits of a ~3 kB row each (about 40 WAL pages), then wait for the background pass."""
    for i in range(40):
        idx.begin()
        idx.db.execute("INSERT OR REPLACE INTO meta VALUES(?, ?)", (f"k{r}-{i}", "x" * 3000))
        idx.commit()
    assert idx.checkpointer.wait_idle(30)


def test_background_checkpoints_restart_the_wal(tmp_path: Path) -> None:
    idx = ChainIndex(tmp_path / "index.sqlite")
    cp = idx.checkpointer
    cp.interval = 0.0  # every commit may wake the thread
    cp.restart_frames = 1  # every pass leaves the writer the tail that restarts the WAL
    wal = Path(f"{tmp_path / 'index.sqlite'}-wal")
    sizes = []
    restarts = []
    try:
        for r in range(6):
            _write_round(idx, r)
            sizes.append(os.stat(wal).st_size)
            restarts.append(_wal_restart_count(wal))
        assert cp.passes >= 6
        assert cp.tails >= 5
        # Every round restarted the WAL at least once: SQLite bumps the header's checkpoint
        # sequence number each time a writer starts the log over from its first frame.
        assert all(b > a for a, b in zip(restarts, restarts[1:], strict=False)), restarts
        # Each round writes ~40 pages (~1.3x sizes[1] or less with restarts). Without restarts the
        # file would grow by that every round, reaching ~4x sizes[1] by the sixth; with them its
        # size depends only on how many frames one round piled up before a pass, which varies a
        # little with the machine's load (a few frames), so the bound is loose on purpose.
        assert sizes[-1] < 2 * sizes[1], sizes
        assert idx.db.execute("SELECT count(*) FROM meta WHERE key LIKE 'k%'").fetchone()[0] == 240
    finally:
        idx.close()
    again = ChainIndex(tmp_path / "index.sqlite")
    try:
        assert again.db.execute("SELECT count(*) FROM meta WHERE key LIKE 'k%'").fetchone()[0] == 240
    finally:
        again.close()


def test_the_writer_is_left_no_checkpoint_while_the_wal_is_short(tmp_path: Path) -> None:
    """Below ``restart_frames`` the background passes do all the copying: the writer runs no
    checkpoint (two fsyncs) of its own on the path of a block."""
    idx = ChainIndex(tmp_path / "index.sqlite")
    cp = idx.checkpointer
    cp.interval = 0.0
    cp.restart_frames = 10_000
    try:
        for r in range(4):
            _write_round(idx, r)
        idx.begin()
        idx.commit()
        assert cp.passes >= 4
        assert cp.tails == 0
    finally:
        idx.close()
