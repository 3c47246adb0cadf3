"""The DHT ledger: a payment is claimed for one query only (a replay for another query is
refused, the same claim again is the same), an asker's retry finds its row, totals are exact
and survive a reopen, and the file is private."""
from __future__ import annotations

import stat
from pathlib import Path

from eschaton.daemon.dht_store import DhtLedger

CID = b"\xcc" * 32


def test_claim_once_and_exact_totals(tmp_path: Path) -> None:
    path = tmp_path / "dht.sqlite"
    led = DhtLedger(path)
    q1, q2 = b"1" * 16, b"2" * 16
    args = (b"k" * 32, 3, 1, 40, b"c" * 32)
    assert led.claim(CID, 7, q1, "sell", "aa", *args, 3)
    assert led.claim(CID, 7, q1, "sell", "aa", *args, 3)  # the same payment, same query: a retry
    assert not led.claim(CID, 7, q2, "sell", "aa", *args, 3)  # replayed for another query
    assert not led.claim(CID, 8, q1, "sell", "aa", *args, 3)  # a second payment for a paid query
    assert led.claimed(CID, 7) == q1 and led.claimed(CID, 8) is None
    led.answered(q1, "sell", b"answer")

    assert led.claim(CID, 9, q2, "forward", "bb", *args[:1], 5, 1, 40, b"c" * 32, 5)
    led.forward_paid(q2, 3)
    led.ask(b"3" * 16, "cc", b"k" * 32, 4, 1, 40, b"c" * 32)
    before = led.totals()
    assert before["spent_sat"] == 0  # nothing paid yet: the row says paying
    led.ask_paid(b"3" * 16, CID, 10, 4)
    led.close()

    led = DhtLedger(path)
    t = led.totals()
    assert (t["sold"], t["earned_sat"]) == (1, 3)
    assert (t["forwarded"], t["forward_margin_sat"]) == (1, 2)
    assert (t["asked"], t["spent_sat"], t["claims"]) == (1, 4, 2)
    row = led.row(b"3" * 16, "ask")
    assert row is not None and (row.state, row.channel_id, row.number) == ("paid", CID, 10)
    sold = led.row(q1, "sell")
    assert sold is not None and sold.answer == b"answer" and sold.state == "answered"
    led.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
