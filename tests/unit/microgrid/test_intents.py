"""The buyer node's payment intents stay small: settled ones beyond the newest are pruned."""
from __future__ import annotations

from pathlib import Path

from eschaton.core.microgrid.decisions import Pay
from eschaton.daemon.microgrid import _Intents


def test_settled_intents_are_pruned_and_started_ones_kept(tmp_path: Path) -> None:
    it = _Intents(tmp_path / "i.db")
    it.KEEP_SETTLED = 5
    try:
        for i in range(300):
            pay = Pay("m", i.to_bytes(4, "big"), b"ref", 1)
            it.add(pay, b"c" * 32, 0)
            if i < 290:  # the last ten are still in flight
                it.set_state(pay.payment_id, "confirmed" if i % 3 else "failed")
        it.prune()
        rows = it.db.execute("SELECT state, COUNT(*) FROM intents GROUP BY state").fetchall()
        counts = dict(rows)
        assert counts["started"] == 10
        assert counts.get("confirmed", 0) + counts.get("failed", 0) == 5
        assert it.get((289).to_bytes(4, "big")) is not None  # the newest settled stay
        assert len(it.confirmed()) <= 5
    finally:
        it.close()
