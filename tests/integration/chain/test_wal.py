"""The chain index's WAL is checkpointed off the writer's commits and still restarts."""
from __future__ import annotations

import os
from pathlib import Path

from eschaton.chain.embedded.index import ChainIndex


def test_background_checkpoints_restart_the_wal(tmp_path: Path) -> None:
    idx = ChainIndex(tmp_path / "index.sqlite")
    cp = idx.checkpointer
    cp.interval = 0.0  # every commit may wake the thread
    wal = Path(f"{tmp_path / 'index.sqlite'}-wal")
    sizes = []
    try:
        for r in range(6):
            for i in range(40):
                idx.begin()
                idx.db.execute("INSERT OR REPLACE INTO meta VALUES(?, ?)", (f"k{r}-{i}", "x" * 3000))
                idx.commit()
            assert cp.wait_idle(30)
            sizes.append(os.stat(wal).st_size)
        assert cp.passes >= 6
        # Each round writes ~40 pages; without restarts the file would grow by that every round.
        assert sizes[-1] == sizes[1], sizes
        assert idx.db.execute("SELECT count(*) FROM meta WHERE key LIKE 'k%'").fetchone()[0] == 240
    finally:
        idx.close()
    again = ChainIndex(tmp_path / "index.sqlite")
    try:
        assert again.db.execute("SELECT count(*) FROM meta WHERE key LIKE 'k%'").fetchone()[0] == 240
    finally:
        again.close()
