"""Write ``channels-v5-a.sql`` and ``channels-v5-b.sql``: both sides of one channel as firmware
at channel store schema 5 keeps them (versions without fee shares), mid-stream: a few direction
switches done and one payment opening a new epoch still in flight (signed and persisted by the
acceptor, never delivered). ``tests/integration/store/test_migrations.py`` migrates both and
continues the channel. Run it with that firmware first on the path:
    PYTHONPATH=<old>/firmware:<old> .venv/bin/python tests/vectors/store/dump_channels_v5.py OUT_DIR
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from tests.vectors.store.dump_old import dump


def main(out: Path) -> None:
    from eschaton.channel.store import SCHEMA_VERSION, ChannelStore
    from eschaton.core.channel.actions import PersistThenSend
    from tests.unit.channel.pair import Pair, params

    assert SCHEMA_VERSION == 5, SCHEMA_VERSION
    pr = Pair(p=params(acceptor_contribution=100_000, lifetime=2_000), acceptor_funds=True)
    pr.confirm_funding()
    for who, amount in (("a", 5_000), ("b", 300), ("a", 70), ("a", 1), ("b", 2)):
        pr.pay(who, amount)
    pr.turn("a")
    pr.pay("a", 9)
    pr.turn("b")
    pr.online = False
    pr.do("b", "pay", 4)  # a new epoch, persisted by b, lost on the way
    pr.online = True
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as t:
        for name in ("a", "b"):
            side = pr.side(name)
            st = ChannelStore(Path(t) / f"{name}.db", keep_every_version=True)
            st.persist(PersistThenSend(side.ch.channel_id, side.ch.snapshot, tuple(side.versions), (), True))
            st.close()
            dump(Path(t) / f"{name}.db", out / f"channels-v5-{name}.sql")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
