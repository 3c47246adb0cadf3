"""The node's channel -> peer map lives in the channel store: staged before anything is sent,
durable with the channel's next commit, and back after a reopen. (Its migration from the old
``channel_peers.db`` is in ``tests/integration/store/test_migrations.py``.)"""
from __future__ import annotations

import sqlite3
from pathlib import Path

from eschaton.channel.store import ChannelStore
from eschaton.daemon.channels import _PeerMap


def test_peer_map_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "channels.db"
    store = ChannelStore(path)
    m = _PeerMap(store)
    m.set(b"\x01" * 32, "aa" * 32)
    assert m.map == {b"\x01" * 32: "aa" * 32}
    store.close()  # commits what is staged
    assert sqlite3.connect(path).execute("SELECT channel_id, peer FROM channel_peers").fetchall() == [
        (b"\x01" * 32, "aa" * 32)]
    again = ChannelStore(path)
    assert _PeerMap(again).map == {b"\x01" * 32: "aa" * 32}
    again.close()
    assert not (tmp_path / "channel_peers.db").exists()  # no second file any more
