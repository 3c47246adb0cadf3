"""Write SQL dumps of every database as a given firmware creates them, with some data in each:
the old layouts that ``tests/integration/store/test_migrations.py`` migrates from.

Run it with the OLDER firmware first on the path, e.g. from a checkout of that firmware:
    PYTHONPATH=<old>/firmware:<old> .venv/bin/python tests/vectors/store/dump_old.py OUT_DIR
Each dump is ``sqlite3``'s ``iterdump()`` (which leaves out ``user_version``) followed by the
file's ``PRAGMA user_version``. The dumps here were made from the firmware whose channel store
was at schema 4, with the peer map in ``channel_peers.db`` and the chain index versioned in its
``meta`` table.
"""
from __future__ import annotations

import sqlite3
import sys
import tempfile
import time
from pathlib import Path


def dump(path: Path, out: Path) -> None:
    db = sqlite3.connect(path)
    version = db.execute("PRAGMA user_version").fetchone()[0]
    lines = list(db.iterdump()) + [f"PRAGMA user_version = {version};"]
    db.close()
    out.write_text("\n".join(lines) + "\n")


def main(out: Path) -> None:
    from eschaton.chain.embedded.node import ChainNode
    from eschaton.channel.driver import ChannelEndpoint
    from eschaton.channel.payments import PaymentRecord, PaymentState
    from eschaton.channel.store import ChannelStore
    from eschaton.core.microgrid.decisions import Pay
    from eschaton.core.microgrid.ledger import Entry, EntryKind
    from eschaton.daemon.channels import _PeerMap
    from eschaton.daemon.microgrid import _Intents
    from eschaton.microgrid.ledger import SqliteLedger
    from tests.unit.channel.pair import opened

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as t:
        d = Path(t)
        pr = opened()
        st = ChannelStore(d / "channels.db", keep_every_version=True)
        ep = ChannelEndpoint(st, lambda cid: pr.a.priv, lambda m: pr.queue.append(("a", m)))
        cid = pr.a.ch.channel_id
        ep.channels[cid] = pr.a.ch
        now = time.time()
        ep.call(cid, "pay", 1_234, pr.height, payment=PaymentRecord("old-pay", cid, 1_234, PaymentState.PENDING,
                                                                    0, now, now))
        st.close()
        dump(d / "channels.db", out / "channels-v4.sql")

        peers = _PeerMap(d / "channel_peers.db")
        peers.set(cid, "aa" * 32)
        peers.set(b"\x02" * 32, "bb" * 32)
        peers.close()
        dump(d / "channel_peers.db", out / "channel_peers-v1.sql")

        with SqliteLedger(d / "ledger.db") as led:
            for i in range(5):
                led.append([Entry(EntryKind.PAYMENT_RECEIVED, 1000 + i,
                                  {"meter_id": "m", "amount_sat": i, "payment_id": bytes([i])})])
        dump(d / "ledger.db", out / "microgrid-ledger-v1.sql")

        it = _Intents(d / "microgrid-intents.db")
        it.add(Pay("m", b"\x01" * 4, b"ref-1", 500), b"c" * 32, 10_000)
        it.add(Pay("m", b"\x02" * 4, b"ref-2", 700), b"c" * 32, 9_500)
        it.set_state(b"\x01" * 4, "confirmed")
        it.close()
        dump(d / "microgrid-intents.db", out / "microgrid-intents-v0.sql")

        node = ChainNode(d)
        node.mine(3)
        node.close()
        dump(d / "chain" / "index.sqlite", out / "chain-index-meta1.sql")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
